"""Fixtures of the study tests: inline plugins that provoke each reliability warning, and one small finished study
(GE2E on CSI-E, 4 utterances of 1 s) shared by the report, warning and store tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from sec4sr_core import Attack, AttackResult, Defense, Knowledge, hookimpl
from sec4sr_core.plugins.manager import register_plugin, unregister_plugin

LIMIT = 4
LENGTH_S = 1.0


def signs(length: int, device) -> torch.Tensor:
    """A fixed ±1 sequence (seeded by nothing but its length): x·s scrambles speech into noise; (x·s)·s = x."""
    g = torch.Generator().manual_seed(length)
    return (torch.randint(0, 2, (length,), generator=g) * 2 - 1).to(device=device, dtype=torch.float32)


class SignFlip(Defense):
    """Multiplies each sample by a fixed ±1 sequence (destroys speech; deterministic, differentiable)."""

    name = "test-signflip"

    def forward(self, x):
        return x * signs(x.shape[-1], x.device)


class Noisy(Defense):
    """Adds tiny seeded Gaussian noise (randomized)."""

    name = "test-noisy"
    randomized = True

    def forward(self, x):
        g = self.rng(x.device)
        return (x + 1e-4 * torch.randn(x.shape, generator=g, device=x.device)).clamp(-1, 1)


class StepQ(Defense):
    """Quantises to multiples of 512/32768 with torch.round and *claims* to be differentiable: the gradient through
    it is zero everywhere (gradient masking)."""

    name = "test-stepq"

    def forward(self, x):
        return torch.round(x * 64) / 64


class Flip(Attack):
    """A decision-based 'attack' returning x·s: against SignFlip it undoes the defense, elsewhere it scrambles."""

    name = "test-flip"
    knowledge = Knowledge.DECISIONS

    def run(self, oracle, x, y, targeted=False):
        adv = x * signs(x.shape[-1], x.device)
        dec = oracle.decisions(adv)
        return AttackResult(adv, dec != y.to(dec.device), oracle.queries.clone(), dec)


class Plugin:
    @hookimpl
    def register_defenses(self, register):
        register(SignFlip)
        register(Noisy)
        register(StepQ)

    @hookimpl
    def register_attacks(self, register):
        register(Flip)


@pytest.fixture(scope="session")
def study_plugin():
    register_plugin(Plugin(), name="study-test-plugin")
    yield
    unregister_plugin("study-test-plugin")


@pytest.fixture
def one_thread():
    """One torch thread for the test (restored after): far faster on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


WEAK_PGD = "pgd:steps=1,epsilon=0.00001,step_size=0.00001"


@pytest.fixture(scope="session")
def small_study(tmp_path_factory, study_plugin):
    """A finished study: attacks weak PGD (white-box) and test-flip (decision-based); rows none, qt:q=512 and the
    three test defenses; non-adaptive and adaptive. Returns (output folder, summary)."""
    from sec4sr_core.study.runner import Study, StudyConfig

    out = tmp_path_factory.mktemp("small-study")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared, loaded 2-core machine runs one-thread torch many times faster
    cfg = StudyConfig(
        name="small test study", attacks=[WEAK_PGD, "test-flip"],
        defenses=["qt:q=512", "test-signflip", "test-noisy", "test-stepq"],
        settings=["non-adaptive", "adaptive"], limit=LIMIT, length_s=LENGTH_S, batch_size=LIMIT, out=out,
        metrics=["l0", "l1", "l2", "linf", "snr", "pesq", "stoi"],
    )
    try:
        summary = Study(cfg, progress=False).run()
    finally:
        torch.set_num_threads(threads)
    return Path(out), summary


def cell(summary, defense, attack, setting):
    return next(r for r in summary["results"]
                if r["defense"] == defense and r["attack"] == attack and r["setting"] == setting)


def sec4sr_cmd() -> list[str]:
    return [sys.executable, "-m", "sec4sr_core.cli"]


def subprocess_env() -> dict[str, str]:
    """The environment of a CLI subprocess: this session's model store, one torch thread."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
