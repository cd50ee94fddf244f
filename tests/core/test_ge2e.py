"""The GE2E backbone against independent computations: a numpy STFT + Slaney mel filterbank written from the formulas,
resemblyzer's partial-utterance slicing rewritten from its description, the shipped weights, and gradient checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_core.base.errors import Sec4srError

SR, N_FFT, HOP, N_MELS = 16000, 400, 160, 40


# ----------------------------------------------------------------------------------------------------------------------
# Independent numpy references
# ----------------------------------------------------------------------------------------------------------------------


def hz_to_mel_slaney(f):
    """Slaney's mel scale: linear (3/200 mel per Hz) below 1 kHz, logarithmic above (27 mels per factor 6.4)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def mel_to_hz_slaney(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_filterbank(sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=SR / 2):
    """(n_fft/2+1, n_mels) triangles between n_mels+2 points equally spaced in mel, area-normalised (2/(hi-lo))."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    hz = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2))
    fb = np.zeros((freqs.size, n_mels))
    for m in range(n_mels):
        lo, centre, hi = hz[m], hz[m + 1], hz[m + 2]
        rising = (freqs - lo) / (centre - lo)
        falling = (hi - freqs) / (hi - centre)
        fb[:, m] = np.maximum(0.0, np.minimum(rising, falling)) * 2.0 / (hi - lo)
    return fb


def mel_power_numpy(wave: np.ndarray) -> np.ndarray:
    """(frames, 40) mel power spectrogram: centred frames (zero padding n_fft/2 each side), periodic Hann, |rfft|²."""
    x = np.pad(wave.astype(np.float64), (N_FFT // 2, N_FFT // 2))
    n_frames = 1 + (x.size - N_FFT) // HOP
    frames = x[np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return power @ slaney_filterbank()


def compute_partial_slices(n_samples, partial_frames=160, rate=1.3, min_coverage=0.75):
    """resemblyzer.VoiceEncoder.compute_partial_slices, rewritten from its published description: partials of 160
    frames every round(16000/1.3/160) frames over ceil((n+1)/160) frames; the last partial is dropped when it covers
    less than 75 % of real samples (unless it is the only one). Returns (wave slices, mel slices)."""
    samples_per_frame = SR * 10 // 1000
    n_frames = int(np.ceil((n_samples + 1) / samples_per_frame))
    frame_step = max(int(np.round((SR / rate) / samples_per_frame)), 1)
    wav_slices, mel_slices = [], []
    steps = max(1, n_frames - partial_frames + frame_step + 1)
    for i in range(0, steps, frame_step):
        mel_range = np.array([i, i + partial_frames])
        wav_range = mel_range * samples_per_frame
        mel_slices.append(slice(*mel_range))
        wav_slices.append(slice(*wav_range))
    last = wav_slices[-1]
    coverage = (n_samples - last.start) / (last.stop - last.start)
    if coverage < min_coverage and len(mel_slices) > 1:
        mel_slices, wav_slices = mel_slices[:-1], wav_slices[:-1]
    return wav_slices, mel_slices


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(ge2e_system):
    return ge2e_system.model


def _speech(n: int, seed: int = 0) -> torch.Tensor:
    """A deterministic speech-like signal: harmonics with a slow envelope plus a little noise, (1, 1, n)."""
    g = np.random.default_rng(seed)
    t = np.arange(n) / SR
    f0 = 110 + 40 * seed
    x = sum(np.sin(2 * np.pi * f0 * k * t + g.uniform(0, 6)) / k for k in range(1, 8))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.05 * g.standard_normal(n)
    return torch.from_numpy(0.2 * x / np.abs(x).max()).float().view(1, 1, n)


# ----------------------------------------------------------------------------------------------------------------------
# Front-end
# ----------------------------------------------------------------------------------------------------------------------


def test_slaney_reference_is_sane():
    fb = slaney_filterbank()
    assert fb.shape == (201, 40) and (fb >= 0).all()
    assert mel_to_hz_slaney(hz_to_mel_slaney(3000.0)) == pytest.approx(3000.0)
    assert hz_to_mel_slaney(1000.0) == pytest.approx(15.0)


@pytest.mark.parametrize("n", [400, 4000, 16000 + 77])
def test_mel_front_end_matches_numpy(model, n):
    wave = _speech(n, seed=n % 3)
    got = model.mel(wave)[0].double().numpy()
    ref = mel_power_numpy(wave[0, 0].numpy())
    assert got.shape == ref.shape == (1 + n // HOP, N_MELS)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-5 * ref.max())


def test_mel_filterbank_buffer_matches_numpy(model):
    np.testing.assert_allclose(model.mel_fb.double().numpy(), slaney_filterbank(), rtol=1e-3, atol=1e-7)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    np.testing.assert_allclose(model.window.double().numpy(), hann, atol=1e-6)


def test_final_level_normalises_volume_and_pads_like_resemblyzer(model):
    n = 30000
    wave = _speech(n, seed=1) * 0.05  # quiet: about -46 dBFS
    x = wave[0, 0].double().numpy()
    gain = 10 ** (-30 / 20) / np.sqrt(np.mean(x ** 2))
    assert gain > 1
    stop = compute_partial_slices(n)[0][-1].stop
    ref = mel_power_numpy(np.pad(x * gain, (0, max(0, stop - n))))
    got = model.to_level(wave, "wave", "final")[0].double().numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-5 * ref.max())
    # loud input is never turned down (increase only)
    loud = _speech(n, seed=1)
    assert float(loud.pow(2).mean().sqrt()) > 10 ** (-30 / 20)
    ref_loud = mel_power_numpy(np.pad(loud[0, 0].double().numpy(), (0, max(0, stop - n))))
    np.testing.assert_allclose(model.to_level(loud, "wave", "final")[0].double().numpy(), ref_loud,
                               rtol=1e-3, atol=1e-5 * ref_loud.max())


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 120000))
def test_padded_length_follows_resemblyzer(model, n):
    wav_slices, _ = compute_partial_slices(n)
    assert model.padded_length(n) == max(n, wav_slices[-1].stop)
    assert model.frame_step() == 77


def _dropped(n: int) -> bool:
    """True when resemblyzer drops the last partial of an ``n``-sample utterance for low coverage."""
    return len(compute_partial_slices(n)[1]) < len(compute_partial_slices(n, min_coverage=0.0)[1])


def _lengths_with_both_coverage_cases() -> list[int]:
    """A sub-partial utterance, one whose last partial is kept, and one whose last partial is dropped."""
    dropped = next(n for n in range(40000, 60000, 160) if _dropped(n))
    assert not _dropped(48000)
    return [8000, 48000, dropped]


@pytest.mark.parametrize("n", _lengths_with_both_coverage_cases())
def test_head_averages_resemblyzer_partials(model, n):
    """The utterance embedding is the normalised mean of the normalised embeddings of resemblyzer's partials."""
    wave = _speech(n, seed=2)
    with torch.no_grad():
        got = model.embed(wave)[0]
        mel = model.to_level(wave, "wave", "final")[0]
        _, mel_slices = compute_partial_slices(n)
        parts = []
        for s in mel_slices:
            _, (h, _) = model.lstm(mel[s][None])
            e = torch.relu(model.linear(h[-1][0]))
            parts.append(e / e.norm())
        ref = torch.stack(parts).mean(0)
        ref = ref / ref.norm()
    assert torch.allclose(got, ref, atol=1e-5), (n, len(mel_slices))


