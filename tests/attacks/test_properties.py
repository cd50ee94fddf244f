"""Invariants of every attack on a tiny differentiable system: the ε-ball and [-1, 1], the L2 radius, knowledge
enforcement, determinism under the seed, query budgets, result shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sec4sr_core
from sec4sr_core.base.errors import KnowledgeError, ParameterError
from sec4sr_core.compose.crafting import provide_crafting
from sec4sr_core.sdk.interfaces import Knowledge
from sec4sr_core.sdk.oracle import make_oracle

from .conftest import speech_like, toy_system

LINF = {
    "fgsm": {},
    "pgd": {"steps": 3, "restarts": 2},
    "cwinf": {"steps": 3},
    "apgd": {"steps": 4},
    "pgd-nes": {"steps": 2, "samples": 4, "samples_batch": 4},
    "fakebob": {"max_iter": 3, "samples": 4, "samples_batch": 4},
    "siren": {"max_epoch": 2, "max_iter": 2, "n_particles": 3},
    "square": {"max_iter": 5},
}
ALL = {**LINF, "cw2": {"max_iter": 5, "binary_search_steps": 2}, "kenan": {"max_iter": 3},
       "hsja": {"iterations": 1, "init_evals": 4, "max_evals": 4, "probe_batch": 4, "search_steps": 4}}


def loud(name, params, eps=0.05):
    """``params`` with a larger ε where the attack has one (the toy system needs more than 0.002)."""
    fields = type(sec4sr_core.attack(name)).Params.model_fields
    out = {**params, "epsilon": eps} if "epsilon" in fields else dict(params)
    if "max_lr" in fields:
        out.update(max_lr=eps / 4, max_iter=6)
    if name == "pgd-nes":
        out.update(step_size=eps / 3, steps=4)
    return out


def run(system, name, params, x, y, targeted=False, seed=0, eot=1):
    """Build ``name`` and run it as the study does: crafting data (UAP) from the core, then ``run``."""
    atk = sec4sr_core.attack(name, **params)
    provide_crafting(atk, length=x.shape[-1])
    oracle = make_oracle(system, atk.knowledge, n=x.shape[0], eot=eot, seed=seed)
    return atk, oracle, atk.run(oracle, x, y, targeted=targeted)


@pytest.mark.parametrize("name", sorted(LINF))
@settings(max_examples=3, deadline=None)
@given(eps=st.floats(1e-4, 0.05), loud=st.booleans(), seed=st.integers(0, 2**16))
def test_linf_attack_stays_in_ball_and_range(toy, name, eps, loud, seed):
    x = speech_like(3, seed=seed)
    if loud:  # push samples to the [-1, 1] edges so the box clips
        x = (x * 4).clamp(-1, 1)
    with torch.no_grad():
        y = toy.decide(toy(x))
    _, _, r = run(toy, name, {**LINF[name], "epsilon": eps}, x, y, seed=seed)
    assert r.adv.shape == x.shape
    assert float((r.adv - x).abs().max()) <= eps + 1e-6
    assert float(r.adv.abs().max()) <= 1.0


@settings(max_examples=4, deadline=None)
@given(radius=st.floats(1e-3, 2.0), restarts=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_l2_pgd_respects_radius(toy, radius, restarts, seed):
    x = (speech_like(3, seed=seed) * 3).clamp(-1, 1)
    with torch.no_grad():
        y = toy.decide(toy(x))
    _, _, r = run(toy, "pgd", {"norm": "l2", "epsilon": radius, "step_size": radius / 3, "steps": 3,
                               "restarts": restarts}, x, y, seed=seed)
    assert float((r.adv - x).flatten(1).norm(dim=1).max()) <= radius * (1 + 1e-5)
    assert float(r.adv.abs().max()) <= 1.0


@pytest.mark.parametrize("name", sorted(ALL))
def test_same_seed_same_adversarial_examples(toy, toy_batch, name):
    x, y = toy_batch
    _, _, a = run(toy, name, ALL[name], x, y, seed=7)
    _, _, b = run(toy, name, ALL[name], x, y, seed=7)
    assert torch.equal(a.adv, b.adv)
    assert torch.equal(a.decisions, b.decisions) and torch.equal(a.queries, b.queries)


@pytest.mark.parametrize("name", sorted(ALL))
def test_result_fields_and_reported_decisions(toy, toy_batch, name):
    x, y = toy_batch
    _, _, r = run(toy, name, ALL[name], x, y)
    n = x.shape[0]
    assert r.success.shape == (n,) and r.success.dtype == torch.bool
    assert r.queries.shape == (n,) and bool((r.queries > 0).all())
    with torch.no_grad():
        actual = toy.decide(toy(r.adv))
    # the reported decision is the system's decision on the returned waveform
    assert torch.equal(r.decisions, actual)
    assert torch.equal(r.success, actual != y)


@pytest.mark.parametrize("name,knowledge", [
    ("fakebob", Knowledge.SCORES), ("siren", Knowledge.SCORES), ("square", Knowledge.SCORES),
    ("pgd-nes", Knowledge.SCORES), ("kenan", Knowledge.DECISIONS), ("hsja", Knowledge.DECISIONS),
])
def test_black_box_attacks_run_on_their_oracle_only(toy, toy_batch, name, knowledge):
    x, y = toy_batch
    atk, oracle, r = run(toy, name, loud(name, ALL[name]), x, y)
    assert atk.knowledge == knowledge and type(oracle).knowledge == knowledge
    with pytest.raises(KnowledgeError):
        oracle.loss_and_grad(x, lambda s, yy: s.sum(1), y)
    if knowledge == Knowledge.DECISIONS:
        with pytest.raises(KnowledgeError):
            oracle.scores(x)
    assert bool((r.success).any())


@pytest.mark.parametrize("name,params,cost", [
    ("fakebob", {"max_iter": 50, "samples": 4, "samples_batch": 2, "max_queries": 23}, 6),
    ("square", {"max_iter": 100, "max_queries": 17}, 1),
    ("siren", {"max_epoch": 5, "max_iter": 5, "n_particles": 3, "max_queries": 20}, 4),
    ("hsja", {"iterations": 5, "init_evals": 4, "probe_batch": 4, "max_queries": 40}, 40),
])
def test_query_budget_is_honoured(toy, name, params, cost):
    x = speech_like(3, seed=11)
    with torch.no_grad():
        y = toy.decide(toy(x))
    _, _, r = run(toy, name, params, x, y, targeted=False)
    # an utterance may start a round it can afford; it never exceeds the budget by a whole round
    assert int(r.queries.max()) <= params["max_queries"] + cost


def test_eot_draws_are_counted(toy, toy_batch):
    x, y = toy_batch
    _, _, one = run(toy, "pgd", {"steps": 2}, x, y)
    _, _, four = run(toy, "pgd", {"steps": 2}, x, y, eot=4)
    assert torch.equal(four.queries, one.queries * 4)


def test_pgd_keeps_the_best_per_utterance(toy, toy_batch):
    x, y = toy_batch
    _, _, r = run(toy, "pgd", {"steps": 10, "epsilon": 0.05, "step_size": 0.01, "loss": "margin"}, x, y)
    assert bool(r.success.all())


def test_kenan_fft_odd_length_and_targeted_direction(toy):
    x = speech_like(4, seed=5, t=1601)
    with torch.no_grad():
        dec = toy.decide(toy(x))
    target = (dec + 1) % 4
    _, _, r = run(toy, "kenan", {"max_iter": 8}, x, target, targeted=True)
    assert r.adv.shape == x.shape
    # every reported success is a targeted success, and the search only accepts targeted successes
    assert torch.equal(r.success, r.decisions == target)
    _, _, s = run(toy, "kenan", {"max_iter": 4, "mode": "ssa"}, x, target, targeted=True)
    assert torch.equal(s.success, s.decisions == target)


def test_cw2_succeeds_with_small_distortion(toy, toy_batch):
    x, y = toy_batch
    _, _, r = run(toy, "cw2", {"max_iter": 15, "binary_search_steps": 2, "initial_const": 10.0, "lr": 0.005},
                  x, y)
    assert bool(r.success.all())
    assert bool(r.extra["kappa_met"].all())


def test_invalid_parameters_and_labels_are_one_line_errors(toy, toy_batch):
    x, y = toy_batch
    with pytest.raises(ParameterError):
        sec4sr_core.attack("pgd", epsilon=-1)
    with pytest.raises(ParameterError):
        sec4sr_core.attack("fakebob", samples=10, samples_batch=4)
    with pytest.raises(ParameterError):
        run(toy, "pgd", {"steps": 1}, x, torch.full_like(y, 9))


@pytest.mark.parametrize("task", ["sv", "osi"])
def test_threshold_estimate_brackets_the_real_one(task):
    system = toy_system(task)
    x = speech_like(8, seed=21)
    claims = torch.zeros(8, dtype=torch.long)
    from sec4sr_plugins_attacks.common import estimate_threshold

    oracle = make_oracle(system, Knowledge.SCORES, n=8, claims=claims if task == "sv" else None)
    with pytest.raises(KnowledgeError):
        _ = oracle.threshold
    est, info = estimate_threshold(oracle, x, epsilon=0.05, max_iter=4, samples=4, lr=0.01)
    real = system.threshold
    assert info["iterations"] <= 4
    assert info["lo"] <= real < info["hi"] or info["hi"] == float("inf") or info["lo"] == float("-inf")
    if info["hi"] < float("inf") and info["lo"] > float("-inf"):
        assert abs(est - real) <= (info["hi"] - info["lo"]) / 2 + 1e-9
    # bounded: one look at the batch plus (samples + 1) probes per iteration and utterance
    assert int(oracle.queries.max()) <= 1 + 4 * 5


@pytest.mark.parametrize("task", ["sv", "osi"])
@pytest.mark.parametrize("name", ["fakebob", "siren", "square"])
def test_black_box_attacks_work_on_sv_osi_with_estimated_threshold(task, name):
    system = toy_system(task)
    x = speech_like(6, seed=31)
    claims = torch.arange(6) % 4 if task == "sv" else None
    oracle = make_oracle(system, Knowledge.SCORES, n=6, claims=claims)
    with torch.no_grad():
        y = system.decide(system(x, claims=claims))
    atk = sec4sr_core.attack(name, **loud(name, ALL[name]))
    r = atk.run(oracle, x, y, targeted=False)
    assert r.extra["threshold_estimate"] == oracle.estimated_threshold
    assert bool(r.success.any())


def test_uap_is_one_perturbation_for_unseen_utterances(toy):
    x = speech_like(3, seed=41)
    with torch.no_grad():
        y = toy.decide(toy(x))
    _, _, r = run(toy, "uap", {"steps": 2, "craft_size": 3, "epsilon": 0.01}, x, y)
    delta = r.adv - x
    inner = (r.adv.abs() < 1).all(dim=0)  # samples no utterance clipped
    assert torch.allclose(delta[0, :, inner[0]], delta[1, :, inner[0]], atol=1e-6)
    assert float(delta.abs().max()) <= 0.01 + 1e-6


@settings(max_examples=20, deadline=None)
@given(period=st.integers(1, 40), length=st.integers(1, 100), offset=st.integers(0, 39), n=st.integers(1, 3))
def test_uap_tiling_and_its_folded_gradient_match_autograd(period, length, offset, n):
    from sec4sr_plugins_attacks.uap import UAP

    offset %= period
    pattern = torch.randn(1, 1, period, dtype=torch.float64).requires_grad_(True)
    tiled = UAP.tile(pattern, length, offset)
    assert tiled.shape == (1, 1, length)
    j = torch.arange(length)
    assert torch.equal(tiled[0, 0], pattern[0, 0, (j + offset) % period])
    grad = torch.randn(n, 1, length, dtype=torch.float64)
    (ref,) = torch.autograd.grad((tiled * grad).sum(), pattern)
    assert torch.allclose(UAP.fold(grad, period, offset), ref)


def test_uap_with_a_period_is_periodic_and_bounded(toy):
    x = speech_like(3, seed=43)
    with torch.no_grad():
        y = toy.decide(toy(x))
    _, _, r = run(toy, "uap", {"steps": 3, "craft_size": 4, "epsilon": 0.01, "period": 50}, x, y)
    delta = r.adv - x
    inner = (r.adv.abs() < 1).all(dim=0)[0]
    keep = inner[:-50] & inner[50:]
    assert torch.allclose(delta[0, 0, :-50][keep], delta[0, 0, 50:][keep], atol=1e-6)
    assert float(delta.abs().max()) <= 0.01 + 1e-6 and float(delta.abs().max()) > 0
