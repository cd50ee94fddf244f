"""DS, LPF, BPF: references against scipy/torchaudio, gradients, validation, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.testing import check_defense
from sec4sr_plugins_defenses.frequency_domain import BPF, DS, LPF, fast_length

from .helpers import speechlike


@pytest.mark.parametrize("cls,params", [(DS, {"ratio": 0.5}), (LPF, {}), (BPF, {})], ids=["ds", "lpf", "bpf"])
def test_contract(cls, params):
    check_defense(cls, params)


@pytest.mark.parametrize("d", [LPF(), LPF(stop=6000, pass_edge=3500), BPF(), BPF(stop_low=100, pass_low=200)],
                         ids=["lpf", "lpf-6k", "bpf", "bpf-narrow"])
def test_response_matches_sosfreqz(d):
    freqs = np.array([100.0, 300.0, 1000.0, 3000.0, 4000.0, 4500.0, 5000.0, 7000.0])
    ref = signal.sosfreqz(d.sos, worN=freqs, fs=16000)[1]
    assert np.allclose(d.response(freqs), ref, rtol=1e-9, atol=1e-12)
    # the design meets the spec: ≤ 3 dB loss at the pass edges, ≥ 40 dB attenuation at the stop edges
    pass_edges = [d.params.pass_edge] if isinstance(d, LPF) else [d.params.pass_low, d.params.pass_high]
    stop_edges = [d.params.stop] if isinstance(d, LPF) else [d.params.stop_low, d.params.stop_high]
    assert (20 * np.log10(np.abs(d.response(pass_edges))) >= -3.0 - 1e-6).all()
    assert (20 * np.log10(np.abs(d.response(stop_edges))) <= -40.0 + 1e-6).all()


@pytest.mark.parametrize("d", [LPF(), BPF()], ids=["lpf", "bpf"])
def test_filtering_equals_sosfilt(d):
    x = speechlike(3, 5000, amp=0.2)
    ref = signal.sosfilt(d.sos, x[:, 0].double().numpy(), axis=-1)
    assert np.abs(d(x)[:, 0].double().numpy() - ref).max() < 1e-6


@pytest.mark.parametrize("d", [LPF(), BPF()], ids=["lpf", "bpf"])
def test_float32_fft_on_long_input_equals_sosfilt(d):
    x = speechlike(2, 48000, amp=0.9)  # 3 s near full scale: the float32 FFT's round-off grows with n and level
    ref = signal.sosfilt(d.sos, x[:, 0].double().numpy(), axis=-1)
    y = d(x)
    assert y.dtype == torch.float32 and np.abs(y[:, 0].double().numpy() - ref).max() < 1e-6
    yd = d(x.double())  # float64 audio is filtered in float64 throughout
    assert yd.dtype == torch.float64 and np.abs(yd[:, 0].numpy() - np.clip(ref, -1, 1)).max() < 1e-7  # tail wrap


def test_fast_length_is_the_smallest_5_smooth_length():
    smooth = sorted(2**a * 3**b * 5**c for a in range(22) for b in range(14) for c in range(10))
    for n in [*range(1, 3000), 48107, 48861, 160_000, 1_234_567]:
        assert fast_length(n) == next(m for m in smooth if m >= n), n


def test_sinusoid_gains():
    t = torch.arange(16000) / 16000
    lpf, bpf = LPF(), BPF()
    for f in (200.0, 1000.0, 4500.0, 6000.0):
        x = (0.5 * torch.sin(2 * torch.pi * f * t)).view(1, 1, -1)
        for d in (lpf, bpf):
            y = d(x)[..., 4000:]  # steady state
            gain = y.pow(2).mean().sqrt() / x[..., 4000:].pow(2).mean().sqrt()
            assert abs(float(gain) - abs(d.response([f])[0])) < 1e-3


@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 3000), seed=st.integers(0, 1000), which=st.integers(0, 2))
def test_shape_range_determinism(b, t, seed, which):
    d = [DS(), LPF(), BPF()][which]
    x = torch.rand(b, 1, t, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    y = d(x)
    assert y.shape == x.shape and torch.isfinite(y).all() and y.abs().max() <= 1
    assert torch.equal(y, d(x))


def test_ds_reference():
    x = speechlike(2, 4001)
    for ratio in (0.5, 0.3, 0.25):
        rate = round(16000 * ratio)
        ref = AF.resample(AF.resample(x, 16000, rate), rate, 16000)[..., :4001]
        ref = torch.nn.functional.pad(ref, (0, 4001 - ref.shape[-1]))
        assert torch.allclose(DS(ratio=ratio)(x), ref.clamp(-1, 1), atol=1e-6)
    assert torch.equal(DS(ratio=1.0)(x), x)
    # a tone below the intermediate Nyquist survives, one above it is removed
    t = torch.arange(8000) / 16000
    low = (0.5 * torch.sin(2 * torch.pi * 1000 * t)).view(1, 1, -1)
    high = (0.5 * torch.sin(2 * torch.pi * 5000 * t)).view(1, 1, -1)
    assert DS()(low)[..., 500:-500].pow(2).mean() > 0.9 * low.pow(2).mean()
    assert DS()(high)[..., 500:-500].pow(2).mean() < 0.01 * high.pow(2).mean()


def test_ds_row_blocks_do_not_change_results(monkeypatch):
    from sec4sr_plugins_defenses import frequency_domain

    x = speechlike(5, 3001)
    for ratio in (0.5, 0.3):
        whole = DS(ratio=ratio)(x)
        monkeypatch.setattr(frequency_domain, "DS_ROW_BLOCK", 6002)  # blocks of 2 rows
        assert torch.allclose(DS(ratio=ratio)(x), whole, atol=1e-7)
        monkeypatch.undo()


@pytest.mark.parametrize("d", [DS(ratio=0.5), LPF(), BPF()], ids=["ds", "lpf", "bpf"])
def test_gradcheck(d):
    x = (0.3 * speechlike(1, 96).double()).requires_grad_(True)
    assert torch.autograd.gradcheck(d, (x,), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("cls,params,match", [
    (LPF, {"stop": 8000}, "Nyquist"),
    (LPF, {"stop": 9000}, "Nyquist"),
    (LPF, {"stop": 3000}, "below the stop edge"),
    (BPF, {"stop_high": 8000}, "Nyquist"),
    (BPF, {"stop_low": 400}, "stop_low < pass_low"),
    (DS, {"ratio": 0.3337}, "multiple of 80 Hz"),
    (DS, {"ratio": 0.01}, "at least 800 Hz"),
    (DS, {"ratio": 1.5}, "ratio"),
])
def test_degenerate_parameters_refused(cls, params, match):
    with pytest.raises(ParameterError, match=match):
        cls(params)


def test_cli_refuses_degenerate_filter(capsys):
    from sec4sr_core.cli import main

    assert main(["run", "--defense", "lpf:stop=8000", "--attack", "pgd-10", "--limit", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Nyquist" in err and len(err.strip().splitlines()) == 1


def test_on_device(device):
    x = speechlike(2, 3000, device=device)
    for d in (DS(), LPF(), BPF()):
        y = d(x)
        assert y.shape == x.shape and y.device == x.device
        ref = d(x.cpu())
        assert torch.allclose(y.cpu(), ref, atol=1e-5)
