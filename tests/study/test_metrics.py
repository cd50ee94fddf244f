"""Metrics on hand-made signals, against the pesq/pystoi packages, and R1 on a hand-made table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_core.builtins.metrics import L0, L1, L2, PESQ, SNR, STOI, Linf
from sec4sr_core.study.stats import aggregate, harmonic_mean, mean, r1
from sec4sr_core.plugins.manager import get_registry


def _pair():
    benign = torch.zeros(2, 1, 8)
    benign[0, 0] = torch.tensor([0.5, -0.5, 0.5, -0.5, 0.5, -0.5, 0.5, -0.5])
    benign[1, 0] = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0, 0.0, 0.0, 0.0])
    adv = benign.clone()
    adv[0, 0, 1] += 0.25  # one sample changed by 0.25
    adv[0, 0, 6] -= 0.125  # another by 0.125
    return benign, adv  # utterance 1 unchanged


def test_lp_norms_on_hand_made_signals():
    b, a = _pair()
    assert L0().compute(b, a) == [2.0, 0.0]
    assert L1().compute(b, a) == pytest.approx([0.375, 0.0])
    assert L2().compute(b, a) == pytest.approx([math.sqrt(0.25**2 + 0.125**2), 0.0])
    assert Linf().compute(b, a) == pytest.approx([0.25, 0.0])


def test_snr_on_hand_made_signals():
    b, a = _pair()
    signal = 8 * 0.25  # Σx² of utterance 0
    noise = 0.25**2 + 0.125**2
    snr = SNR().compute(b, a)
    assert snr[0] == pytest.approx(10 * math.log10(signal / noise))
    assert snr[1] == math.inf  # unchanged utterance
    # a perturbation of a tenth of the signal's amplitude everywhere: exactly 20 dB
    x = torch.sin(torch.linspace(0, 50, 4000)).view(1, 1, -1) * 0.4
    assert SNR().compute(x, x * 1.1) == pytest.approx([20.0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-4, 0.5))
def test_norm_ordering_and_snr_scale_invariance(seed, scale):
    g = torch.Generator().manual_seed(seed)
    b = torch.rand(3, 1, 200, generator=g) * 1.6 - 0.8
    d = (torch.rand(3, 1, 200, generator=g) * 2 - 1) * scale
    linf, l2, l1 = Linf().compute(b, b + d), L2().compute(b, b + d), L1().compute(b, b + d)
    for i in range(3):
        assert linf[i] <= l2[i] + 1e-12 <= l1[i] + 2e-12
    # SNR depends on the ratio only: scaling signal and perturbation together leaves it unchanged
    s1 = SNR().compute(b, b + d)
    s2 = SNR().compute(0.5 * b, 0.5 * (b + d))
    assert s1 == pytest.approx(s2, rel=1e-9)


@pytest.fixture(scope="module")
def speech_pair(embedded):
    from sec4sr_core.sdk.audio import load_batch

    x = load_batch([u.path for u in embedded.split("test")[:2]], 32000)
    g = torch.Generator().manual_seed(0)
    adv = (x + 0.003 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    return x, adv


def test_pesq_equals_the_pesq_package(speech_pair):
    from pesq import pesq

    x, adv = speech_pair
    ours = PESQ().compute(x, adv)
    direct = [pesq(16000, x[i, 0].double().numpy(), adv[i, 0].double().numpy(), "wb") for i in range(2)]
    assert ours == pytest.approx(direct, abs=1e-9)
    assert all(1.0 <= v <= 4.7 for v in ours)


def test_stoi_equals_the_pystoi_package(speech_pair):
    from pystoi import stoi

    x, adv = speech_pair
    ours = STOI().compute(x, adv)
    direct = [stoi(x[i, 0].double().numpy(), adv[i, 0].double().numpy(), 16000, extended=False) for i in range(2)]
    assert ours == pytest.approx(direct, abs=1e-9)


def test_pesq_gives_nan_where_the_package_refuses():
    silence = torch.zeros(1, 1, 16000)
    assert math.isnan(PESQ().compute(silence, silence)[0])


def test_metric_shape_mismatch_is_a_clear_error():
    from sec4sr_core.base.errors import Sec4srError

    with pytest.raises(Sec4srError, match="differ in shape"):
        L2().compute(torch.zeros(1, 1, 10), torch.zeros(1, 1, 12))


def test_every_builtin_metric_is_usable_by_name():
    reg = get_registry()
    b, a = _pair()
    for name in ("l0", "l1", "l2", "linf", "snr"):
        assert len(reg.build("metric", name).compute(b, a)) == 2
    assert {"pesq", "stoi"} <= set(reg.names("metric"))


def test_r1_is_the_harmonic_mean_on_a_hand_made_table():
    # defense row: A_b = 0.9, A_a over three attacks = 0.2, 0.5, 0.5 -> mean 0.4; R1 = 2·0.9·0.4/1.3
    assert r1(0.9, [0.2, 0.5, 0.5]) == pytest.approx(2 * 0.9 * 0.4 / 1.3)
    assert r1(1.0, [1.0]) == 1.0
    assert r1(0.8, [0.0, 0.0]) == 0.0 and r1(0.0, [0.0]) == 0.0
    assert r1(0.8, []) is None and harmonic_mean(None, 0.5) is None
    # a hand-made table: rows -> (A_b, [A_a...]) and the R1 expected from the definition
    table = {"none": (0.99, [0.0, 0.02]), "qt": (0.97, [0.60, 0.80]), "at": (0.85, [0.45, 0.55])}
    for name, (ab, aas) in table.items():
        m = sum(aas) / len(aas)
        assert r1(ab, aas) == pytest.approx(2 * ab * m / (ab + m)), name


def test_aggregate_from_per_utterance_rows():
    rows = [
        {"correct": 1, "success": 0, "queries": 10, "time_s": 0.5, "metrics": {"snr": float("inf"), "l2": 0.0}},
        {"correct": 0, "success": 1, "queries": 30, "time_s": 1.5, "metrics": {"snr": 20.0, "l2": 0.2}},
        {"correct": 0, "success": 1, "queries": 20, "time_s": 1.0, "metrics": {"snr": "inf", "l2": 0.4,
                                                                                  "attack_success": True}},
    ]
    agg = aggregate(rows)
    assert agg["n"] == 3
    assert agg["accuracy"] == pytest.approx(1 / 3) and agg["success_rate"] == pytest.approx(2 / 3)
    assert agg["mean_queries"] == 20 and agg["mean_time_s"] == 1.0
    assert agg["metrics"]["snr"] == 20.0  # infinite SNRs are dropped, as the predecessor did
    assert agg["metrics"]["l2"] == pytest.approx(0.2)
    assert "attack_success" not in agg["metrics"]
    assert mean([None, float("nan")]) is None
    assert np.isclose(mean([1, 2, "3"]), 2.0)
