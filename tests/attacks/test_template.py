"""The attack template method and the shared parameter mixins: an attack that writes only ``perturb`` gets the input
checks, the goal, the final decisions, success, queries and budget flags from ``Attack.run``; the built-in attacks
take ε, κ, loss and query budgets from the sdk's mixins instead of declaring them again."""

from __future__ import annotations

import inspect

import pytest
import torch
from pydantic import Field, ValidationError

import sec4sr_core
from sec4sr_core.base.errors import ParameterError, PluginError
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk import (
    NOT_EVALUATED, Attack, Crafted, Kappa, Knowledge, LinfBall, LossChoice, QueryBudget, Steps, StepSize,
)
from sec4sr_core.sdk.oracle import make_oracle

from .conftest import S, speech_like, toy_system


class FlipSign(Attack):
    """Tries ``x − ε·sign(x)`` and ``x + ε·sign(x)``; keeps the first that meets the goal (decision-based)."""

    name = "flip-sign"
    knowledge = Knowledge.DECISIONS
    norm = "linf"

    class Params(QueryBudget, LinfBall.with_defaults(epsilon=0.2)):
        report: bool = Field(False, description="return the probe decisions it saw (saves the final queries)")

    def perturb(self, oracle, x, goal):
        s = torch.sign(x)
        first = (x - self.params.epsilon * s).clamp(-1, 1)
        dec = oracle.decisions(first)
        ok = goal.met(dec)
        second = (x + self.params.epsilon * s).clamp(-1, 1)
        adv = torch.where(ok.view(-1, 1, 1), first, second)
        if not self.params.report:
            return adv  # the template evaluates every final decision
        return Crafted(adv, torch.where(ok, dec, torch.full_like(dec, NOT_EVALUATED)), {"tried": 2})


def _batch(task="csi-e", n=6, seed=3):
    system = toy_system(task)
    x = speech_like(n, seed=seed)
    claims = torch.arange(n) % S if task == "sv" else None
    with torch.no_grad():
        truth = system.decide(system(x, claims=claims))
    return system, x, claims, truth


def _run(attack, system, x, y, claims=None, targeted=False, eot=1):
    oracle = make_oracle(system, attack.knowledge, n=x.shape[0], claims=claims, eot=eot, seed=0)
    return attack.run(oracle, x, y, targeted=targeted), oracle


@pytest.mark.parametrize("report", [False, True])
@pytest.mark.parametrize("targeted", [False, True])
def test_an_attack_writing_only_perturb_gets_the_bookkeeping(report, targeted):
    system, x, _, truth = _batch()
    y = (truth + 1) % S if targeted else truth
    r, oracle = _run(FlipSign(report=report), system, x, y, targeted=targeted)
    with torch.no_grad():
        actual = system.decide(system(r.adv))
    # decisions are the system's on the returned audio, success is the library's criterion of them
    assert torch.equal(r.decisions, actual)
    assert torch.equal(r.success, actual == y if targeted else actual != y)
    assert r.success.dtype == torch.bool and r.decisions.dtype == torch.int64 and r.queries.dtype == torch.int64
    assert not r.adv.requires_grad and r.adv.shape == x.shape
    # queries come from the oracle: one probe, plus one final decision for each utterance the attack left open
    first_ok = (r.adv - x).mul(torch.sign(x)).flatten(1).lt(0).any(dim=1)  # kept the first probe
    expected = 1 + (~first_ok).long() if report else torch.full((x.shape[0],), 2)
    assert torch.equal(r.queries, oracle.queries) and torch.equal(r.queries, expected)
    assert r.extra == ({"tried": 2} if report else {})


def test_the_template_counts_eot_draws_and_flags_a_broken_budget():
    system, x, _, truth = _batch()
    r, _ = _run(FlipSign(max_queries=1), system, x, truth, eot=3)
    assert torch.equal(r.queries, torch.full((x.shape[0],), 6))  # 2 probes × 3 draws
    assert torch.equal(r.extra["over_query_budget"], torch.ones(x.shape[0], dtype=torch.bool))
    r, _ = _run(FlipSign(max_queries=6), system, x, truth, eot=3)
    assert "over_query_budget" not in r.extra


def test_the_template_checks_inputs_before_the_algorithm_runs():
    system, x, _, truth = _batch()
    atk = FlipSign()
    for bad_x, bad_y in [(x[:, 0], truth), (x.double().long(), truth), (x, truth[:-1]), (x, truth.view(-1, 1))]:
        with pytest.raises(ParameterError):
            _run(atk, system, bad_x, bad_y)
    with pytest.raises(ParameterError, match="bound to 5"):  # an oracle for another batch
        atk.run(make_oracle(system, atk.knowledge, n=5), x, truth)
    with pytest.raises(ParameterError, match="not valid labels"):
        _run(atk, system, x, torch.full_like(truth, S))
    with pytest.raises(ParameterError, match="not valid targets"):
        _run(atk, system, x, torch.full_like(truth, -1), targeted=True)  # CSI-E cannot target reject


