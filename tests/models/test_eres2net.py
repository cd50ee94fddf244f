"""3D-Speaker ERes2Net in its published format (``eres2net3d:path=FILE.bin``): a state dict whose key names and
shapes are generated here from 3D-Speaker's ERes2Net module tree loads strictly (sizes read from it), the front-end
equals torchaudio's Kaldi fbank + CMN, the published size, gradients, the contract kit, the registry and the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.cli import main
from sec4sr_core.compose.factories import load_model
from sec4sr_core.testing import check_model

from sec4sr_plugins_models.eres2net import ERes2Net3D

from .test_speechbrain import random_state


def _bn2d(prefix: str, n: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
            f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()}


def _aff(prefix: str, ch: int) -> dict[str, tuple]:
    inter = ch // 4  # AFF(channels, r=4): Sequential(Conv2d, BN, SiLU, Conv2d, BN)
    return {f"{prefix}.local_att.0.weight": (inter, 2 * ch, 1, 1), f"{prefix}.local_att.0.bias": (inter,),
            **_bn2d(f"{prefix}.local_att.1", inter),
            f"{prefix}.local_att.3.weight": (ch, inter, 1, 1), f"{prefix}.local_att.3.bias": (ch,),
            **_bn2d(f"{prefix}.local_att.4", ch)}


def eres2net_keys(m: int = 32, num_blocks=(3, 4, 6, 3), feat_dim: int = 80, emb: int = 192) -> dict[str, tuple]:
    """Key -> shape of ``speakerlab.models.eres2net.ERes2Net.ERes2Net(m_channels=m, ...)`` with TSTP pooling,
    written from 3D-Speaker's module tree (baseWidth 32, scale 2, expansion 2)."""
    keys = {"conv1.weight": (m, 1, 3, 3), **_bn2d("bn1", m)}
    in_planes = m
    for layer, (planes, stride, aff) in enumerate([(m, 1, False), (2 * m, 2, False), (4 * m, 2, True),
                                                   (8 * m, 2, True)], start=1):
        for b in range(num_blocks[layer - 1]):
            p = f"layer{layer}.{b}"
            s = stride if b == 0 else 1
            width = math.floor(planes * 32 / 64)
            keys[f"{p}.conv1.weight"] = (width * 2, in_planes, 1, 1)
            keys.update(_bn2d(f"{p}.bn1", width * 2))
            for i in range(2):
                keys[f"{p}.convs.{i}.weight"] = (width, width, 3, 3)
                keys.update(_bn2d(f"{p}.bns.{i}", width))
            if aff:
                keys.update(_aff(f"{p}.fuse_models.0", width))
            keys[f"{p}.conv3.weight"] = (planes * 2, width * 2, 1, 1)
            keys.update(_bn2d(f"{p}.bn3", planes * 2))
            if s != 1 or in_planes != 2 * planes:
                keys[f"{p}.shortcut.0.weight"] = (planes * 2, in_planes, 1, 1)
                keys.update(_bn2d(f"{p}.shortcut.1", planes * 2))
            in_planes = planes * 2
    keys["layer1_downsample.weight"] = (4 * m, 2 * m, 3, 3)
    keys["layer2_downsample.weight"] = (8 * m, 4 * m, 3, 3)
    keys["layer3_downsample.weight"] = (16 * m, 8 * m, 3, 3)
    keys.update(_aff("fuse_mode12", 4 * m))
    keys.update(_aff("fuse_mode123", 8 * m))
    keys.update(_aff("fuse_mode1234", 16 * m))
    stats = int(feat_dim / 8) * m * 8
    keys["seg_1.weight"] = (emb, stats * 2 * 2)
    keys["seg_1.bias"] = (emb,)
    return keys


TINY = dict(m=8, num_blocks=(2, 1, 2, 1), feat_dim=80, emb=16)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("eres2net") / "pretrained_eres2net.bin"
    torch.save(random_state(eres2net_keys(**TINY), seed=3), path)
    return path


