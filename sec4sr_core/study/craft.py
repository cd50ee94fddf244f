"""Crafting and judging adversarial batches outside a :class:`~sec4sr_core.study.runner.Study`, exactly as the runner
does, for the settings that need more than its rows (transfer, unseen channels).

The same trials (:func:`~sec4sr_core.compose.enroll.task_trials` with the seed and limit), the same batches of
``batch_size``, the same attack seeds (``batch_seed(seed, attack, "na", batch)`` non-adaptive,
``batch_seed(seed, attack, "ad", defense row, batch)`` adaptive), the same 16-bit quantisation inside the declared
ε-ball and the same success criterion: a batch crafted here equals the one ``sec4sr run`` crafts for that cell, so a
transfer matrix's diagonal is the white-box result of ``sec4sr run`` and channel-EOT crafting is ``sec4sr run
--defense channel --adaptive --eot N``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.compose.crafting import provide_crafting
from sec4sr_core.compose.enroll import Trials, build_system, task_trials
from sec4sr_core.compose.factories import check_device, load_model, resolve_dataset
from sec4sr_core.compose.targets import batch_seed, choose_targets
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk.attack import Attack, AttackResult
from sec4sr_core.sdk.audio import load_batch
from sec4sr_core.sdk.interfaces import Dataset, Task
from sec4sr_core.sdk.losses import success as goal_met
from sec4sr_core.sdk.oracle import make_oracle
from sec4sr_core.sdk.system import DefendedSystem, SpeakerSystem
from sec4sr_core.study.budget import declared_budget, quantize_within
from sec4sr_core.study.config import StudyConfig

__all__ = ["Bench", "Crafted", "adaptive_seed", "bench", "craft", "evaluate", "non_adaptive_seed", "run_attack"]


def non_adaptive_seed(seed: int, attack: str, batch: int) -> int:
    """The runner's seed of a non-adaptive attack batch."""
    return batch_seed(seed, attack, "na", batch)


def adaptive_seed(seed: int, attack: str, defense: str, batch: int) -> int:
    """The runner's seed of an adaptive attack batch on the defense row ``defense``."""
    return batch_seed(seed, attack, "ad", defense, batch)


@dataclass
class Bench:
    """One backbone enrolled for a task on a dataset, with the study's trials and (targeted) targets."""

    model_spec: str
    system: SpeakerSystem
    dataset: Dataset
    trials: Trials
    targets: torch.Tensor | None
    config: StudyConfig

    @property
    def n(self) -> int:
        return len(self.trials.utterances)

    def batches(self) -> Iterator[tuple[int, slice]]:
        """(index, slice) of the study's batches."""
        bs = self.config.batch_size
        for i, start in enumerate(range(0, self.n, bs)):
            yield i, slice(start, min(start + bs, self.n))

    def load(self, sl: slice) -> torch.Tensor:
        """The trial waveforms (B, 1, T) of ``sl`` at the study length, on the device."""
        length = int(round(self.config.length_s * 16000))
        return load_batch([u.path for u in self.trials.utterances[sl]], length).to(self.config.device)

    def claims(self, sl: slice) -> torch.Tensor | None:
        return None if self.trials.claims is None else self.trials.claims[sl].to(self.config.device)

    def goal(self, sl: slice) -> torch.Tensor:
        """True labels (untargeted) or targets (targeted) (B,) of ``sl``."""
        return (self.trials.labels if self.targets is None else self.targets)[sl]

    def ids(self) -> list[str]:
        return [u.id for u in self.trials.utterances]


def bench(model_spec: str, config: StudyConfig) -> Bench:
    """The system ``sec4sr run`` builds for ``model_spec`` under ``config`` (task, dataset, seed, limit, threshold,
    lengths, targeted), with its trials."""
    check_device(config.device)
    model = load_model(model_spec, config.device)
    dataset = resolve_dataset(config.dataset)
    system, _ = build_system(model, config.task, dataset, config.enroll_length_s, config.threshold)
    trials = task_trials(config.task, dataset, system.speakers, config.seed, config.limit)
    targets = (choose_targets(trials.labels, [u.id for u in trials.utterances], system.task, len(system.speakers),
                              config.seed) if config.targeted else None)
    return Bench(model_spec, system, dataset, trials, targets, config)


