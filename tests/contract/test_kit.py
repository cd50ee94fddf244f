"""The contract kit itself: it accepts well-behaved components and names the rule each broken one violates."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import Field

from sec4sr_core import Attack, AttackResult, Dataset, Defense, Knowledge, Metric, Params
from sec4sr_core.sdk.interfaces import Utterance
from sec4sr_core.testing import (RULES, ContractError, TinyModel, check_attack, check_dataset, check_defense,
                                 check_metric, check_model, tiny_system, waves)

BROKEN = Path(__file__).resolve().parents[2] / "plugins" / "sec4sr-example-broken"


def rules_of(fn, *args, **kw) -> set[str]:
    with pytest.raises(ContractError) as info:
        fn(*args, **kw)
    assert isinstance(info.value, AssertionError)
    text = str(info.value)
    assert all(f"[{r}]" in text for r in info.value.rules)
    assert set(info.value.rules) <= set(RULES)
    return set(info.value.rules)


@pytest.fixture(scope="module")
def broken():
    sys.path.insert(0, str(BROKEN))
    try:
        import sec4sr_example_broken

        yield sec4sr_example_broken
    finally:
        sys.path.remove(str(BROKEN))


def test_the_broken_example_fails_with_the_rules_it_breaks(broken):
    assert rules_of(check_defense, broken.UnseededNoise) >= {"params.described", "defense.deterministic",
                                                             "defense.differentiable"}
    assert rules_of(check_defense, broken.Truncate) >= {"params.model", "params.unknown", "defense.shape"}
    assert rules_of(check_attack, broken.OverBudget) == {"attack.budget", "attack.queries"}
    assert rules_of(check_attack, broken.Peek) == {"attack.knowledge"}
    # its own to_level also walks backwards without an error
    assert rules_of(check_model, broken.BatchNorm) == {"model.chain", "model.batch", "model.levels"}
    with pytest.raises(ContractError, match=r"attack 'broken-budget' left its L∞ ball: max \|adv - x\| = 0\.004"):
        check_attack(broken.OverBudget)


def test_waves_are_seeded_voice_like_and_in_range():
    a, b = waves(3, 0.5, seed=4), waves(3, 0.5, seed=4)
    assert torch.equal(a, b) and a.shape == (3, 1, 8000) and a.dtype == torch.float32
    assert float(a.abs().max()) == pytest.approx(0.3, abs=1e-6)
    assert not torch.equal(a, waves(3, 0.5, seed=5))


@settings(max_examples=4, deadline=None)
@given(batch=st.integers(1, 3), seconds=st.sampled_from([0.02, 0.25, 0.6]))
def test_the_tiny_model_keeps_the_model_contract(batch, seconds):
    check_model(TinyModel, batch=batch, seconds=seconds, registry=False)


class _SignNoise(Attack):
    """Adds factor·ε sign noise (for the budget property)."""

    name = "sign-noise"
    knowledge = Knowledge.DECISIONS
    norm = "linf"
    factor = 1.0

    class Params(Params):
        epsilon: float = Field(0.01, gt=0, le=1, description="L∞ bound in [-1, 1] amplitude units")

    def run(self, oracle, x, y, targeted=False):
        signs = torch.randint(0, 2, x.shape, generator=oracle.generator) * 2 - 1
        adv = (x + self.factor * self.params.epsilon * signs).clamp(-1, 1)
        d = oracle.decisions(adv)
        return AttackResult(adv, d != y, oracle.queries.clone(), d)


@settings(max_examples=8, deadline=None)
@given(epsilon=st.floats(1e-4, 0.2), factor=st.sampled_from([0.25, 0.999, 1.01, 2.0]))
@example(epsilon=1.0000000000000002e-4, factor=1.01)  # 1 % over at the smallest ε: once hidden by a 1e-6 slack
def test_the_budget_rule_flags_exactly_the_attacks_leaving_their_ball(epsilon, factor):
    cls = type("SignNoise", (_SignNoise,), {"factor": factor, "__doc__": f"Adds {factor}·ε sign noise."})
    if factor <= 1:
        check_attack(cls, {"epsilon": epsilon}, registry=False)
    else:
        assert rules_of(check_attack, cls, {"epsilon": epsilon}, registry=False) == {"attack.budget"}


def test_attacks_going_around_the_oracle_are_caught():
    from sec4sr_core.sdk.system import as_defended

    ds = as_defended(tiny_system())

    class SideChannel(_SignNoise):
        """Scores the system directly (it holds a reference of its own), bypassing the oracle's query count."""

        name = "side-channel"

        def run(self, oracle, x, y, targeted=False):
            assert not hasattr(oracle, "_system")  # the oracle itself offers no way to the system
            ds(x)  # what the rule forbids
            return super().run(oracle, x, y, targeted)

    assert rules_of(check_attack, SideChannel, system=ds, registry=False) == {"attack.queries"}


