"""``smooth`` (randomized smoothing): the seeded Gaussian noise, its registration and contract, and the
certified-radius attack test: L2 PGD on the smoothed classifier's noisy-average loss, inside each trial's certified
radius (0.8·R), flips no smoothed prediction (while the same attack at three times the radius does)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_core.compose.factories import build_defenses
from sec4sr_core.sdk import ParameterError
from sec4sr_core.study.certify import SmoothedSystem, certify, defended_or_smoothed, split_smoothing
from sec4sr_core.testing import check_registered, tiny_system, waves
from sec4sr_plugins_defenses.smoothing import Smooth

from .helpers import speechlike


def test_registered_and_contract():
    check_registered("defense", "smooth", {"sigma": 0.002, "n": 4})
    d = build_defenses("smooth:sigma=0.01,n=7,batch=3")[0]
    assert isinstance(d, Smooth) and d.randomized and d.smoothing
    assert (d.smoothing_sigma, d.smoothing_n, d.smoothing_batch) == (0.01, 7, 3)
    assert d.label() == "smooth:sigma=0.01,n=7,batch=3"


@pytest.mark.parametrize("bad", ["smooth:sigma=0", "smooth:sigma=2", "smooth:n=0", "smooth:batch=0"])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ParameterError):
        build_defenses(bad)


def test_noise_is_gaussian_with_std_sigma(device):
    d = Smooth(sigma=0.01)
    d.seed(3, device)
    x = speechlike(4, 16000, device=device)
    y = d(x)
    assert y.shape == x.shape and y.device == x.device and y.dtype == x.dtype
    noise = (y - x).double().flatten()
    assert abs(float(noise.std()) - 0.01) < 3e-4 and abs(float(noise.mean())) < 3e-4
    # the noise does not depend on the signal: a second batch seeded alike gets the same draws
    d.seed(3, device)
    assert torch.allclose(d(0.5 * x) - 0.5 * x, y - x, atol=1e-6)


def test_snr_mode_scales_noise_per_utterance():
    x = speechlike(2, 16000) * torch.tensor([1.0, 0.1]).view(2, 1, 1)
    d = Smooth(snr_db=20.0)
    assert d.smoothing_sigma is None
    d.seed(0)
    noise = (d(x) - x).double()
    rms = x.double().pow(2).mean(dim=(1, 2)).sqrt()
    assert torch.allclose(noise.std(dim=(1, 2)), rms * 10 ** (-20 / 20), rtol=0.03)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), sigma=st.floats(1e-4, 1.0))
def test_seeded_draws_are_reproducible_and_stay_in_range(seed, sigma):
    x = waves(2, 0.05, seed=1)
    d = Smooth(sigma=sigma)
    d.seed(seed)
    a = d(x)
    d.seed(seed)
    assert torch.equal(a, d(x))
    assert float(a.abs().max()) <= 1.0
    d.seed(seed + 1)
    assert not torch.equal(a, d(x))


def test_chain_with_smooth_becomes_a_smoothed_system():
    system = tiny_system("osi")
    defended = defended_or_smoothed(system, build_defenses("smooth:sigma=0.001,n=16+as"))
    assert isinstance(defended, SmoothedSystem) and defended.randomized
    assert defended.label() == "smooth:sigma=0.001,n=16+as" and [d.name for d in defended.base.defenses] == ["as"]
    x = waves(3, 0.25, seed=101)
    defended.seed(0)
    scores = defended(x)
    assert scores.shape == (3, 4)
    defended.seed(0)
    assert torch.equal(defended.decide(scores), defended.predict(x))  # vote scores decide as the majority does
    with pytest.raises(ParameterError, match="at most one smoothing"):
        split_smoothing(build_defenses("smooth+smooth"))


def _pgd_l2(smoothed: SmoothedSystem, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, steps: int = 10,
            copies: int = 16) -> torch.Tensor:
    """L2 PGD against the smoothed classifier: ascend the cross-entropy of the base scores averaged over ``copies``
    Gaussian copies (the SmoothAdv loss of Salman et al. 2019), project onto each row's ball of radius ``eps``."""
    smoothed.smooth.seed(7)
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        rep = (x + delta).repeat_interleave(copies, 0)
        scores = smoothed.base(smoothed.smooth(rep))
        loss = torch.nn.functional.cross_entropy(30 * scores, y.repeat_interleave(copies))
        (g,) = torch.autograd.grad(loss, delta)
        g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        with torch.no_grad():
            delta += 2.5 * eps.view(-1, 1, 1) / steps * g
            norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1)
            delta *= torch.clamp(eps.view(-1, 1, 1) / norm.clamp_min(1e-12), max=1.0)
    assert bool((delta.detach().flatten(1).norm(dim=1) <= eps * (1 + 1e-5)).all())
    return (x + delta).detach()


def test_pgd_inside_the_certified_radius_flips_no_certified_trial():
    torch.manual_seed(0)
    system = tiny_system("csi-e")
    smooth, rest = split_smoothing(build_defenses("smooth:sigma=0.001,n=300,batch=1000"))
    smoothed = SmoothedSystem(system, smooth, rest)
    x = waves(6, 0.25, seed=101)
    certs = certify(smoothed, x, None, n0=20, n=300, alpha=0.001, seeds=list(range(6)))
    keep = [i for i, c in enumerate(certs) if not c.abstained]
    assert len(keep) >= 4
    x = x[keep]
    pred = torch.tensor([certs[i].prediction for i in keep])
    radius = torch.tensor([certs[i].radius for i in keep])
    assert bool((radius > 0).all())
    # inside 0.8·R the top class keeps probability >= Φ(0.2·Φ⁻¹(p̲)) >= 0.65 under the noise (Cohen et al.,
    # Theorem 1; p̲ <= 0.977 with 300 votes), so 400 votes find it with a margin of > 6 standard deviations
    inside = smoothed.predict(_pgd_l2(smoothed, x, pred, 0.8 * radius), n=400)
    assert torch.equal(inside, pred), "a perturbation inside the certified radius changed the smoothed prediction"
    # the attack is not toothless: at three times the certified radius it does flip smoothed predictions
    outside = smoothed.predict(_pgd_l2(smoothed, x, pred, 3.0 * radius), n=400)
    assert int((outside != pred).sum()) >= 1


def test_gradient_of_the_smoothed_system_is_the_noisy_average():
    system = tiny_system("csi-e")
    smoothed = defended_or_smoothed(system, build_defenses("smooth:sigma=0.001,n=32"))
    x = waves(2, 0.25, seed=101).requires_grad_(True)
    smoothed.seed(0)
    with torch.no_grad():
        plain = smoothed(x)
    smoothed.seed(0)
    scores = smoothed(x)
    assert torch.allclose(scores.detach(), plain)
    (g,) = torch.autograd.grad(scores[:, 0].sum(), x)
    assert math.isfinite(float(g.abs().sum())) and float(g.abs().sum()) > 0
