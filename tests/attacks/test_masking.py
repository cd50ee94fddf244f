"""The psychoacoustic (frequency-masking) attack: the masking threshold against an independent per-frame numpy
implementation of the model, the perturbation's PSD under the threshold (tolerance stated below), the L∞ cap, and
PESQ/STOI against an L∞ PGD of equal success."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.testing import tiny_system, waves
from sec4sr_plugins_attacks.psychoacoustic import (
    bark, masking_excess, masking_penalty, masking_threshold, perturbation_psd, project_to_threshold,
    quiet_threshold,
)

#: the tolerance of the penalty: on successful utterances, at most this mean fraction of frame × bin cells lie above
#: θ_x (the L∞ PGD of equal success leaves ≥ 4× more), and the per-frame relative excess stays below 1 %
BIN_TOLERANCE = 0.06
RELATIVE_TOLERANCE = 0.01


def reference_threshold(psd_db: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """θ (K,) in linear power of one frame's PSD (K,) in dB: plain loops over bins and maskers (MPEG-1 model 1 as
    in Qin et al.: tonal maskers = local maxima above the ATH, strongest within 0.5 Bark, two-slope spreading)."""
    k = len(psd_db)
    z = 13 * np.arctan(0.00076 * freqs) + 3.5 * np.arctan((freqs / 7500.0) ** 2)
    ath = np.full(k, -np.inf)
    for i in range(k):
        if z[i] > 1:
            f = freqs[i] / 1000
            ath[i] = 3.64 * f ** -0.8 - 6.5 * math.exp(-0.6 * (f - 3.3) ** 2) + 0.001 * f ** 4 - 12
    cands = []
    for i in range(1, k - 1):
        if psd_db[i] > psd_db[i - 1] and psd_db[i] > psd_db[i + 1]:
            p = 10 * math.log10(sum(10 ** (psd_db[j] / 10) for j in (i - 1, i, i + 1)))
            if p >= ath[i]:
                cands.append((i, p))
    maskers = []
    for i, p in cands:
        beaten = any(abs(z[j] - z[i]) < 0.5 and (q > p or (q == p and j < i)) for j, q in cands if j != i)
        if not beaten:
            maskers.append((i, p))
    theta = np.array([10 ** (a / 10) if np.isfinite(a) else 0.0 for a in ath])
    for i, p in maskers:
        for j in range(k):
            dz = z[j] - z[i]
            sf = (-27 + 0.37 * max(p - 40, 0)) * dz if dz > 0 else 27 * dz
            theta[j] += 10 ** ((p - 6.025 - 0.275 * z[i] + sf) / 10)
    return theta


def test_masking_threshold_matches_the_reference_loops():
    x = waves(2, 0.1, seed=21)
    theta, psd_max = masking_threshold(x, 512)
    win = torch.hann_window(512, dtype=torch.float64)
    zz = torch.stft(x[:, 0].double(), 512, 128, window=win, center=True, pad_mode="constant",
                    return_complex=True) * (math.sqrt(8 / 3) / 512)
    power = (zz.abs() ** 2).numpy()
    freqs = np.linspace(0, 8000, 257)
    for b in range(2):
        psd = 10 * np.log10(power[b] + 1e-20)
        psd = 96 - psd.max() + psd
        assert psd_max[b].item() == pytest.approx(power[b].max())
        for f in (0, 3, power.shape[2] // 2, power.shape[2] - 1):
            np.testing.assert_allclose(theta[b, :, f].numpy(), reference_threshold(psd[:, f], freqs), rtol=1e-9)


def test_bark_and_quiet_threshold_known_values():
    assert float(bark(torch.tensor(1000.0))) == pytest.approx(8.51, abs=0.01)
    assert float(quiet_threshold(torch.tensor(1000.0))) == pytest.approx(3.64 - 6.5 * math.exp(-0.6 * 2.3 ** 2) - 11.999,
                                                                           abs=1e-3)


def test_the_penalty_is_zero_under_the_threshold_and_positive_above():
    x = waves(2, 0.25, seed=22)
    theta, psd_max = masking_threshold(x)
    small = 1e-6 * waves(2, 0.25, seed=23)
    assert torch.all(masking_penalty(small.double(), theta, psd_max) == 0)
    assert torch.all(masking_penalty((0.05 * x).double(), theta, psd_max) > 0)
    # the STFT-domain clip brings a loud perturbation (nearly) under the threshold
    g = torch.Generator().manual_seed(0)
    noise = 0.01 * torch.randn(x.shape, generator=g)
    clipped = noise
    for _ in range(3):
        clipped = project_to_threshold(clipped, theta, psd_max)
    before = (perturbation_psd(noise.double(), psd_max) > theta).double().mean()
    after = (perturbation_psd(clipped.double(), psd_max) > theta).double().mean()
    assert float(after) < 0.3 * float(before)  # not to 0: the inverse STFT of a clipped STFT is not consistent


@pytest.fixture(scope="module")
def crafted():
    """Masking attack and L∞ PGD on the same 8 trials (both reach 100 % success: equal success)."""
    reg = get_registry()
    system = tiny_system("csi-e", seconds=0.5)
    x = waves(8, 0.5, seed=7)
    masking = reg.build("attack", "masking:steps=40")
    pgd = reg.build("attack", "pgd:steps=10,epsilon=0.002,step_size=0.0004")
    adv_m, adv_p = masking(system, x), pgd(system, x)
    return x, adv_m, masking.last_result, adv_p, pgd.last_result


def test_masking_perturbation_stays_under_the_threshold(crafted):
    x, adv_m, res_m, adv_p, res_p = crafted
    assert bool(res_m.success.all()) and bool(res_p.success.all())
    em, ep = masking_excess(x, adv_m), masking_excess(x, adv_p)
    assert float(em["bins"].mean()) <= BIN_TOLERANCE
    assert float(em["relative"].max()) <= RELATIVE_TOLERANCE
    assert float(ep["bins"].mean()) >= 4 * float(em["bins"].mean())
    assert float((adv_m - x).abs().max()) <= 0.01 + 1e-6  # the L∞ cap
    assert torch.allclose(res_m.extra["masking_penalty"], em["relative"].double().to(res_m.extra["masking_penalty"].dtype),
                          atol=1e-4)


def test_masking_is_more_intelligible_than_linf_pgd_at_equal_success(crafted):
    x, adv_m, res_m, adv_p, res_p = crafted
    reg = get_registry()
    stoi, pesq = reg.build("metric", "stoi"), reg.build("metric", "pesq")
    assert np.mean(stoi.compute(x, adv_m)) > np.mean(stoi.compute(x, adv_p))
    assert np.mean(pesq.compute(x, adv_m)) >= np.mean(pesq.compute(x, adv_p)) - 0.05


def test_masking_is_deterministic_and_batched():
    reg = get_registry()
    system = tiny_system("csi-e")
    x = waves(3, 0.25, seed=9)
    a = reg.build("attack", "masking:steps=5")
    one = a(system, x)
    again = a(system, x)
    assert torch.equal(one, again)
    part = reg.build("attack", "masking:steps=5")(system, x[1:2])
    assert torch.allclose(one[1:2], part, atol=1e-6)
