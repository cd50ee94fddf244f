"""Time-domain defenses: QT, BDR, AT, AS, MS — invariants, references, gradients, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

import sec4sr_core as sec4sr
from sec4sr_core.base.errors import ParameterError
from sec4sr_core.testing import check_defense, tiny_system
from sec4sr_plugins_defenses import time_domain
from sec4sr_plugins_defenses.time_domain import AS, AT, BDR, MEDIAN_NETWORKS, MS, QT, box_sum, sliding_median

from .helpers import speechlike

WAVE_DEFENSES = [(QT, {"q": 512}), (BDR, {"bits": 6}), (AT, {"snr": 20.0}), (AS, {"kernel": 5}),
                 (MS, {"kernel": 5})]


@pytest.mark.parametrize("cls,params", WAVE_DEFENSES, ids=lambda v: getattr(v, "name", ""))
def test_contract(cls, params):
    check_defense(cls, params)


waves = st.builds(
    lambda b, t, seed, amp: (torch.rand(b, 1, t, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * amp,
    st.integers(1, 3), st.integers(1, 400), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0),
)


@settings(max_examples=25, deadline=None)
@given(x=waves, which=st.sampled_from(range(len(WAVE_DEFENSES))))
def test_shape_range_and_determinism(x, which):
    cls, params = WAVE_DEFENSES[which]
    d = cls(params)
    d.seed(3)
    y = d(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all() and y.abs().max() <= 1.0
    d.seed(3)
    assert torch.equal(d(x), y)  # deterministic, or reproducible under the same seed


def test_qt_and_bdr_reference():
    x = speechlike(2, 4000)
    ref = np.clip(np.round(x.numpy() * 32768 / 512) * 512 / 32768, -1, 1)
    assert np.array_equal(QT(q=512)(x).numpy(), ref.astype(np.float32))
    assert torch.equal(BDR(bits=8)(x), QT(q=256)(x))
    assert torch.equal(QT(q=1)(x), torch.round(x * 32768) / 32768)


def test_as_ms_reference():
    x = speechlike(3, 3000)
    for w in (1, 3, 5, 7, 9, 11, 101):
        ref_as = np.stack([np.convolve(u, np.ones(w) / w, mode="same") for u in x[:, 0].double().numpy()])
        ref_ms = np.stack([signal.medfilt(u, w) for u in x[:, 0].double().numpy()])  # zero padding, like ours
        assert np.allclose(AS(kernel=w)(x)[:, 0].numpy(), ref_as, atol=1e-6)
        assert np.allclose(MS(kernel=w)(x)[:, 0].numpy(), ref_ms, atol=1e-7)


def test_median_networks_select_the_median_of_every_0_1_input():
    # 0-1 principle: a comparator network selects the median of all inputs iff it does for all 0/1 inputs
    import itertools

    for w, net in MEDIAN_NETWORKS.items():
        for bits in itertools.product((0, 1), repeat=w):
            v = list(bits)
            for i, j in net:
                if v[i] > v[j]:
                    v[i], v[j] = v[j], v[i]
            assert v[w // 2] == sorted(bits)[w // 2], (w, bits)


@pytest.mark.parametrize("w", sorted(MEDIAN_NETWORKS))
def test_sliding_median_equals_plain_median(w):
    g = torch.Generator().manual_seed(w)
    x = torch.rand(3, 1, 500, generator=g) * 2 - 1
    x[1] = (x[1] * 4).round() / 4  # many ties
    p = torch.nn.functional.pad(x, (w // 2, w // 2))
    assert torch.equal(sliding_median(p, w), p.unfold(-1, w, 1).median(dim=-1).values)


def test_ms_gradient_goes_to_one_selected_sample():
    p = ((speechlike(2, 300) * 8).round() / 8).requires_grad_(True)  # ties, so minimum/maximum would split
    for w in sorted(MEDIAN_NETWORKS):
        y = sliding_median(p, w)
        (grad,) = torch.autograd.grad(y.sum(), p)
        assert torch.equal(grad.sum(), torch.tensor(float(y.numel())))  # one unit per output sample
        assert torch.equal(grad, grad.round())  # never split
    for w in (3, 5, 7, 9, 11):
        # and with distinct samples it is exactly the plain median's gradient
        xd = (speechlike(1, 200).double() + 1e-4 * torch.arange(200, dtype=torch.float64)).requires_grad_(True)
        windows = torch.nn.functional.pad(xd, (w // 2, w // 2)).unfold(-1, w, 1)
        (ref,) = torch.autograd.grad(windows.median(dim=-1).values.sum(), xd)
        (ours,) = torch.autograd.grad(MS(kernel=w)(xd).sum(), xd)
        assert torch.equal(ours, ref)


@pytest.mark.parametrize("w", [1, 2, 3, 6, 31, 64, 1001])
def test_box_sum_equals_convolution(w):
    p = torch.rand(2, 1, 3000, generator=torch.Generator().manual_seed(w), dtype=torch.float64) - 0.5
    ref = torch.nn.functional.conv1d(p, torch.ones(1, 1, w, dtype=torch.float64))
    assert torch.allclose(box_sum(p, w), ref, atol=1e-12)


def test_row_blocks_do_not_change_results(monkeypatch):
    x = speechlike(7, 1000)
    whole = [AS(kernel=5)(x), MS(kernel=5)(x), MS(kernel=11)(x)]
    monkeypatch.setattr(time_domain, "ROW_BLOCK", 2500)  # blocks of 2 rows
    assert time_domain.by_rows(lambda c: c * 2, x, 2500).shape == x.shape
    for y, d in zip(whole, [AS(kernel=5), MS(kernel=5), MS(kernel=11)]):
        assert torch.equal(time_domain.by_rows(d.forward, x, 2500), y)


@pytest.mark.parametrize("cls", [AS, MS])
@pytest.mark.parametrize("kernel", [0, 2, 4, 1002])
def test_bad_windows_refused(cls, kernel):
    with pytest.raises(ParameterError, match="kernel"):
        cls(kernel=kernel)


def test_bad_shape_refused():
    with pytest.raises(ParameterError, match=r"\(B, 1, T\)"):
        QT()(torch.zeros(2, 100))


def test_at_hits_snr_and_is_seeded():
    x = speechlike(16, 16000, amp=0.1)  # quiet, so clipping never changes the noise
    errors = []
    for snr in (10.0, 25.0, 40.0):
        d = AT(snr=snr)
        d.seed(7)
        y = d(x)
        noise = (y - x).double()
        measured = 10 * torch.log10(x.double().pow(2).mean(dim=(1, 2)) / noise.pow(2).mean(dim=(1, 2)))
        errors.append(float((measured - snr).abs().mean()))
        assert abs(float(measured.mean()) - snr) < 0.5
    assert max(errors) < 0.5
    d = AT()
    d.seed(1)
    a = d(x)
    d.seed(1)
    b = d(x)
    d.seed(2)
    c = d(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(d(x), d(x))  # a fresh draw on every call within a seed's stream


def test_at_draws_from_its_generator_only():
    d = AT()
    d.seed(5)
    torch.manual_seed(0)
    a = d(speechlike(1, 1000))
    d.seed(5)
    torch.manual_seed(1)
    assert torch.equal(a, d(speechlike(1, 1000)))


@pytest.mark.parametrize("cls,params", [(AS, {"kernel": 5}), (MS, {"kernel": 3}), (AT, {"snr": 10.0})],
                         ids=["as", "ms", "at"])
def test_gradcheck(cls, params):
    d = cls(params)
    x = (speechlike(1, 48, amp=0.5).double() + 1e-3 * torch.arange(48, dtype=torch.float64)).requires_grad_(True)

    def fn(inp):
        d.seed(0)  # AT: the same noise draw on every evaluation
        return d(inp)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_non_differentiable_get_bpda():
    system = tiny_system()
    for spec in ("qt:q=512", "bdr:bits=6"):
        ds = sec4sr.defend(system, spec)
        x = speechlike(1, 4000).requires_grad_(True)
        ds(x).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_on_device(device):
    x = speechlike(2, 2000, device=device)
    for cls, params in WAVE_DEFENSES:
        y = cls(params)(x)
        assert y.shape == x.shape and y.device == x.device
