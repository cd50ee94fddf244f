"""WeSpeaker (config.yaml + avg_model.pt) and 3D-Speaker CAM++ (.bin) checkpoints in their published formats.

The fixtures are tiny checkpoints written to tmp dirs with the published key names (narrow widths through
model_args). References independent of the code under test: the upstream key names, shapes and parameter counts
(read from wenet-e2e/wespeaker and modelscope/3D-Speaker and pinned below), torchaudio.compliance.kaldi.fbank for
the front-ends, torch.autograd.gradcheck and finite differences for the gradients.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchaudio
import yaml
from sec4sr_plugins_models.wespeaker import nets
from sec4sr_plugins_models.wespeaker.backbone import CAMPPlus3D, WeSpeaker, build_net
from sec4sr_plugins_models.wespeaker.frontend import Fbank
from torchaudio.compliance import kaldi

from sec4sr_core.base.errors import ParameterError, Sec4srError
from sec4sr_core.cli import main
from sec4sr_core.compose.factories import load_model
from sec4sr_core.testing import check_model, waves

TINY = {
    "resnet": ("ResNet34", {"feat_dim": 16, "embed_dim": 8, "pooling_func": "TSTP", "two_emb_layer": True,
                            "m_channels": 4}),
    "ecapa": ("ECAPA_TDNN_GLOB_c512", {"feat_dim": 16, "embed_dim": 6, "pooling_func": "ASTP", "channels": 16,
                                       "out_channels": 24}),
    "campplus": ("CAMPPlus", {"feat_dim": 16, "embed_dim": 8, "pooling_func": "TSTP", "growth_rate": 4,
                              "bn_size": 2, "init_channels": 8, "block_layers": [2, 3, 2]}),
    "simam": ("SimAM_ResNet34_ASP", {"in_planes": 2, "embed_dim": 6, "acoustic_dim": 16}),
}


def randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and non-trivial BatchNorm statistics (a fresh BN is the identity)."""
    g = torch.Generator().manual_seed(seed)
    for mod in net.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            if mod.running_mean is not None:
                mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=g) * 0.4 - 0.2)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
            if mod.weight is not None:
                mod.weight.data.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.data.copy_(torch.rand(mod.bias.shape, generator=g) * 0.4 - 0.2)
    return net.eval()


