"""Every backbone: levels compose, batched = one by one, deterministic in eval, differentiable from waveform to
scores (directional finite differences in float64 on tiny models), device-correct; checkpoints load strictly."""

from __future__ import annotations

import pytest
import torch

from sec4sr_core.base.errors import NotTrainedError, Sec4srError
from sec4sr_core.sdk.modelstore import checkpoint_path, save_checkpoint

from sec4sr_plugins_models.audionet import AudioNet
from sec4sr_plugins_models.ecapa import ECAPA
from sec4sr_plugins_models.ge2e import GE2E
from sec4sr_plugins_models.ivector import IVector
from sec4sr_plugins_models.xvector import XVector

from .test_kaldi_ivector import randomize


def _tiny(name: str):
    """A small, randomly initialised backbone in eval mode (BN running stats made non-trivial)."""
    torch.manual_seed(0)
    if name == "ivector":
        m = randomize(IVector(components=3, ivector_dim=5, lda_dim=3, num_ceps=6))
    elif name == "xvector":
        m = XVector(channels=8, pool_channels=12, embed_dim=10, lda_dim=4)
        m.set_classes(["a", "b", "c"])
        b = m.backend
        b.lda = torch.randn(b.dim, b.in_dim + 1)
        b.psi = torch.rand(b.dim) + 0.5
    elif name == "audionet":
        m = AudioNet()
        m.set_classes(["a", "b", "c"])
    elif name == "ecapa":
        m = ECAPA(channels=16, lin_neurons=6, attention_channels=4, se_channels=4)
        m.set_classes(["a", "b", "c"])
    else:
        m = GE2E(partial_frames=20)
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) and mod.running_mean is not None:
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


NAMES = ["ivector", "xvector", "audionet", "ecapa", "ge2e"]


def _scores(m, x):
    out = m.embed(x)
    if m.output == "logits":
        return out
    return m.score(out, out[:2].detach() + 0.1)