# ----------------------------------------------------------------------------------------------------------------------
# Weights, embeddings, gradients
# ----------------------------------------------------------------------------------------------------------------------


def test_weights_are_resemblyzers_with_the_right_shapes(model):
    from sec4sr_plugins_models.ge2e import resemblyzer_weights

    state = torch.load(resemblyzer_weights(), map_location="cpu", weights_only=True)["model_state"]
    own = model.state_dict()
    expected_shapes = {
        "lstm.weight_ih_l0": (1024, 40), "lstm.weight_hh_l0": (1024, 256), "lstm.bias_ih_l0": (1024,),
        "lstm.weight_ih_l1": (1024, 256), "lstm.weight_ih_l2": (1024, 256), "lstm.bias_hh_l2": (1024,),
        "linear.weight": (256, 256), "linear.bias": (256,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(own[key].shape) == shape, key
    assert set(own) == {k for k in state if not k.startswith("similarity_")}
    for key, value in own.items():
        assert torch.equal(value.cpu(), state[key]), key


def test_bad_weights_files_are_clear_errors(tmp_path):
    from sec4sr_plugins_models.ge2e import GE2E

    bad = tmp_path / "bad.pt"
    torch.save({"model_state": {"lstm.weight_ih_l0": torch.zeros(3, 3)}}, bad)
    with pytest.raises(Sec4srError, match="does not fit model.*missing keys.*shape mismatch"):
        GE2E(weights=bad).load_weights(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(Sec4srError, match="cannot read checkpoint"):
        GE2E(weights=junk).load_weights(tmp_path)


def test_embeddings_are_unit_norm_and_deterministic(model, test_batch):
    x = test_batch[0][:3]
    with torch.no_grad():
        a = model.embed(x)
        b = model.embed(x)
    assert a.shape == (3, 256)
    assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(a, b)
    assert not model.training


def test_quiet_inputs_are_volume_invariant(model):
    x = _speech(16000, seed=0) * 0.02  # well below -30 dBFS
    with torch.no_grad():
        assert torch.allclose(model.embed(x), model.embed(x * 0.5), atol=1e-4)


def test_front_end_gradient_check():
    """Autograd of wave -> final (volume normalisation, padding, STFT, mel) against finite differences, float64."""
    from sec4sr_plugins_models.ge2e import GE2E

    m = GE2E().double()
    g = torch.Generator().manual_seed(0)
    for scale in (0.001, 0.5):  # quiet (gain applied) and loud (no gain)
        x = torch.randn(2, 1, 480, dtype=torch.float64, generator=g) * scale
        assert torch.autograd.gradcheck(lambda w: m.to_level(w, "wave", "final"), (x.requires_grad_(True),),
                                        eps=1e-6 * scale, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_gradient_reaches_the_waveform(model, ge2e_system):
    x = (_speech(8000, seed=0) * 0.3).requires_grad_(True)
    target = ge2e_system.enrolled[3]
    loss = model.embed(x)[0] @ target
    (g,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(g).all() and float(g.abs().max()) > 0
    # a small step along the gradient raises the score by about step·|g| (first order)
    h = 1e-3
    with torch.no_grad():
        up = model.embed(x + h * g / g.norm())[0] @ target
        down = model.embed(x - h * g / g.norm())[0] @ target
    fd = float(up - down) / (2 * h)
    assert fd == pytest.approx(float(g.norm()), rel=0.1)
