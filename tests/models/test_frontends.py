"""Front-ends against independent computations: torchaudio.compliance.kaldi (MFCC, fbank), plain loops (deltas,
sliding CMN), torchaudio's MelSpectrogram (AudioNet log-mel); gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio
import torchaudio.compliance.kaldi as K
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_plugins_models.frontends import (KaldiFbank, KaldiMFCC, LogMel, delta_filters, deltas, sliding_cmn,
                                             sliding_window_bounds)


def _audio(b=2, t=8000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 1, t, generator=g) * 0.1).clamp(-1, 1)


@pytest.mark.parametrize("snip", [True, False])
@pytest.mark.parametrize("ceps,bins,low,high", [(24, 30, 20.0, 7600.0), (30, 30, 20.0, 7600.0), (13, 23, 20.0, 0.0)])
def test_mfcc_matches_torchaudio_kaldi(snip, ceps, bins, low, high):
    x = _audio(3, 5000 + 37)
    ours = KaldiMFCC(num_ceps=ceps, num_mel_bins=bins, low_freq=low, high_freq=high, snip_edges=snip)(x)
    for i in range(x.shape[0]):
        ref = K.mfcc(x[i] * 32768, num_ceps=ceps, num_mel_bins=bins, low_freq=low, high_freq=high, dither=0.0,
                     snip_edges=snip, energy_floor=0.0, use_energy=True, raw_energy=True)
        assert ours[i].shape == ref.shape
        torch.testing.assert_close(ours[i], ref, rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("snip", [True, False])
def test_fbank_matches_torchaudio_kaldi(snip):
    x = _audio(2, 4321)
    ours = KaldiFbank(num_mel_bins=80, snip_edges=snip)(x)
    for i in range(2):
        ref = K.fbank(x[i] * 32768, num_mel_bins=80, dither=0.0, snip_edges=snip, energy_floor=0.0)
        torch.testing.assert_close(ours[i], ref, rtol=1e-4, atol=2e-3)


def test_mfcc_is_deterministic_without_dither_and_random_with_it():
    x = _audio(2, 4000)
    m = KaldiMFCC(num_ceps=24, num_mel_bins=30)
    assert torch.equal(m(x), m(x))
    d = KaldiMFCC(num_ceps=24, num_mel_bins=30, dither=1.0)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(d(x, g1), d(x, g2))
    assert not torch.equal(d(x, g1), m(x))


def _loop_deltas(f: np.ndarray, order=2, window=3) -> np.ndarray:
    filt = delta_filters(order, window).numpy()
    half = filt.shape[1] // 2
    t, d = f.shape
    out = np.zeros((t, d * (order + 1)))
    for i in range(t):
        for o in range(order + 1):
            for j in range(-half, half + 1):
                out[i, o * d : (o + 1) * d] += filt[o, j + half] * f[min(max(i + j, 0), t - 1)]
    return out


def test_delta_filters_are_kaldi_regression_filters():
    filt = delta_filters(2, 3)
    j = np.arange(-3, 4)
    first = j / (j**2).sum()
    np.testing.assert_allclose(filt[1, 3:10].numpy(), first)
    np.testing.assert_allclose(filt[2].numpy(), np.convolve(first, first))
    assert filt[0, 6] == 1 and filt[0].abs().sum() == 1


@settings(max_examples=10, deadline=None)
@given(t=st.integers(1, 40), d=st.integers(1, 4))
def test_deltas_match_loop_with_edge_replication(t, d):
    f = torch.randn(2, t, d, dtype=torch.float64)
    out = deltas(f)
    for b in range(2):
        np.testing.assert_allclose(out[b].numpy(), _loop_deltas(f[b].numpy()), atol=1e-10)


def _loop_cmn(f: np.ndarray, window: int) -> np.ndarray:
    """Kaldi apply-cmvn-sliding --center=true, written frame by frame as Kaldi does."""
    t = f.shape[0]
    out = np.empty_like(f)
    for i in range(t):
        start = i - window // 2
        end = start + window
        if start < 0:
            end -= start
            start = 0
        if end > t:
            start -= end - t
            end = t
            if start < 0:
                start = 0
        out[i] = f[i] - f[start:end].mean(axis=0)
    return out


@settings(max_examples=15, deadline=None)
@given(t=st.integers(1, 80), window=st.integers(1, 50), d=st.integers(1, 3))
def test_sliding_cmn_matches_loop_reference(t, window, d):
    f = torch.randn(2, t, d, dtype=torch.float64) * 5 + 3
    out = sliding_cmn(f, window)
    for b in range(2):
        np.testing.assert_allclose(out[b].numpy(), _loop_cmn(f[b].numpy(), window), atol=1e-9)


def test_sliding_window_bounds_stay_inside():
    start, end = sliding_window_bounds(500, 300)
    assert int(start.min()) == 0 and int(end.max()) == 500
    assert torch.all(end - start == 300)


def test_logmel_matches_torchaudio_melspectrogram():
    x = _audio(2, 8000)
    ours = LogMel()(x)
    pre = x[:, 0, 1:] - 0.97 * x[:, 0, :-1]
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, win_length=800, hop_length=160, n_mels=32,
                                               power=2.0, norm="slaney", mel_scale="slaney", f_min=0.0, f_max=8000.0)
    ref = 10 * torch.log10(mel(pre).clamp_min(1e-16)).transpose(1, 2)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-3)


def _fd_check(fn, x, n_dirs=3, h=1e-6, seed=0):
    """Directional finite differences against autograd, float64."""
    g = torch.Generator().manual_seed(seed)
    x = x.double().requires_grad_(True)
    w = torch.randn(fn(x).shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((fn(x) * w).sum(), x)
    for _ in range(n_dirs):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            num = ((fn(x + h * v) * w).sum() - (fn(x - h * v) * w).sum()) / (2 * h)
        ana = (grad * v).sum()
        assert torch.isclose(num, ana, rtol=1e-4, atol=1e-6), (float(num), float(ana))


def test_frontend_gradients_match_finite_differences():
    x = _audio(2, 1200, seed=3)
    mfcc = KaldiMFCC(num_ceps=13, num_mel_bins=23, snip_edges=False).double()
    _fd_check(lambda w: sliding_cmn(deltas(mfcc(w)), 30), x)
    _fd_check(KaldiFbank(num_mel_bins=40).double(), x)
    _fd_check(LogMel().double(), x)


def test_noise_floor_is_the_expected_energy_of_kaldi_dither():
    zeros = torch.zeros(64, 1, 4000)
    dithered = KaldiFbank(num_mel_bins=40, dither=1.0, use_log=False)(zeros, torch.Generator().manual_seed(0))
    floor = KaldiFbank(num_mel_bins=40, noise_floor=1.0).floor_mel
    ratio = dithered.mean(dim=(0, 1)) / floor
    assert float((ratio - 1).abs().max()) < 0.05  # ~25k noise frames per band
    x = _audio(2, 4000)
    quiet = KaldiFbank(num_mel_bins=40, noise_floor=2.0)
    lin = KaldiFbank(num_mel_bins=40, use_log=False)(x)
    torch.testing.assert_close(quiet(x), (lin + 4.0 * floor).log())  # std 2 -> 4x the energy, added before log
    assert float(quiet(torch.zeros(1, 1, 4000)).min()) > -5  # zero padding is no longer log(eps) ~ -15.9