def test_lying_decisions_and_unseeded_randomness_are_caught():
    class Liar(_SignNoise):
        """Reports the true labels as its decisions."""

        name = "liar"

        def run(self, oracle, x, y, targeted=False):
            r = super().run(oracle, x, y, targeted)
            return AttackResult(r.adv, r.success, r.queries, (r.decisions + 1) % 4)

    class Unseeded(_SignNoise):
        """Uses Python's global random module."""

        name = "unseeded"

        def run(self, oracle, x, y, targeted=False):
            adv = (x + self.params.epsilon * random.random()).clamp(-1, 1)
            d = oracle.decisions(adv)
            return AttackResult(adv, d != y, oracle.queries.clone(), d)

    assert rules_of(check_attack, Liar, registry=False) == {"attack.decisions"}
    random.seed(1)
    assert "attack.deterministic" in rules_of(check_attack, Unseeded, registry=False)


class _Noise(Defense):
    """Additive noise at a fixed level; randomized."""

    name = "noise"
    randomized = True

    class Params(Params):
        level: str = Field("wave", description="feature level it acts on")
        sigma: float = Field(0.01, gt=0, le=1, description="noise standard deviation in [-1, 1] units")

    acts_on = ("wave", "feature")

    def forward(self, x):
        return (x + self.params.sigma * torch.randn(x.shape, generator=self.rng(x.device))).clamp(-1, 1) \
            if self.level == "wave" else x + self.params.sigma * torch.randn(x.shape, generator=self.rng(x.device))


def test_a_seeded_randomized_defense_passes_at_every_level():
    check_defense(_Noise, registry=False)
    check_defense(_Noise, {"level": "raw"}, registry=False)


def test_randomness_outside_the_seeded_generator_is_caught():
    class GlobalNoise(_Noise):
        """Draws from the global RNG."""

        name = "global-noise"

        def forward(self, x):
            return x + self.params.sigma * torch.randn_like(x) * 0.1

    assert rules_of(check_defense, GlobalNoise, registry=False) == {"defense.seeded"}


def test_a_fake_gradient_is_caught_by_finite_differences():
    class StraightThrough(Defense):
        """Rounds to 1/8 steps but claims the identity gradient is its own."""

        name = "straight-through"

        def forward(self, x):
            return x + (torch.round(x * 8) / 8 - x).detach()

    assert rules_of(check_defense, StraightThrough, registry=False) == {"defense.differentiable"}


def test_bounds_only_declared_in_the_schema_are_caught():
    class Unchecked(Defense):
        """A bound shown in the schema but never enforced."""

        name = "unchecked"

        class Params(Params):
            q: int = Field(8, description="step in 16-bit units", json_schema_extra={"minimum": 1})

        def forward(self, x):
            return x

    rules = rules_of(check_defense, Unchecked, registry=False)
    assert rules == {"params.bounds"}


def test_a_name_taken_by_another_distribution_is_caught():
    class MyQT(Defense):
        """Claims the name of the project's quantisation defense."""

        name = "qt"

        def forward(self, x):
            return x

    with pytest.raises(ContractError, match=r"defense name 'qt' is already registered by sec4sr-plugins-defenses"):
        check_defense(MyQT)


def test_metrics_that_depend_on_the_batch_are_caught():
    class BatchMean(Metric):
        """Distortion relative to the batch mean (wrong on purpose)."""

        name = "batch-mean"

        def compute(self, benign, adv):
            d = (adv - benign).abs().flatten(1).mean(1)
            return (d / d.mean()).tolist()

    assert rules_of(check_metric, BatchMean, registry=False) == {"metric.batch"}


def test_datasets_with_enrolled_imposters_are_caught(tmp_path):
    import numpy as np
    import soundfile as sf

    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(1600, dtype=np.float32) + 0.1, 16000)

    class Leaky(Dataset):
        """Enrolls the imposter speaker."""

        name = "leaky"

        def split_names(self):
            return ["enroll", "test", "imposter-test"]

        def split(self, name):
            if name not in ("enroll", "dev", "test", "imposter-dev", "imposter-test", "train", "heldout"):
                from sec4sr_core import Sec4srError

                raise Sec4srError(f"no split {name}")
            spk = {"enroll": ["b", "a"], "test": ["a"], "imposter-test": ["b"]}.get(name, [])
            return [Utterance(path, s, f"{s}-{name}") for s in spk]

    assert rules_of(check_dataset, Leaky, registry=False) == {"dataset.speakers"}


def test_the_tiny_system_answers_every_task():
    x = waves(4)
    for task in ("csi-e", "sv", "osi"):
        system = tiny_system(task)
        claims = torch.zeros(4, dtype=torch.long) if task == "sv" else None
        decisions = system.decide(system(x, claims=claims))
        assert decisions.shape == (4,) and decisions.dtype == torch.int64