@pytest.mark.parametrize("name", NAMES)
def test_levels_compose_and_batches_match_single_utterances(name):
    m = _tiny(name)
    x = torch.randn(3, 1, 8000) * 0.1
    with torch.no_grad():
        direct = m.embed(x)
        level = m.levels[1]
        stepwise = m.embed(m.to_level(x, "wave", level), level)
        torch.testing.assert_close(stepwise, direct)
        single = torch.cat([m.embed(x[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(single, direct, rtol=1e-4, atol=1e-4)
        assert torch.equal(m.embed(x), direct)  # deterministic in eval
    assert m.levels[0] == "wave" and m.levels[-1] == "final"
    feats = m.to_level(x, "wave", "final")
    assert feats.dim() == 3 and feats.shape[0] == 3


@pytest.mark.parametrize("name", NAMES)
def test_waveform_to_scores_gradient_matches_finite_differences(name):
    m = _tiny(name).double()
    if name == "ivector":
        m.prepare()
    g = torch.Generator().manual_seed(1)
    t = 5200 if name == "xvector" else 3200  # the x-vector needs 31 frames
    x = (torch.randn(2, 1, t, generator=g, dtype=torch.float64) * 0.1).requires_grad_(True)
    enrolled = None
    if m.output == "embedding":
        with torch.no_grad():
            enrolled = m.embed(torch.randn(2, 1, t, generator=g, dtype=torch.float64) * 0.1)

    def f(w):
        out = m.embed(w)
        return out if enrolled is None else m.score(out, enrolled)

    wts = torch.randn(f(x).shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((f(x) * wts).sum(), x)
    assert grad.abs().sum() > 0
    h = 1e-6
    for _ in range(2):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            num = ((f(x + h * v) * wts).sum() - (f(x - h * v) * wts).sum()) / (2 * h)
        ana = (grad * v).sum()
        assert torch.isclose(num, ana, rtol=2e-4, atol=1e-6), (name, float(num), float(ana))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_runs_on_cuda_like_on_cpu(name):
    m = _tiny(name)
    x = torch.randn(2, 1, 8000) * 0.1
    with torch.no_grad():
        cpu = _scores(m, x)
        m = m.cuda()
        if name == "ivector":
            m.prepare()
        gpu = _scores(m, x.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)


def test_xvector_refuses_too_short_input():
    with pytest.raises(Sec4srError, match="at least 31 frames"):
        _tiny("xvector").embed(torch.zeros(1, 1, 2000))


@pytest.mark.parametrize("cls", [AudioNet, XVector, IVector])
def test_untrained_model_names_the_train_command(cls, tmp_path):
    with pytest.raises(NotTrainedError, match=f"sec4sr train --model {cls.name}"):
        cls().load_weights(tmp_path)


def test_checkpoint_with_any_class_count_loads_and_bad_shapes_are_named(tmp_path):
    m = AudioNet()
    m.set_classes([f"s{i}" for i in range(5)])
    save_checkpoint(m, tmp_path, extra={"complete": True})
    fresh = AudioNet()
    fresh.load_weights(tmp_path)
    assert fresh.class_ids == m.class_ids and fresh.fc.out_features == 5
    payload = torch.load(checkpoint_path(m, tmp_path), weights_only=True)
    payload["state_dict"]["conv2.0.weight"] = torch.zeros(3, 3, 3)
    del payload["state_dict"]["conv3.0.bias"]
    torch.save(payload, checkpoint_path(m, tmp_path))
    with pytest.raises(Sec4srError, match=r"missing keys: conv3\.0\.bias.*shape mismatch: conv2\.0\.weight"):
        AudioNet().load_weights(tmp_path)
    checkpoint_path(m, tmp_path).write_bytes(b"not a checkpoint")
    with pytest.raises(Sec4srError, match="cannot read checkpoint"):
        AudioNet().load_weights(tmp_path)


def test_interrupted_training_checkpoint_says_how_to_resume(tmp_path):
    m = AudioNet()
    m.set_classes(["a", "b"])
    save_checkpoint(m, tmp_path, extra={"complete": False, "epoch": 2, "epochs": 5})
    with pytest.raises(NotTrainedError, match="stopped after epoch 2 of 5.*again to resume"):
        AudioNet().load_weights(tmp_path)


def test_xvector_loads_predecessor_state_dict_and_plda_files(tmp_path):
    from sec4sr_plugins_models import kaldi_io

    src = _tiny("xvector")
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("backend.")}
    state["unused.weight"] = torch.zeros(1)  # the predecessor filtered keys it did not know
    torch.save(state, tmp_path / "xvecTDNN_origin.ckpt")
    b = src.backend
    kaldi_io.write_plda(tmp_path / "plda.txt", kaldi_io.PldaFile(b.plda_mean.double(), b.plda_transform.double(),
                                                                b.psi.double()))
    kaldi_io.write_vector(tmp_path / "mean.vec", b.mean.double())
    kaldi_io.write_matrix(tmp_path / "transform.txt", b.lda.double())
    m = XVector(checkpoint=tmp_path / "xvecTDNN_origin.ckpt", plda_dir=tmp_path, channels=8, pool_channels=12,
                embed_dim=10, lda_dim=4)
    m.load_weights(tmp_path)
    m.eval()
    x = torch.randn(2, 1, 8000) * 0.1
    torch.testing.assert_close(m.embed(x), src.embed(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(Sec4srError, match="needs plda_dir"):
        XVector(checkpoint=tmp_path / "xvecTDNN_origin.ckpt").load_weights(tmp_path)


def test_ecapa_loads_speechbrain_named_state_dict(tmp_path):
    src = _tiny("ecapa")
    state = {k: v for k, v in src.state_dict().items() if k != "classifier"}
    assert "blocks.1.res2net_block.blocks.0.conv.conv.weight" in state and "asp_bn.norm.running_mean" in state
    torch.save(state, tmp_path / "embedding_model.ckpt")
    m = ECAPA(checkpoint=tmp_path / "embedding_model.ckpt", channels=16, lin_neurons=6, attention_channels=4,
              se_channels=4)
    m.load_weights(tmp_path)
    x = torch.randn(2, 1, 8000) * 0.1
    torch.testing.assert_close(m.eval().embed(x), src.embed(x))
    wrong = ECAPA(checkpoint=tmp_path / "embedding_model.ckpt", channels=24, lin_neurons=6, attention_channels=4,
                  se_channels=4)
    with pytest.raises(Sec4srError, match="shape mismatch: asp"):
        wrong.load_weights(tmp_path)


def test_audionet_loads_predecessor_checkpoint_with_label_encoder(tmp_path):
    src = _tiny("audionet")
    torch.save(src.state_dict(), tmp_path / "audionet.pt")
    (tmp_path / "labels.txt").write_text("'103' 1\n'19' 0\n'7' 2\n")
    m = AudioNet(checkpoint=tmp_path / "audionet.pt", label_encoder=tmp_path / "labels.txt")
    m.load_weights(tmp_path)
    assert m.class_ids == ["19", "103", "7"]
    (tmp_path / "labels.txt").write_text("'103' 1\n'19' 0\n")
    with pytest.raises(Sec4srError, match="label encoder has 2 speakers but the checkpoint has 3"):
        AudioNet(checkpoint=tmp_path / "audionet.pt", label_encoder=tmp_path / "labels.txt").load_weights(tmp_path)


def test_aam_softmax_loss_penalises_the_target_with_a_margin():
    m = _tiny("ecapa")
    logits = torch.tensor([[20.0, 5.0, -3.0]])
    y = torch.tensor([0])
    plain = torch.nn.functional.cross_entropy(logits, y)
    assert m.train_loss(logits, y) > plain
    zero = ECAPA(channels=16, lin_neurons=6, attention_channels=4, se_channels=4, margin=0.0)
    torch.testing.assert_close(zero.train_loss(logits, y), plain)