def write_wespeaker(folder: Path, model: str, args: dict, *, state: dict | None = None, mels: int = 16,
                    extra: dict | None = None) -> Path:
    """A WeSpeaker model folder: config.yaml as the recipes write it, avg_model.pt with the training head."""
    folder.mkdir(parents=True, exist_ok=True)
    net = randomize(build_net(model, args))
    if state is None:
        state = dict(net.state_dict())
        emb = args["embed_dim"]
        state["projection.weight"] = torch.randn(5, emb)  # ArcMargin head over 5 training speakers
    config = {
        "exp_dir": "exp/tiny", "gpus": "[0]", "num_avg": 2, "seed": 42, "model": model, "model_init": None,
        "model_args": args,
        "projection_args": {"project_type": "arc_margin", "scale": 32.0, "easy_margin": False},
        "dataset_args": {"resample_rate": 16000, "speed_perturb": True, "num_frms": 200, "aug_prob": 0.6,
                         "fbank_args": {"num_mel_bins": mels, "frame_shift": 10, "frame_length": 25, "dither": 1.0},
                         "spec_aug": False, **(extra or {})},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    torch.save(state, folder / "avg_model.pt")
    return folder


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wespeaker")
    return {k: write_wespeaker(root / k, m, a) for k, (m, a) in TINY.items()}


def reference_wespeaker(folder: Path, wave: torch.Tensor) -> torch.Tensor:
    """Embeddings as WeSpeaker's extractor computes them: torchaudio's Kaldi fbank of the int16-scaled waveform
    (Hamming window, dither 0), mean subtraction, the network with the checkpoint's weights."""
    config = yaml.safe_load((folder / "config.yaml").read_text())
    net = build_net(config["model"], config["model_args"]).eval()
    state = {k: v for k, v in torch.load(folder / "avg_model.pt").items() if not k.startswith("projection.")}
    net.load_state_dict(state, strict=True)
    fb = config["dataset_args"]["fbank_args"]
    feats = []
    for w in wave:
        f = kaldi.fbank(w * (1 << 15), num_mel_bins=fb["num_mel_bins"], frame_length=fb["frame_length"],
                        frame_shift=fb["frame_shift"], dither=0.0, sample_frequency=16000, window_type="hamming",
                        use_energy=False)
        feats.append(f - f.mean(dim=0))
    with torch.no_grad():
        return net(torch.stack(feats))


# ---------------------------------------------------------------------------------------------------------------
# architectures: the upstream names, shapes and sizes
# ---------------------------------------------------------------------------------------------------------------

#: (model, model_args) -> (state-dict entries, parameters) of the upstream class, counted from its code
PUBLISHED = {
    ("ResNet34", (("feat_dim", 80), ("embed_dim", 256))): (218, 6_634_336),
    ("ECAPA_TDNN_GLOB_c512", (("feat_dim", 80), ("embed_dim", 192))): (221, 6_190_720),
    ("ECAPA_TDNN_c512", (("feat_dim", 80), ("embed_dim", 192))): (221, 5_797_504),
    ("ECAPA_TDNN_c1024", (("feat_dim", 80), ("embed_dim", 192))): (221, 14_263_872),
    ("CAMPPlus", (("feat_dim", 80), ("embed_dim", 512))): (937, 7_176_224),
}

#: a sample of upstream keys and shapes (wespeaker/models/*.py, speakerlab/models/campplus/*.py)
UPSTREAM_KEYS = {
    "ResNet34": {"conv1.weight": (32, 1, 3, 3), "bn1.num_batches_tracked": (), "layer1.0.conv1.weight": (32, 32, 3, 3),
                 "layer2.0.shortcut.0.weight": (64, 32, 1, 1), "layer2.0.shortcut.1.running_var": (64,),
                 "layer4.2.bn2.bias": (256,), "seg_1.weight": (256, 5120), "seg_1.bias": (256,)},
    "ECAPA_TDNN_GLOB_c512": {"layer1.conv.weight": (512, 80, 5), "layer1.bn.running_mean": (512,),
                             "layer2.se_res2block.0.conv.weight": (512, 512, 1),
                             "layer2.se_res2block.1.convs.6.weight": (64, 64, 3),
                             "layer3.se_res2block.1.bns.0.weight": (64,),
                             "layer4.se_res2block.3.linear1.weight": (128, 512), "conv.weight": (1536, 1536, 1),
                             "pool.linear1.weight": (128, 4608, 1), "pool.linear2.weight": (1536, 128, 1),
                             "bn.running_var": (3072,), "linear.weight": (192, 3072)},
    "CAMPPlus": {"head.conv1.weight": (32, 1, 3, 3), "head.layer1.0.shortcut.0.weight": (32, 32, 1, 1),
                 "head.conv2.weight": (32, 32, 3, 3), "xvector.tdnn.linear.weight": (128, 320, 5),
                 "xvector.tdnn.nonlinear.batchnorm.weight": (128,),
                 "xvector.block1.tdnnd1.nonlinear1.batchnorm.running_mean": (128,),
                 "xvector.block1.tdnnd12.cam_layer.linear_local.weight": (32, 128, 3),
                 "xvector.block2.tdnnd24.cam_layer.linear2.bias": (32,),
                 "xvector.transit1.linear.weight": (256, 512, 1), "xvector.block3.tdnnd16.linear1.weight": (128, 992, 1),
                 "xvector.out_nonlinear.batchnorm.weight": (512,), "xvector.dense.linear.weight": (512, 1024, 1),
                 "xvector.dense.nonlinear.batchnorm.running_mean": (512,)},
}


@pytest.mark.parametrize("model,args", list(PUBLISHED), ids=[m for m, _ in PUBLISHED])
def test_published_sizes_have_the_upstream_keys_and_parameter_counts(model, args):
    net = build_net(model, dict(args))
    state = net.state_dict()
    entries, params = PUBLISHED[(model, args)]
    assert (len(state), nets.param_count(net)) == (entries, params)
    for key, shape in UPSTREAM_KEYS.get(model, {}).items():
        assert tuple(state[key].shape) == shape, key
    assert "xvector.dense.nonlinear.batchnorm.weight" not in state  # the embedding BN has no affine parameters
    assert not any(k.startswith(("projection.", "pool.")) and "linear" not in k for k in state)


def test_3dspeaker_campplus_shares_the_key_names():
    w = nets.CAMPPlus(feat_dim=80, embed_dim=192).state_dict()
    d = nets.CAMPPlus(feat_dim=80, embed_dim=192, stats="3dspeaker").state_dict()
    assert list(w) == list(d) and all(w[k].shape == d[k].shape for k in w)
    assert nets.param_count(nets.CAMPPlus(feat_dim=80, embed_dim=192)) == 6_848_544


def test_unsupported_models_and_arguments_are_parameter_errors():
    with pytest.raises(ParameterError, match=r"'ERes2Net34' is not supported; supported: ResNet18.*CAMPPlus"):
        build_net("ERes2Net34", {})
    with pytest.raises(ParameterError, match=r"unknown 'widht'.*accepted: feat_dim"):
        build_net("ResNet34", {"feat_dim": 80, "embed_dim": 8, "widht": 3})
    with pytest.raises(ParameterError, match="multiple of 8"):
        build_net("ResNet34", {"feat_dim": 20, "embed_dim": 8})
    with pytest.raises(ParameterError, match="pooling_func 'XYZ'"):
        build_net("CAMPPlus", {"feat_dim": 80, "pooling_func": "XYZ"})


# ---------------------------------------------------------------------------------------------------------------
# front-ends against torchaudio.compliance.kaldi
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window,scale", [("hamming", 32768.0), ("povey", 1.0)])
def test_the_fbank_is_torchaudios_kaldi_fbank_for_each_utterance(window, scale):
    x = waves(3, 0.3, seed=2)
    ours = Fbank(num_mel_bins=40, window=window, scale=scale)(x)
    for i in range(3):
        ref = kaldi.fbank(x[i] * scale, num_mel_bins=40, frame_length=25, frame_shift=10, dither=0.0,
                          window_type=window, sample_frequency=16000)
        assert ours[i].shape == ref.shape
        torch.testing.assert_close(ours[i], ref, rtol=1e-4, atol=2e-3)


# ---------------------------------------------------------------------------------------------------------------
# loading through the registry
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TINY))
def test_a_wespeaker_folder_loads_by_spec_and_embeds_as_wespeaker_does(fixtures, kind):
    folder = fixtures[kind]
    model = load_model(f"wespeaker:path={folder}")
    assert isinstance(model, WeSpeaker) and model.model_type == TINY[kind][0] and not model.training
    x = waves(2, 0.5, seed=1)
    with torch.no_grad():
        emb = model.embed(x)
        assert model.to_level(x, "wave", "raw").shape == (2, 48, 16)
    assert emb.shape == (2, TINY[kind][1]["embed_dim"])
    torch.testing.assert_close(emb, reference_wespeaker(folder, x), rtol=1e-3, atol=1e-4)
    # the checkpoint file itself is accepted too, with the same weights
    same = load_model(f"wespeaker:path={folder / 'avg_model.pt'}")
    with torch.no_grad():
        torch.testing.assert_close(same.embed(x), emb)


