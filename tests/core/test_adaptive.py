"""BPDA, EOT, NES, oracles (knowledge and query counting), defense chains and decision rules.

All on the toy backbone of :mod:`helpers` (milliseconds), so each property is checked exactly.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_core.sdk.adaptive import BPDA, SpectralPrior, eot_loss_and_grad, nes_gradient, probe_sampler, repeat_batch
from sec4sr_core.base.errors import KnowledgeError, ParameterError, Sec4srError
from sec4sr_core.sdk.interfaces import REJECT, Defense, Knowledge, Task
from sec4sr_core.sdk.oracle import DecisionOracle, ScoreOracle, WhiteBoxOracle, make_oracle
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk.system import DefendedSystem, as_defended, decide

from .helpers import Noise, Scale, Shift, toy_system, toy_waves

# ----------------------------------------------------------------------------------------------------------------------
# BPDA
# ----------------------------------------------------------------------------------------------------------------------


def test_bpda_identity_passes_the_upstream_gradient_through_round():
    x = torch.linspace(-2, 2, 50, dtype=torch.float64).reshape(2, 25).requires_grad_(True)
    w = torch.randn(2, 25, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # plain rounding has a zero gradient everywhere: useless to an attacker
    (g_plain,) = torch.autograd.grad((torch.round(x * 3) * w).sum(), x)
    assert torch.count_nonzero(g_plain) == 0
    bpda = BPDA(torch.round)
    y = bpda(x * 3)
    assert torch.equal(y, torch.round(x.detach() * 3))  # forward is the real function
    (g,) = torch.autograd.grad((y * w).sum(), x)
    assert torch.equal(g, 3 * w)  # identity backward: d/dx [round(3x)·w] ≈ 3w
    assert torch.count_nonzero(g) == g.numel()


def test_bpda_with_a_surrogate_uses_the_surrogate_gradient():
    x = torch.linspace(-1, 1, 21, dtype=torch.float64).requires_grad_(True)
    bpda = BPDA(lambda t: torch.round(t * 4) / 4, surrogate=lambda t: t.pow(3))
    y = bpda(x)
    assert torch.equal(y, torch.round(x.detach() * 4) / 4)
    up = torch.arange(21, dtype=torch.float64)
    (g,) = torch.autograd.grad(y, x, up)
    assert torch.allclose(g, 3 * x.detach().pow(2) * up)


def test_bpda_shape_changing_function_needs_a_surrogate():
    x = torch.randn(2, 1, 8, dtype=torch.float64, requires_grad=True)
    down = BPDA(lambda t: t[..., ::2].round(), surrogate=lambda t: t[..., ::2])
    (g,) = torch.autograd.grad(down(x).sum(), x)
    expected = torch.zeros_like(x)
    expected[..., ::2] = 1
    assert torch.equal(g, expected)
    with pytest.raises(ValueError, match="shape-preserving"):
        BPDA(lambda t: t[..., ::2])(x)


def test_bpda_without_gradients_is_just_the_function():
    x = torch.randn(3, 5)
    assert torch.equal(BPDA(torch.round)(x), torch.round(x))
    with torch.no_grad():
        assert torch.equal(BPDA(torch.round)(x.requires_grad_(True)), torch.round(x))


def test_bpda_inside_defended_system_with_qt(toy):
    """The defended system's gradient is the undefended gradient at QT(x): identity backward through QT."""
    qt = get_registry().build("defense", "qt:q=512")
    assert not qt.differentiable
    ds = DefendedSystem(toy, [qt])
    x = toy_waves(3).requires_grad_(True)
    w = torch.randn(3, 3, generator=torch.Generator().manual_seed(1))
    scores = ds(x)
    (g,) = torch.autograd.grad((scores * w).sum(), x)
    xq = qt(x.detach()).requires_grad_(True)
    ref_scores = toy(xq)
    (g_ref,) = torch.autograd.grad((ref_scores * w).sum(), xq)
    assert torch.allclose(scores, ref_scores)
    assert torch.allclose(g, g_ref, atol=1e-6)
    assert float(g.abs().sum()) > 0
    # QT really changed the input, so this is not the gradient at x
    assert not torch.equal(xq, x.detach())


# ----------------------------------------------------------------------------------------------------------------------
# EOT
# ----------------------------------------------------------------------------------------------------------------------


