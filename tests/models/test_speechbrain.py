"""SpeechBrain ECAPA in its published format (``speechbrain:path=DIR``): the Fbank and sentence normalisation against
an independent numpy implementation of SpeechBrain's formulas, hyperparams.yaml with HyperPyYAML tags, strict
loading of a checkpoint whose key names and shapes are generated here from SpeechBrain's ECAPA_TDNN layout,
the contract kit, gradients, the published size, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.cli import main
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.testing import check_model

from sec4sr_plugins_models.ecapa import SpeechBrainECAPA
from sec4sr_plugins_models.speechbrain_fbank import SpeechBrainFbank, read_hyperparams, sentence_norm

YAML = """\
# tiny model in the layout of speechbrain/spkrec-ecapa-voxceleb
n_mels: {n_mels}
pretrained_path: speechbrain/spkrec-ecapa-voxceleb
out_n_neurons: 7

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [{c}, {c}, {c}, {c}, {c3}]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: {att}
    se_channels: {se}
    lin_neurons: {lin}

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: {lin}
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    embedding_model: !ref <embedding_model>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
"""

SIZES = dict(n_mels=24, c=16, c3=48, att=8, se=8, lin=12)


def _bn(prefix: str, n: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
            f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()}


def _tdnn(prefix: str, cin: int, cout: int, k: int) -> dict[str, tuple]:
    # speechbrain TDNNBlock: conv = sb Conv1d (wraps nn.Conv1d as .conv), norm = sb BatchNorm1d (wraps .norm)
    return {f"{prefix}.conv.conv.weight": (cout, cin, k), f"{prefix}.conv.conv.bias": (cout,),
            **_bn(f"{prefix}.norm.norm", cout)}


def speechbrain_ecapa_keys(n_mels: int, c: int, c3: int, att: int, se: int, lin: int, scale: int = 8) -> dict:
    """Key -> shape of ``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN(input_size=n_mels, channels=[c]*4 + [c3])``,
    written from SpeechBrain's module tree (independent of sec4sr's code)."""
    keys = _tdnn("blocks.0", n_mels, c, 5)
    ks = [5, 3, 3, 3, 1]
    for i in range(1, 4):
        p = f"blocks.{i}"
        keys.update(_tdnn(f"{p}.tdnn1", c, c, 1))
        for j in range(scale - 1):
            keys.update(_tdnn(f"{p}.res2net_block.blocks.{j}", c // scale, c // scale, ks[i]))
        keys.update(_tdnn(f"{p}.tdnn2", c, c, 1))
        keys.update({f"{p}.se_block.conv1.conv.weight": (se, c, 1), f"{p}.se_block.conv1.conv.bias": (se,),
                     f"{p}.se_block.conv2.conv.weight": (c, se, 1), f"{p}.se_block.conv2.conv.bias": (c,)})
    keys.update(_tdnn("mfa", 3 * c, c3, 1))
    keys.update(_tdnn("asp.tdnn", 3 * c3, att, 1))
    keys.update({"asp.conv.conv.weight": (c3, att, 1), "asp.conv.conv.bias": (c3,)})
    keys.update(_bn("asp_bn.norm", 2 * c3))
    keys.update({"fc.conv.weight": (lin, 2 * c3, 1), "fc.conv.bias": (lin,)})
    return keys


def random_state(keys: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(100)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            state[k] = torch.randn(shape, generator=g) * 0.1
        elif k.endswith("norm.weight"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            state[k] = torch.randn(shape, generator=g) / np.sqrt(fan_in)
    return state


def make_folder(tmp, sizes=SIZES, seed=0, emb_norm=True):
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "hyperparams.yaml").write_text(YAML.format(**sizes))
    keys = speechbrain_ecapa_keys(**sizes)
    torch.save(random_state(keys, seed), tmp / "embedding_model.ckpt")
    if emb_norm:
        torch.save({"count": 5, "glob_mean": torch.full((sizes["lin"],), 0.25), "glob_std": torch.ones(sizes["lin"])},
                   tmp / "mean_var_norm_emb.ckpt")
    return tmp


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("sb") / "spkrec-tiny")


# ---------------------------------------------------------------------------------------------------------------
# the front-end against an independent numpy implementation of SpeechBrain's formulas
# ---------------------------------------------------------------------------------------------------------------


def numpy_sb_fbank(x: np.ndarray, n_mels: int, n_fft=400, hop=160, win=400, sr=16000, f_min=0.0, f_max=8000.0,
                   amin=1e-10, top_db=80.0) -> np.ndarray:
    """speechbrain Fbank (STFT centre/zero pad, periodic Hamming, |X|², SB triangular filters, dB, top_db) in numpy."""
    pad = n_fft // 2
    xp = np.pad(x, (pad, pad))
    n_frames = 1 + (len(xp) - n_fft) // hop
    n = np.arange(win)
    window = 0.54 - 0.46 * np.cos(2 * np.pi * n / win)  # periodic Hamming (torch.hamming_window default)
    lpad = (n_fft - win) // 2
    w = np.zeros(n_fft)
    w[lpad:lpad + win] = window
    frames = np.stack([xp[i * hop: i * hop + n_fft] * w for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (frames, n_fft//2+1)
    to_mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = 700 * (10 ** (np.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2) / 2595) - 1)
    centre, band = hz[1:-1], (hz[1:] - hz[:-1])[:-1]
    freqs = np.linspace(0, sr // 2, n_fft // 2 + 1)
    slope = (freqs[None, :] - centre[:, None]) / band[:, None]
    fb = np.maximum(0.0, np.minimum(slope + 1, 1 - slope))  # (mels, freqs)
    mel = power @ fb.T
    db = 10 * np.log10(np.maximum(mel, amin)) - 10 * np.log10(max(amin, 1.0))
    return np.maximum(db, db.max() - top_db)


@pytest.mark.parametrize("n_mels", [24, 80])
def test_fbank_matches_numpy_reference(n_mels):
    rng = np.random.default_rng(n_mels)
    t = np.arange(9000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(9000)
    x[4000:5000] = 0.0  # a silent stretch: the top_db floor acts there
    ours = SpeechBrainFbank(n_mels=n_mels)(torch.tensor(x, dtype=torch.float32).view(1, 1, -1))[0].double().numpy()
    ref = numpy_sb_fbank(x, n_mels)
    assert ours.shape == ref.shape == (9000 // 160 + 1, n_mels)
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=0)
    assert (ref == ref.max() - 80.0).any(), "the reference signal should exercise the top_db floor"


@settings(max_examples=15, deadline=None)
@given(gain=st.floats(1e-3, 1.0), seed=st.integers(0, 1000))
def test_fbank_is_per_utterance_and_db_scaled(gain, seed):
    """A gain shifts every unclipped bin by 20·log10(gain) dB, and an utterance's features ignore its batch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 3200, generator=g, dtype=torch.float64) * 0.1
    fb = SpeechBrainFbank(n_mels=20).double()
    a, b = fb(x), fb(x * gain)
    unclipped = (a > a.amax(dim=(1, 2), keepdim=True) - 80 + 1) & (b > b.amax(dim=(1, 2), keepdim=True) - 80 + 1)
    torch.testing.assert_close((b - a)[unclipped], torch.full_like(a[unclipped], 20 * np.log10(gain)),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(fb(x[1:]), a[1:])


def test_sentence_norm_matches_input_normalization_formula():
    x = torch.randn(3, 11, 5, dtype=torch.float64)
    ref = x.numpy() - x.numpy().mean(axis=1, keepdims=True)
    np.testing.assert_allclose(sentence_norm(x).numpy(), ref)
    std = x.numpy().std(axis=1, keepdims=True)  # population std, as InputNormalization's masked variance
    np.testing.assert_allclose(sentence_norm(x, std_norm=True).numpy(), ref / std)


# ---------------------------------------------------------------------------------------------------------------
# hyperparams.yaml and strict loading
# ---------------------------------------------------------------------------------------------------------------


def test_hyperparams_tags_and_refs_resolve(folder):
    hp = read_hyperparams(folder / "hyperparams.yaml")
    assert hp["compute_features"]["__tag__"] == "!new:speechbrain.lobes.features.Fbank"
    assert hp["compute_features"]["n_mels"] == 24 and hp["embedding_model"]["input_size"] == 24
    assert hp["pretrainer"]["paths"]["embedding_model"] == "speechbrain/spkrec-ecapa-voxceleb/embedding_model.ckpt"


def test_loads_published_key_names_strictly_and_forwards(folder):
    m = SpeechBrainECAPA(path=folder)
    expected = speechbrain_ecapa_keys(**SIZES)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected
    m.load_weights(folder)
    m.eval()
    state = torch.load(folder / "embedding_model.ckpt", weights_only=True)
    assert torch.equal(m.state_dict()["blocks.2.res2net_block.blocks.6.conv.conv.weight"],
                       state["blocks.2.res2net_block.blocks.6.conv.conv.weight"])
    x = torch.randn(3, 1, 8000) * 0.1
    assert m.levels == ("wave", "raw", "final")
    raw = m.to_level(x, "wave", "raw")
    assert raw.shape == (3, 8000 // 160 + 1, 24)
    torch.testing.assert_close(raw, SpeechBrainFbank(n_mels=24)(x))
    torch.testing.assert_close(m.to_level(raw, "raw", "final"), raw - raw.mean(dim=1, keepdim=True))
    emb = m.embed(x)
    assert emb.shape == (3, 12) and torch.isfinite(emb).all()


def test_embedding_norm_subtracts_the_global_mean(folder):
    plain = SpeechBrainECAPA(path=folder)
    plain.load_weights(folder)
    normed = SpeechBrainECAPA(path=folder, embedding_norm=True)
    normed.load_weights(folder)
    x = torch.randn(2, 1, 4000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(normed.eval().embed(x), plain.eval().embed(x) - 0.25)


def test_gradient_reaches_the_waveform(folder):
    m = SpeechBrainECAPA(path=folder)
    m.load_weights(folder)
    m.eval()
    x = (torch.randn(2, 1, 4000) * 0.1).requires_grad_(True)
    enrolled = m.embed(torch.randn(2, 1, 4000) * 0.1).detach()
    (grad,) = torch.autograd.grad(m.score(m.embed(x), enrolled).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_contract_kit(folder):
    check_model(SpeechBrainECAPA, {"path": str(folder)}, load_weights=True)


@pytest.mark.parametrize("change,words", [
    ("drop", ["missing keys", "fc.conv.bias"]),
    ("rename", ["unexpected keys", "fc.linear.bias", "missing keys", "fc.conv.bias"]),
    ("shape", ["shape mismatch", "fc.conv.weight"]),
])
def test_mismatching_checkpoint_names_the_keys(tmp_path, change, words):
    d = make_folder(tmp_path / change)
    state = torch.load(d / "embedding_model.ckpt", weights_only=True)
    if change == "drop":
        del state["fc.conv.bias"]
    elif change == "rename":
        state["fc.linear.bias"] = state.pop("fc.conv.bias")
    else:
        state["fc.conv.weight"] = torch.zeros(5, 96, 1)
    torch.save(state, d / "embedding_model.ckpt")
    m = SpeechBrainECAPA(path=d)
    with pytest.raises(ParameterError) as exc:
        m.load_weights(d)
    for w in words:
        assert w in str(exc.value)


def test_bad_folders_are_parameter_errors(tmp_path):
    with pytest.raises(ParameterError, match="not a folder"):
        SpeechBrainECAPA(path=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError, match="hyperparams.yaml"):
        SpeechBrainECAPA(path=tmp_path / "empty")
    d = make_folder(tmp_path / "xvec")
    text = (d / "hyperparams.yaml").read_text().replace("ECAPA_TDNN.ECAPA_TDNN", "Xvector.Xvector")
    (d / "hyperparams.yaml").write_text(text)
    with pytest.raises(ParameterError, match="only speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN"):
        SpeechBrainECAPA(path=d)
    d = make_folder(tmp_path / "nockpt")
    (d / "embedding_model.ckpt").unlink()
    with pytest.raises(ParameterError, match="embedding_model.ckpt is missing"):
        SpeechBrainECAPA(path=d).load_weights(d)


def test_published_size_has_20_8m_parameters(tmp_path):
    """spkrec-ecapa-voxceleb: C = 1024 (3072 in the aggregation), 80 mels, 192-d: 20.8 M parameters."""
    d = tmp_path / "published"
    d.mkdir()
    (d / "hyperparams.yaml").write_text(YAML.format(n_mels=80, c=1024, c3=3072, att=128, se=128, lin=192))
    with torch.device("meta"):
        m = SpeechBrainECAPA(path=d)
    n = sum(p.numel() for p in m.parameters())
    assert n == sum(int(np.prod(s)) for k, s in speechbrain_ecapa_keys(80, 1024, 3072, 128, 128, 192).items()
                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert round(n / 1e6, 1) == 20.8
    with torch.device("meta"):  # no path: the same published architecture, random weights, nothing to load
        default = SpeechBrainECAPA()
    assert {k: v.shape for k, v in default.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    with pytest.raises(ParameterError, match="give path=DIR"):
        default.load_weights(tmp_path)


def test_registry_and_cli_evaluate(folder, capsys):
    m = get_registry().build("model", f"speechbrain:path={folder}")
    assert isinstance(m, SpeechBrainECAPA)
    rc = main(["evaluate", "--model", f"speechbrain:path={folder}", "--task", "csi-e", "--limit", "4", "--json"])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(capsys.readouterr().out)
    assert doc
    rc = main(["evaluate", "--model", f"speechbrain:path={folder / 'missing'}", "--task", "csi-e", "--limit", "2"])
    assert rc == 2 and "not a folder" in capsys.readouterr().err