def test_sizes_are_read_from_the_checkpoint_and_keys_match(checkpoint):
    m = ERes2Net3D(path=checkpoint)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == eres2net_keys(**TINY)
    m.load_weights(checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    assert torch.equal(m.state_dict()["layer3.1.fuse_models.0.local_att.3.weight"],
                       state["layer3.1.fuse_models.0.local_att.3.weight"])
    x = torch.randn(3, 1, 8000) * 0.1
    emb = m.eval().embed(x)
    assert emb.shape == (3, 16) and torch.isfinite(emb).all()


def test_published_default_size_is_upstreams_6_61m():
    """upstream ``ERes2Net(feat_dim=80, embedding_size=192)`` prints 6.61 M parameters."""
    with torch.device("meta"):
        m = ERes2Net3D()
    n = sum(p.numel() for p in m.parameters())
    keys = eres2net_keys()
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == keys
    assert n == 6_610_688 and round(n / 1e6, 2) == 6.61
    with torch.device("meta"):
        base = ERes2Net3D(embedding_size=512)  # ERes2Net_base (3D-Speaker / 200k speakers)
    assert sum(p.numel() for p in base.parameters()) == 9_887_808


def test_front_end_is_torchaudio_kaldi_fbank_with_cmn(checkpoint):
    m = ERes2Net3D(path=checkpoint)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 6400, generator=g) * 0.2
    raw = m.to_level(x, "wave", "raw")
    for i in range(2):  # 3D-Speaker's FBank(80, 16000, mean_nor=True): kaldi.fbank on the [-1, 1] wave, dither 0
        ref = kaldi.fbank(x[i], num_mel_bins=80, sample_frequency=16000, dither=0.0)
        torch.testing.assert_close(raw[i], ref, atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(m.to_level(raw, "raw", "final")[i], ref - ref.mean(0, keepdim=True),
                                   atol=2e-4, rtol=1e-4)


def test_block_activation_is_hardtanh_0_20(checkpoint):
    """3D-Speaker's ReLU clips at 20: a huge input saturates inside the blocks instead of growing without bound."""
    from sec4sr_plugins_models.eres2net import hardtanh20

    x = torch.tensor([-3.0, 0.5, 19.0, 25.0])
    assert hardtanh20(x).tolist() == [0.0, 0.5, 19.0, 20.0]


def test_gradient_and_contract_kit(checkpoint):
    m = ERes2Net3D(path=checkpoint)
    m.load_weights(checkpoint)
    m.eval()
    x = (torch.randn(2, 1, 4000) * 0.1).requires_grad_(True)
    enrolled = m.embed(torch.randn(2, 1, 4000) * 0.1).detach()
    (grad,) = torch.autograd.grad(m.score(m.embed(x), enrolled).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    check_model(ERes2Net3D, {"path": str(checkpoint)}, load_weights=True)


@pytest.mark.parametrize("change,words", [
    ("drop", ["missing keys", "layer4.0.bn3.running_var"]),
    ("rename", ["unexpected keys", "seg_1.linear.bias", "missing keys", "seg_1.bias"]),
    ("shape", ["shape mismatch", "layer1_downsample.weight"]),
])
def test_mismatching_keys_are_named(tmp_path, change, words):
    state = random_state(eres2net_keys(**TINY))
    if change == "drop":
        del state["layer4.0.bn3.running_var"]
    elif change == "rename":
        state["seg_1.linear.bias"] = state.pop("seg_1.bias")
    else:
        state["layer1_downsample.weight"] = torch.zeros(3, 16, 3, 3)
    path = tmp_path / "bad.bin"
    torch.save(state, path)
    with pytest.raises(ParameterError) as exc:
        ERes2Net3D(path=path).load_weights(path)
    for w in words:
        assert w in str(exc.value)


def test_not_a_state_dict_and_no_weights(tmp_path):
    path = tmp_path / "x.bin"
    torch.save({"conv1.weight": torch.zeros(8, 1, 3, 3)}, path)
    with pytest.raises(ParameterError, match="not an ERes2Net state dict"):
        ERes2Net3D(path=path)
    torch.save([1, 2, 3], path)
    with pytest.raises(ParameterError, match="not a state dict"):
        ERes2Net3D(path=path)
    with pytest.raises(ParameterError, match="give path=FILE"):
        ERes2Net3D().load_weights(tmp_path)


def test_registry_and_cli(checkpoint, capsys):
    m = load_model(f"eres2net3d:path={checkpoint}")
    assert isinstance(m, ERes2Net3D) and not m.training
    state = torch.load(checkpoint, weights_only=True)
    assert torch.equal(m.seg_1.weight, state["seg_1.weight"])
    rc = main(["evaluate", "--model", f"eres2net3d:path={checkpoint.with_suffix('.missing')}", "--task", "sv"])
    assert rc == 2 and "is not a file" in capsys.readouterr().err
    assert np.isfinite(m.embed(torch.randn(1, 1, 3200) * 0.1).detach().numpy()).all()