def test_a_wrong_shaped_perturbation_is_a_plugin_error_naming_the_attack():
    class Truncating(FlipSign):
        name = "truncating"

        def perturb(self, oracle, x, goal):
            return x[..., :-1]

    system, x, _, truth = _batch()
    with pytest.raises(PluginError, match="truncating"):
        _run(Truncating(), system, x, truth)


def test_an_attack_with_neither_perturb_nor_run_says_so():
    class Empty(Attack):
        name = "empty"
        knowledge = Knowledge.DECISIONS

    system, x, _, truth = _batch()
    with pytest.raises(NotImplementedError, match="perturb"):
        _run(Empty(), system, x, truth)


def test_threshold_estimating_attacks_report_their_estimate():
    class Guessing(FlipSign):
        name = "guessing"
        knowledge = Knowledge.SCORES
        estimates_threshold = True

        def perturb(self, oracle, x, goal):
            oracle.estimated_threshold = 0.125
            return x.clone()

    system, x, claims, truth = _batch("sv")
    r, _ = _run(Guessing(), system, x, truth, claims=claims)
    assert r.extra["threshold_estimate"] == 0.125
    r, _ = _run(FlipSign(), system, x, truth, claims=claims)
    assert "threshold_estimate" not in r.extra


def test_the_python_api_goes_through_the_template(toy, toy_batch):
    x, y = toy_batch
    atk = FlipSign()
    adv = atk(toy, x, y)
    assert torch.equal(adv, atk.last_result.adv)
    assert bool(atk.last_result.success.any())


# -- the parameter mixins -------------------------------------------------------------------------------------------


def test_with_defaults_keeps_constraints_and_is_cached():
    tuned = Steps.with_defaults(steps=40, descriptions={"steps": "passes"})
    assert tuned is Steps.with_defaults(descriptions={"steps": "passes"}, steps=40)
    assert tuned().steps == 40 and Steps().steps == 10
    assert tuned.model_fields["steps"].description == "passes"
    with pytest.raises(ValidationError):
        tuned(steps=0)  # ge=1 kept
    with pytest.raises(TypeError, match="no field"):
        Steps.with_defaults(stepz=3)


#: parameter -> the sdk mixin that declares it for every attack that has it
SHARED = {"kappa": Kappa, "max_queries": QueryBudget, "loss": LossChoice, "step_size": StepSize, "steps": Steps}


@pytest.mark.parametrize("name", ["fgsm", "pgd", "cwinf", "cw2", "apgd", "uap", "pgd-nes", "fakebob", "siren",
                                  "square", "kenan", "hsja"])
def test_built_in_attacks_take_shared_parameters_from_the_mixins(name):
    cls = get_registry().get("attack", name).load()
    fields = cls.Params.model_fields
    for field, mixin in SHARED.items():
        if field in fields:
            assert issubclass(cls.Params, mixin), f"{name} declares {field} itself"
            # declared in the mixin (or a with_defaults variant of it), never in the attack's own class body
            owner = next(k for k in cls.Params.__mro__ if field in inspect.get_annotations(k))
            assert issubclass(owner, mixin), f"{name}: {field} declared by {owner.__name__}"
    if cls.norm == "linf" and "epsilon" in fields:
        from sec4sr_core.sdk import NormBall

        assert issubclass(cls.Params, (LinfBall, NormBall))
    # every built-in attack implements the hook, not run
    assert cls.run is Attack.run and cls.perturb is not Attack.perturb


def test_preset_defaults_are_unchanged_by_the_mixins():
    want = {"pgd": {"epsilon": 0.002, "step_size": 0.0004, "steps": 10, "kappa": 0.0, "loss": "ce"},
            "cwinf": {"step_size": 0.001, "steps": 10}, "apgd": {"steps": 100}, "pgd-nes": {"steps": 100,
            "step_size": 0.0002, "prior": "spectral"}, "fakebob": {"prior": "white", "max_queries": None},
            "uap": {"steps": 40, "step_size": 0.0002, "loss": "margin", "craft_dataset": None},
            "square": {"loss": "margin"}}
    for name, values in want.items():
        params = sec4sr_core.attack(name).params
        for key, value in values.items():
            assert getattr(params, key) == value, (name, key)