def test_repeat_batch_layout():
    x = torch.arange(6.0).reshape(2, 1, 3)
    r = repeat_batch(x, 3)
    assert r.shape == (6, 1, 3)
    for k in range(3):
        assert torch.equal(r[2 * k : 2 * k + 2], x)


def _randomized_loss(seed: int, s: int = 2):
    """A randomized loss: per-sample noise from a fixed generator, so two evaluations see the same draws."""
    g = torch.Generator().manual_seed(seed)

    def fn(xr: torch.Tensor):
        noise = torch.randn(xr.shape, generator=g, dtype=xr.dtype)
        z = torch.sin(3 * xr * (1 + noise)) + noise
        loss = z.pow(2).flatten(1).sum(dim=1)
        return loss, z.flatten(1)[:, :s]

    return fn


@pytest.mark.parametrize("draws", [1, 4])
def test_eot_gradient_is_the_mean_of_per_draw_gradients(draws):
    b = 3
    x = torch.randn(b, 1, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    loss, grad, scores = eot_loss_and_grad(_randomized_loss(7), x, draws)
    assert loss.shape == (b,) and grad.shape == x.shape and scores.shape == (draws, b, 2)
    assert not grad.requires_grad

    # the same draws, one copy at a time: noise of copy k is rows [k·B, (k+1)·B) of one (draws·B, ...) draw
    g = torch.Generator().manual_seed(7)
    noise = torch.randn((draws * b,) + tuple(x.shape[1:]), generator=g, dtype=x.dtype)
    per_loss, per_grad, per_scores = [], [], []
    for k in range(draws):
        xk = x.clone().requires_grad_(True)
        nk = noise[k * b : (k + 1) * b]
        z = torch.sin(3 * xk * (1 + nk)) + nk
        lk = z.pow(2).flatten(1).sum(dim=1)
        (gk,) = torch.autograd.grad(lk.sum(), xk)
        per_loss.append(lk.detach())
        per_grad.append(gk)
        per_scores.append(z.detach().flatten(1)[:, :2])
    assert torch.allclose(loss, torch.stack(per_loss).mean(0))
    assert torch.allclose(grad, torch.stack(per_grad).mean(0))
    assert torch.allclose(scores, torch.stack(per_scores))
    if draws > 1:  # the draws really differ, so averaging is not trivial
        assert not torch.allclose(per_grad[0], per_grad[1])


def test_whitebox_oracle_eot_averages_a_randomized_defense(toy):
    """With eot draws, the oracle's gradient is the mean of the draws' gradients (same seeded noise stream)."""
    eot, b = 3, 2
    x = toy_waves(b)
    y = torch.tensor([0, 1])

    def loss_fn(s, yy):
        return -torch.nn.functional.cross_entropy(s, yy, reduction="none")

    ds = DefendedSystem(toy, [Noise(sigma=0.2)])
    assert ds.randomized
    oracle = WhiteBoxOracle(ds, n=b, eot=eot, seed=11)
    loss, grad, scores, dec = oracle.loss_and_grad(x, loss_fn, y)
    assert grad.shape == x.shape and scores.shape == (b, 3) and dec.shape == (b,)

    # the oracle seeded the chain's defense 0 with 11·1000 + 0: replay that single (eot·B) draw
    noise = Noise(sigma=0.2)
    noise.seed(11 * 1000 + 0)
    n_all = 0.2 * torch.randn((eot * b, 1, x.shape[-1]), generator=noise.rng(torch.device("cpu")))
    grads, losses = [], []
    for k in range(eot):
        xk = x.clone().requires_grad_(True)
        lk = loss_fn(toy(xk + n_all[k * b : (k + 1) * b]), y)
        (gk,) = torch.autograd.grad(lk.sum(), xk)
        grads.append(gk)
        losses.append(lk.detach())
    assert torch.allclose(grad, torch.stack(grads).mean(0), atol=1e-6)
    assert torch.allclose(loss, torch.stack(losses).mean(0), atol=1e-6)
    assert oracle.queries.tolist() == [eot, eot]


# ----------------------------------------------------------------------------------------------------------------------
# NES
# ----------------------------------------------------------------------------------------------------------------------


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


@pytest.mark.parametrize("kind", ["linear", "quadratic"])
def test_nes_estimate_correlates_with_the_true_gradient(kind):
    g = torch.Generator().manual_seed(0)
    b, t = 3, 64
    x = torch.randn(b, 1, t, dtype=torch.float64, generator=g)
    w = torch.randn(b, 1, t, dtype=torch.float64, generator=g)

    def per_item(xs: torch.Tensor) -> torch.Tensor:
        ww = w.repeat(xs.shape[0] // b, 1, 1)
        lin = (xs * ww).flatten(1).sum(dim=1)
        return lin if kind == "linear" else lin + 0.5 * xs.pow(2).flatten(1).sum(dim=1)

    true = w if kind == "linear" else w + x
    est, mean_loss, loss_x = nes_gradient(per_item, x, samples=2000, sigma=0.01, generator=g, batch=500)
    assert est.shape == x.shape
    assert bool((_cos(est, true) > 0.9).all()), _cos(est, true)
    assert torch.allclose(loss_x, per_item(x))
    # the probes are a tiny σ-ball around x: their mean loss is close to the loss at x
    assert torch.allclose(mean_loss, loss_x, atol=0.05 * float(loss_x.abs().max()) + 0.1)


def test_nes_antithetic_probes_cancel_a_constant_loss():
    x = torch.randn(2, 1, 16, dtype=torch.float64)
    est, mean_loss, loss_x = nes_gradient(lambda xs: torch.full((xs.shape[0],), 7.0, dtype=xs.dtype), x, 8, 0.1,
                                          generator=torch.Generator().manual_seed(0), batch=4)
    assert torch.allclose(est, torch.zeros_like(x), atol=1e-12)
    assert torch.equal(mean_loss, torch.full((2,), 7.0, dtype=torch.float64))
    assert torch.equal(loss_x, mean_loss)


def test_nes_probe_layout_and_zero_probe():
    """First call: the zero probe (x itself) for every item, then the probes [probe0 of all items, ...]."""
    x = torch.arange(6, dtype=torch.float64).reshape(3, 1, 2)
    calls = []

    def record(xs: torch.Tensor) -> torch.Tensor:
        calls.append(xs.clone())
        return xs.flatten(1)[:, 0] * 10

    est, _, loss_x = nes_gradient(record, x, samples=4, sigma=0.5, generator=torch.Generator().manual_seed(3), batch=2)
    assert [c.shape[0] for c in calls] == [3 * 3, 3 * 2]  # (1 + batch)·B, then batch·B
    assert torch.equal(calls[0][:3], x)
    assert torch.equal(loss_x, x[:, 0, 0] * 10)
    # antithetic pairs inside each call: probe k and probe k + batch/2 are mirror images around x
    first = calls[0][3:].view(2, 3, 1, 2)
    assert torch.allclose(first[0] - x, -(first[1] - x))
    # the estimate is ĝ = Σ_k loss(x + σu_k)·u_k / (samples·σ), recomputed from the recorded probes
    probes = torch.cat([calls[0][3:], calls[1]]).view(4, 3, 1, 2)
    u = (probes - x) / 0.5
    losses = probes[..., 0, 0] * 10
    ref = (losses.view(4, 3, 1, 1) * u).sum(0) / (4 * 0.5)
    assert torch.allclose(est, ref)
    # antithetic pairs cancel the constant part of a linear loss: only the x0 direction carries signal
    assert torch.allclose(est[:, 0, 1], (20 / 4) * (u[[0, 2], :, 0, 0] * u[[0, 2], :, 0, 1]).sum(0))


def test_nes_is_deterministic_under_its_generator_and_validates_samples():
    x = torch.randn(2, 1, 8)

    def f(xs):
        return xs.pow(2).flatten(1).sum(1)

    a = nes_gradient(f, x, 8, 0.1, generator=torch.Generator().manual_seed(1))[0]
    b = nes_gradient(f, x, 8, 0.1, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(a, b)
    for samples, batch in [(3, None), (0, None), (8, 3), (8, 6)]:
        with pytest.raises(ValueError):
            nes_gradient(f, x, samples, 0.1, batch=batch)


def _speechlike(b: int, t: int, seed: int) -> torch.Tensor:
    """Bursty harmonic waveforms (B, 1, T): voiced segments of different pitch separated by near-silence."""
    g = torch.Generator().manual_seed(seed)
    n = torch.arange(t, dtype=torch.float64) / 16000
    f0 = 100 + 150 * torch.rand(b, 1, generator=g, dtype=torch.float64)
    voiced = sum(torch.sin(2 * torch.pi * k * f0 * n) / k for k in range(1, 8))
    env = (torch.sin(2 * torch.pi * 3 * n + 6 * torch.rand(b, 1, generator=g, dtype=torch.float64)) > 0).double()
    return (0.1 * voiced * (0.02 + env)).unsqueeze(1)


def test_spectral_prior_probes_shape_scale_determinism_and_validation():
    x = _speechlike(3, 4000, 0)
    prior = SpectralPrior()
    a = prior(x, 5, torch.Generator().manual_seed(2))
    b = prior(x, 5, torch.Generator().manual_seed(2))
    c = prior(x, 5, torch.Generator().manual_seed(3))
    assert a.shape == (5, 3, 1, 4000) and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a.pow(2).mean(dim=-1), torch.ones(5, 3, 1, dtype=x.dtype))  # unit RMS per probe
    # the probes follow the signal: (almost) no energy where the reference is near-silent
    quiet = (x.abs() < 0.01).expand_as(a)
    assert a[quiet].pow(2).mean() < 0.05 * a[~quiet].pow(2).mean()
    for bad in [dict(bands=0), dict(frames_per_gain=0), dict(hop=500)]:
        with pytest.raises(ValueError):
            SpectralPrior(**bad)
    assert probe_sampler("white") is None
    assert probe_sampler("spectral").log is False and probe_sampler("spectral-log").log is True
    with pytest.raises(ValueError):
        probe_sampler("pink")


@pytest.mark.parametrize("log", [False, True])
def test_nes_with_the_spectral_prior_beats_white_probes_on_a_mel_loss(log):
    """A mel-power loss has the gradient istft(STFT(x)·G), a log-mel loss istft(STFT(x)·G/M): at the same budget
    the matching spectral probes align better with it than white ones."""
    import torchaudio

    x = _speechlike(4, 8000, 1)
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=40).double()
    w = torch.randn(40, 51, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def loss(xs: torch.Tensor) -> torch.Tensor:
        m = mel(xs[:, 0])
        return ((torch.log(m + 1e-6) if log else m) * w).flatten(1).sum(dim=1)

    xg = x.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(loss(xg).sum(), xg)
    cos = {}
    for name, sampler in [("white", None), ("spectral", SpectralPrior(log=log))]:
        est, _, _ = nes_gradient(loss, x, 40, 1e-4, generator=torch.Generator().manual_seed(0), sampler=sampler)
        cos[name] = _cos(est, true)
    assert bool((cos["spectral"] > 0).all()), cos
    assert float(cos["spectral"].mean()) > 2 * float(cos["white"].mean()), cos


# ----------------------------------------------------------------------------------------------------------------------
# Oracles
# ----------------------------------------------------------------------------------------------------------------------


def test_decision_oracle_refuses_scores_gradients_and_threshold():
    ds = as_defended(toy_system("sv", threshold=0.1))
    o = make_oracle(ds, Knowledge.DECISIONS, n=2, claims=torch.tensor([0, 1]))
    assert isinstance(o, DecisionOracle)
    x = toy_waves(2)
    assert o.decisions(x).shape == (2,)
    with pytest.raises(KnowledgeError, match="scores"):
        o.scores(x)
    with pytest.raises(KnowledgeError, match="scores"):
        o.scores_and_decisions(x)
    with pytest.raises(KnowledgeError, match="gradients"):
        o.loss_and_grad(x, lambda s, y: s[:, 0], torch.zeros(2))
    with pytest.raises(KnowledgeError, match="threshold"):
        _ = o.threshold
    # an estimated threshold may be given to a black-box attack
    est = make_oracle(ds, Knowledge.DECISIONS, n=2, claims=torch.tensor([0, 1]), estimated_threshold=0.3)
    assert est.threshold == 0.3


def test_score_oracle_refuses_gradients_but_gives_scores(toy):
    o = make_oracle(as_defended(toy), Knowledge.SCORES, n=2)
    assert isinstance(o, ScoreOracle) and not isinstance(o, WhiteBoxOracle)
    x = toy_waves(2)
    s, d = o.scores_and_decisions(x)
    assert torch.allclose(s, toy(x)) and torch.equal(d, toy(x).argmax(1))
    with pytest.raises(KnowledgeError, match="gradients"):
        o.loss_and_grad(x, lambda s, y: s[:, 0], torch.zeros(2, dtype=torch.long))
    assert o.threshold is None  # CSI has no threshold to hide


def test_whitebox_oracle_reads_the_real_threshold():
    o = make_oracle(as_defended(toy_system("osi", threshold=0.25)), Knowledge.WHITE_BOX, n=1)
    assert o.threshold == 0.25


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.lists(st.integers(0, 3), min_size=1, max_size=9))
def test_queries_are_counted_per_owner_times_eot(n, eot, owners):
    owners = [o % n for o in owners]
    system = as_defended(toy_system())
    o = make_oracle(system, Knowledge.WHITE_BOX, n=n, eot=eot)
    x = toy_waves(len(owners))
    o.decisions(x, owners=torch.tensor(owners))
    expected = torch.bincount(torch.tensor(owners), minlength=n) * eot
    assert o.queries.tolist() == expected.tolist()
    o.scores(x, owners=torch.tensor(owners))
    o.loss_and_grad(x, lambda s, y: s.max(1).values, torch.zeros(len(owners), dtype=torch.long),
                    owners=torch.tensor(owners))
    assert o.queries.tolist() == (3 * expected).tolist()


def test_default_owners_follow_the_repeated_batch_layout(toy):
    o = make_oracle(as_defended(toy), Knowledge.SCORES, n=2, eot=2)
    o.scores(repeat_batch(toy_waves(2), 3))  # 6 probes: [u0, u1, u0, u1, u0, u1]
    assert o.queries.tolist() == [6, 6]


def test_sv_oracle_passes_each_probes_claim():
    system = as_defended(toy_system("sv", threshold=0.0))
    x = toy_waves(2)
    o = make_oracle(system, Knowledge.SCORES, n=2, claims=torch.tensor([2, 0]))
    s = o.scores(repeat_batch(x, 2))
    full = system.system.model.score(system.system.model.embed(x), system.system.enrolled)
    assert s.shape == (4, 1)
    assert torch.allclose(s[:2, 0], torch.stack([full[0, 2], full[1, 0]]))
    assert torch.allclose(s[2:], s[:2])


# ----------------------------------------------------------------------------------------------------------------------
# Defense chains
# ----------------------------------------------------------------------------------------------------------------------

LOG: list[str] = []


class Tag(Scale):
    """Records its application order in ``LOG`` (a Scale with factor 1 unless given)."""

    name = "toy-tag"

    def __init__(self, tag: str, **kw):
        super().__init__(**kw)
        self.tag = tag

    def forward(self, x):
        LOG.append(self.tag)
        return super().forward(x)


def test_sequential_chain_runs_in_level_order_keeping_same_level_order(toy):
    chain = [Tag("final-1", level="final", factor=1.0), Tag("wave-1", factor=1.0),
             Tag("frames-1", level="frames", factor=1.0), Tag("wave-2", factor=1.0), Tag("final-2", level="final", factor=1.0)]
    ds = DefendedSystem(toy, chain)
    LOG.clear()
    ds(toy_waves(1))
    assert LOG == ["wave-1", "wave-2", "frames-1", "final-1", "final-2"]
    assert ds.label().split("+")[:2] == ["toy-tag:factor=1.0,level=final", "toy-tag:factor=1.0"]  # as given


def test_sequential_chain_composes_the_transformations(toy):
    """Scale then Shift at the wave level, and a Scale at the final level, equal the hand-composed pipeline."""
    x = toy_waves(2)
    ds = DefendedSystem(toy, [Scale(factor=0.5, level="final"), Shift(offset=0.1), Scale(factor=2.0)])
    m = toy.model
    final = m.to_level((x + 0.1) * 2.0, "wave", "final") * 0.5
    assert torch.allclose(ds(x), toy.scores_from(final, "final"))


def test_average_mode_gradient_is_the_mean_of_branch_gradients(toy):
    """The predecessor accumulated branches in place, so only the first branch had a gradient."""
    defenses = [Scale(factor=0.5), Shift(offset=0.2, level="frames"), Scale(factor=-1.5, level="final")]
    x = toy_waves(2, seed=3)
    w = torch.randn(2, 3, generator=torch.Generator().manual_seed(4))

    def grad_of(system):
        xx = x.clone().requires_grad_(True)
        s = system(xx)
        (g,) = torch.autograd.grad((s * w).sum(), xx)
        return s.detach(), g

    s_avg, g_avg = grad_of(DefendedSystem(toy, defenses, order="average"))
    branches = [grad_of(DefendedSystem(toy, [d])) for d in defenses]
    assert torch.allclose(s_avg, torch.stack([s for s, _ in branches]).mean(0), atol=1e-6)
    assert torch.allclose(g_avg, torch.stack([g for _, g in branches]).mean(0), atol=1e-6)
    # every branch contributes: dropping any one changes the gradient
    for i in range(len(branches)):
        assert not torch.allclose(g_avg, branches[i][1], atol=1e-6)
    assert DefendedSystem(toy, defenses, order="average").label() == "toy-scale|toy-shift:offset=0.2,level=frames|toy-scale:factor=-1.5,level=final"


def test_chain_validation_errors(toy):
    with pytest.raises(ParameterError, match="level 'mfcc'.*levels: wave, frames, final"):
        DefendedSystem(toy, [Scale(level="mfcc")])
    with pytest.raises(ParameterError, match="cannot act on level 'frames'"):
        DefendedSystem(toy, [_wave_only("frames")])
    with pytest.raises(ParameterError, match="order"):
        DefendedSystem(toy, [], order="parallel")


def _wave_only(level: str) -> Defense:
    d = Noise()
    d.level = level
    return d


def test_undefended_and_randomized_flags(toy):
    x = toy_waves(2)
    assert torch.equal(DefendedSystem(toy)(x), toy(x))
    assert DefendedSystem(toy).label() == "none"
    ds = DefendedSystem(toy, [Noise(), Scale()])
    assert ds.randomized and ds.differentiable
    ds.seed(5)
    a = ds(x)
    ds.seed(5)
    assert torch.equal(a, ds(x))  # seeded randomness is reproducible
    assert not torch.equal(a, ds(x))  # ... and really random


# ----------------------------------------------------------------------------------------------------------------------
# Decisions
# ----------------------------------------------------------------------------------------------------------------------


def test_decide_threshold_zero_is_a_threshold_and_strict():
    """The predecessor treated threshold 0.0 as "no threshold" (accepting everything)."""
    s = torch.tensor([[0.0], [1e-6], [-1e-6], [-3.0]])
    assert decide(s, Task.SV, 0.0).tolist() == [REJECT, 0, REJECT, REJECT]
    osi = torch.tensor([[0.0, -0.5], [0.2, 0.3], [-0.1, -0.2]])
    assert decide(osi, Task.OSI, 0.0).tolist() == [REJECT, 1, REJECT]
    assert decide(osi, Task.OSI, 0.3).tolist() == [REJECT, REJECT, REJECT]  # equal to θ is rejected
    assert decide(osi, Task.OSI, -1.0).tolist() == [0, 1, 0]


def test_decide_csi_ignores_thresholds_and_sv_osi_need_one():
    s = torch.tensor([[0.1, 0.9, 0.3], [-5.0, -6.0, -7.0]])
    for task in (Task.CSI_E, Task.CSI_NE):
        assert decide(s, task, None).tolist() == [1, 0]
        assert decide(s, task, 100.0).tolist() == [1, 0]
    for task in (Task.SV, Task.OSI):
        with pytest.raises(Sec4srError, match="threshold"):
            decide(s[:, :1], task, None)
    with pytest.raises(ValueError):
        decide(torch.zeros(3), Task.CSI_E, None)
    assert decide(s, Task.CSI_E, None).dtype == torch.int64


def test_system_decide_uses_its_own_threshold():
    sys_sv = toy_system("sv", threshold=0.0)
    assert sys_sv.decide(torch.tensor([[0.0], [0.5]])).tolist() == [REJECT, 0]
    assert as_defended(sys_sv).decide(torch.tensor([[0.0], [0.5]])).tolist() == [REJECT, 0]