@pytest.mark.parametrize("kind", list(TINY))
def test_each_wespeaker_fixture_passes_the_contract_kit(fixtures, kind):
    check_model(WeSpeaker, {"path": str(fixtures[kind])}, load_weights=True)


def test_the_3dspeaker_campplus_passes_the_contract_kit(tmp_path):
    path = write_campplus3d(tmp_path / "c.bin", n_mels=16)
    check_model(CAMPPlus3D, {"path": str(path), "n_mels": 16}, load_weights=True)


def test_without_a_path_the_random_flagship_refuses_to_load_weights(tmp_path):
    m = WeSpeaker()
    assert m.model_type == "ResNet34" and nets.param_count(m.net) == 6_634_336
    with pytest.raises(Sec4srError, match="path=DIR"):
        m.load_weights(tmp_path)
    with pytest.raises(Sec4srError, match="path=FILE"):
        CAMPPlus3D().load_weights(tmp_path)


def test_strict_loading_names_missing_unexpected_and_misshaped_keys(fixtures, tmp_path):
    model, args = TINY["resnet"]
    good = dict(torch.load(fixtures["resnet"] / "avg_model.pt"))
    renamed = {("front." + k if k.startswith("layer1.") else k): v for k, v in good.items()}
    bad = write_wespeaker(tmp_path / "renamed", model, args, state=renamed)
    with pytest.raises(ParameterError) as info:
        load_model(f"wespeaker:path={bad}")
    msg = str(info.value)
    assert "does not fit WeSpeaker ResNet34" in msg and "missing keys: layer1.0.conv1.weight" in msg
    assert "unexpected keys: front.layer1.0.conv1.weight" in msg and "in all)" in msg and "\n" not in msg
    extra = write_wespeaker(tmp_path / "extra", model, args, state={**good, "seg_3.weight": torch.zeros(2)})
    with pytest.raises(ParameterError, match=r"unexpected keys: seg_3.weight$"):
        load_model(f"wespeaker:path={extra}")
    shaped = write_wespeaker(tmp_path / "shape", model, args, state={**good, "seg_1.bias": torch.zeros(9)})
    with pytest.raises(ParameterError, match=r"shape mismatch: seg_1.bias \(9,\) \(expected \(8,\)\)"):
        load_model(f"wespeaker:path={shaped}")
    # a checkpoint saved under a DataParallel wrapper, or as {"state_dict": ...}, loads
    wrapped = write_wespeaker(tmp_path / "wrapped", model, args,
                              state={"state_dict": {"module." + k: v for k, v in good.items()}})
    a, b = load_model(f"wespeaker:path={wrapped}"), load_model(f"wespeaker:path={fixtures['resnet']}")
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_config_errors_are_one_line_parameter_errors(tmp_path):
    with pytest.raises(ParameterError, match="config.yaml"):
        load_model(f"wespeaker:path={tmp_path / 'nothing'}")
    folder = write_wespeaker(tmp_path / "mels", *TINY["resnet"], mels=24)
    with pytest.raises(ParameterError, match="feat_dim 16 != fbank_args num_mel_bins 24"):
        load_model(f"wespeaker:path={folder}")
    folder = write_wespeaker(tmp_path / "s3prl", *TINY["resnet"], extra={"frontend": "s3prl"})
    with pytest.raises(ParameterError, match="front-end 's3prl'"):
        load_model(f"wespeaker:path={folder}")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.yaml").write_text((folder / "config.yaml").read_text()
                                                        .replace("frontend: s3prl", "cmvn: true"))
    with pytest.raises(ParameterError, match="avg_model.pt does not exist"):
        load_model(f"wespeaker:path={tmp_path / 'noweights'}")