@dataclass
class Crafted:
    """One crafted batch: the adversarial audio as saved (16-bit, inside the budget) and the attack's result."""

    adv: torch.Tensor  #: (B, 1, T) on the device
    result: AttackResult
    seconds: float  #: wall-clock time of the attack


def run_attack(attack_spec: str, system: Any, x: torch.Tensor, y: torch.Tensor, claims: torch.Tensor | None,
               seed: int, eot: int = 1, targeted: bool = False, dataset: Dataset | None = None,
               speakers: list[str] | None = None) -> tuple[Attack, AttackResult, float]:
    """Run ``attack_spec`` on ``system`` (a DefendedSystem, or any object an oracle accepts, such as an ensemble)
    for ``x`` (B, 1, T) with goal ``y`` (B,) — the one crafting path of the runner and of this module: crafting data
    provided (with SV claims built on ``speakers``), the oracle seeded with ``seed``, torch's global seed set to it.
    Returns the attack (its declared budget is read from it), its raw result and the wall-clock seconds; the
    result's ``extra["declared_budget"]`` is filled."""
    attack: Attack = get_registry().build("attack", attack_spec)
    task = getattr(system, "task", None)
    speakers = speakers if speakers is not None else getattr(system, "speakers", None)
    provide_crafting(attack, length=x.shape[-1], dataset=dataset, task=task, speakers=speakers)
    oracle = make_oracle(system, attack.knowledge, n=x.shape[0], claims=claims, eot=eot, seed=seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    result = attack.run(oracle, x, y.to(x.device), targeted=targeted)
    elapsed = time.perf_counter() - t0
    result.extra["declared_budget"] = declared_budget(attack)
    return attack, result, elapsed


def craft(attack_spec: str, system: Any, x: torch.Tensor, y: torch.Tensor, claims: torch.Tensor | None,
          seed: int, eot: int = 1, targeted: bool = False, dataset: Dataset | None = None,
          speakers: list[str] | None = None) -> Crafted:
    """:func:`run_attack`, then the result quantised to 16 bits inside the declared budget (as the runner saves it)."""
    _, result, elapsed = run_attack(attack_spec, system, x, y, claims, seed, eot, targeted, dataset, speakers)
    adv = quantize_within(result.adv.detach(), x, result.extra["declared_budget"])
    return Crafted(adv, result, elapsed)


@torch.no_grad()
def evaluate(system: SpeakerSystem | DefendedSystem, x: torch.Tensor, y: torch.Tensor, targeted: bool,
             claims: torch.Tensor | None = None, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(decisions (B,), success (B,) bool) of ``x`` on ``system`` for the goal ``y``; a defended system is seeded
    with ``seed`` first (when given)."""
    if seed is not None and isinstance(system, DefendedSystem):
        system.seed(seed)
    scores = system(x, claims=claims)
    dec = system.decide(scores).cpu()
    return dec, goal_met(dec, y.cpu(), targeted)


def check_same_speakers(benches: list[Bench]) -> None:
    """Transfer and ensembles compare labels across systems: every system must enroll the same speakers in the
    same order (ParameterError otherwise)."""
    first = benches[0]
    for b in benches[1:]:
        if b.system.speakers != first.system.speakers:
            raise ParameterError(f"models {first.model_spec!r} and {b.model_spec!r} do not share their speakers "
                                 f"({len(first.system.speakers)} vs {len(b.system.speakers)}, or in another order); "
                                 f"labels cannot be compared across them")
        if Task(b.system.task) != Task(first.system.task):
            raise ParameterError("every system of a transfer must run the same task")
        if [u.id for u in b.trials.utterances] != first.ids():
            raise ParameterError(f"models {first.model_spec!r} and {b.model_spec!r} get different trials")