def test_cmvn_settings_follow_the_config(tmp_path):
    folder = write_wespeaker(tmp_path / "var", *TINY["resnet"], extra={"cmvn_args": {"norm_var": True}})
    m = load_model(f"wespeaker:path={folder}")
    raw = m.to_level(waves(1, 0.5), "wave", "raw")
    final = m.to_level(raw, "raw", "final")
    torch.testing.assert_close(final, (raw - raw.mean(1, keepdim=True)) / torch.sqrt(raw.var(1, keepdim=True) + 1e-8))
    off = load_model(f"wespeaker:path={write_wespeaker(tmp_path / 'off', *TINY['resnet'], extra={'cmvn': False})}")
    assert torch.equal(off.to_level(raw, "raw", "final"), raw)


def test_a_resample_rate_runs_the_fbank_at_that_rate(tmp_path):
    folder = write_wespeaker(tmp_path / "8k", *TINY["resnet"], extra={"resample_rate": 8000})
    m = load_model(f"wespeaker:path={folder}")
    x = waves(1, 0.5, seed=6)
    raw = m.to_level(x, "wave", "raw")
    ref = kaldi.fbank(torchaudio.functional.resample(x[0], 16000, 8000) * (1 << 15), num_mel_bins=16,
                      sample_frequency=8000, window_type="hamming", dither=0.0)
    assert raw.shape == (1, 1 + (4000 - 200) // 80, 16)
    torch.testing.assert_close(raw[0], ref, rtol=1e-4, atol=2e-3)


# ---------------------------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TINY))
def test_the_networks_pass_gradcheck_in_float64(fixtures, kind):
    model = load_model(f"wespeaker:path={fixtures[kind]}").double()
    feats = torch.randn(1, 17, 16, dtype=torch.float64, requires_grad=True)
    # fast mode: the Jacobian checked along random directions (the full one costs 272 forwards per model)
    assert torch.autograd.gradcheck(lambda f: model.head(model.normalize(f)), (feats,), eps=1e-6, atol=1e-5,
                                    fast_mode=True)


@pytest.mark.parametrize("kind", ["resnet", "campplus"])
def test_wave_to_score_gradient_agrees_with_finite_differences(fixtures, kind):
    model = load_model(f"wespeaker:path={fixtures[kind]}").double()
    x = waves(1, 0.3, seed=3).double().requires_grad_(True)
    enrolled = model.embed(waves(2, 0.3, seed=4).double()).detach()
    f = lambda w: model.score(model.embed(w), enrolled)[0, 0]
    (grad,) = torch.autograd.grad(f(x), x)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        v = v / v.norm()
        h = 1e-6
        with torch.no_grad():
            fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
        assert math.isclose(float((grad * v).sum()), float(fd), rel_tol=1e-3, abs_tol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# 3D-Speaker CAM++
# ---------------------------------------------------------------------------------------------------------------


def write_campplus3d(path: Path, embed_dim: int = 8, n_mels: int = 80) -> Path:
    """A tiny 3D-Speaker CAM++ ``.bin`` (a bare state dict), narrow and shallow."""
    net = randomize(nets.CAMPPlus(feat_dim=n_mels, embed_dim=embed_dim, growth_rate=4, bn_size=2, init_channels=8,
                                  stats="3dspeaker", block_layers=(2, 3, 2)))
    torch.save(net.state_dict(), path)
    return path


def test_a_3dspeaker_bin_loads_with_its_sizes_read_from_the_file_and_embeds_as_3dspeaker(tmp_path):
    path = write_campplus3d(tmp_path / "campplus_voxceleb.bin", embed_dim=7)
    model = load_model(f"campplus3d:path={path}")
    assert model.net.xvector.dense.linear.out_channels == 7 and len(model.net.xvector.block2) == 3
    x = waves(2, 0.4, seed=5)
    with torch.no_grad():
        emb = model.embed(x)
    ref_net = nets.CAMPPlus(feat_dim=80, embed_dim=7, growth_rate=4, bn_size=2, init_channels=8, stats="3dspeaker",
                            block_layers=(2, 3, 2)).eval()
    ref_net.load_state_dict(torch.load(path), strict=True)
    feats = []
    for w in x:  # speakerlab.process.processor.FBank(80, 16000, mean_nor=True): unscaled, povey, dither 0
        f = kaldi.fbank(w, num_mel_bins=80, sample_frequency=16000, dither=0.0)
        feats.append(f - f.mean(0, keepdim=True))
    with torch.no_grad():
        torch.testing.assert_close(emb, ref_net(torch.stack(feats)), rtol=1e-3, atol=1e-4)


def test_a_wrong_state_dict_is_refused_naming_keys_and_the_expected_model(tmp_path, fixtures):
    wes = tmp_path / "resnet.bin"
    torch.save(torch.load(fixtures["resnet"] / "avg_model.pt"), wes)
    with pytest.raises(ParameterError, match=r"is not a 3D-Speaker CAM\+\+ .*missing keys: xvector.tdnn.linear.weight"
                                             r".*its first keys: conv1.weight"):
        load_model(f"campplus3d:path={wes}")
    path = write_campplus3d(tmp_path / "c.bin")
    state = torch.load(path)
    state["xvector.block1.tdnnd1.cam_layer.extra.weight"] = torch.zeros(1)
    del state["xvector.transit2.linear.weight"]
    torch.save(state, tmp_path / "bad.bin")
    with pytest.raises(ParameterError, match=r"missing keys: xvector.transit2.linear.weight; unexpected keys: "
                                             r"xvector.block1.tdnnd1.cam_layer.extra.weight"):
        load_model(f"campplus3d:path={tmp_path / 'bad.bin'}")
    with pytest.raises(ParameterError, match="set n_mels"):
        load_model(f"campplus3d:path={path},n_mels=40")
    # a WeSpeaker CAM++ checkpoint (same names, plus its training head) loads as well
    wes_cam = write_wespeaker(tmp_path / "wcam", "CAMPPlus", {"feat_dim": 80, "embed_dim": 8, "growth_rate": 4,
                                                             "bn_size": 2, "init_channels": 8,
                                                             "block_layers": [1, 2, 1]}, mels=80)
    assert len(load_model(f"campplus3d:path={wes_cam / 'avg_model.pt'}").net.xvector.block2) == 2


# ---------------------------------------------------------------------------------------------------------------
# end to end through the CLI
# ---------------------------------------------------------------------------------------------------------------


def test_sec4sr_evaluate_runs_offline_on_a_wespeaker_folder(fixtures, capsys):
    assert main(["evaluate", "--model", f"wespeaker:path={fixtures['resnet']}", "--limit", "8", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"csi-e", "sv", "osi"} <= set(doc["tasks"])
    assert all(t["trials"] == 8 for t in doc["tasks"].values())


def test_the_cli_reports_a_mismatching_checkpoint_in_one_line(fixtures, tmp_path):
    good = dict(torch.load(fixtures["resnet"] / "avg_model.pt"))
    del good["seg_2.weight"]
    bad = write_wespeaker(tmp_path / "bad", *TINY["resnet"], state=good)
    proc = subprocess.run([sys.executable, "-m", "sec4sr_core.cli", "evaluate", "--model", f"wespeaker:path={bad}",
                           "--limit", "2"], check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("notice:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "does not fit WeSpeaker ResNet34" in lines[0]
    assert "missing keys: seg_2.weight" in lines[0]
