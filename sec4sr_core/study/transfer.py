"""Transfer across backbones: craft on a source (one backbone, or an ensemble with averaged loss), test on a target.

For every source and every batch of the study's trials, the attack crafts as ``sec4sr run`` crafts a non-adaptive
cell (:mod:`sec4sr_core.study.craft`: same trials, batches, seeds, 16-bit quantisation inside the ε-ball); the
adversarial audio is then judged on every target system. The result is a source × target matrix of attack success
(untargeted: the target's decision differs from the true label; targeted: it equals the target) with Wilson 95 %
intervals. The diagonal is the white-box result, equal to ``sec4sr run --model M --attack A`` on the same trials.

**Ensembles** (Liu et al. 2017): :class:`EnsembleSystem` presents M enrolled systems as one system to an oracle whose
EOT draws are a multiple of M. The oracle lays a repeated batch out as ``[copy0 of all probes, copy1, ...]``
(:func:`sec4sr_core.sdk.adaptive.repeat_batch`); the ensemble cuts the rows into M equal contiguous chunks and sends
chunk k to member k, so the oracle's EOT mean of the per-draw losses is the **average of the members' losses** and
its gradient the average of their gradients — an ordinary white-box attack needs no change. Decisions are the
oracle's majority vote over the draws (the members); scores the mean. For SV/OSI each member's scores are shifted
by its own threshold (``s − θ_m``) and the ensemble's threshold is 0, so each member decides as it would alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk.system import DefendedSystem, SpeakerSystem, as_defended, decide
from sec4sr_core.study.config import StudyConfig
from sec4sr_core.study.craft import Bench, bench, check_same_speakers, craft, evaluate, non_adaptive_seed
from sec4sr_core.study.stats import wilson

__all__ = ["EnsembleSystem", "TransferResult", "parse_sources", "transfer"]


class EnsembleSystem(nn.Module):
    """M enrolled systems with the same task and speakers, seen by an oracle as one (see module docstring).

    ``forward(x)`` takes (M·R, 1, T) rows — what an oracle with ``eot`` a multiple of M passes — and returns the
    scores (M·R, S) of chunk k on member k (threshold-shifted for SV/OSI). Use :meth:`eot` for the oracle's draws.
    """

    def __init__(self, systems: Sequence[SpeakerSystem | DefendedSystem]) -> None:
        super().__init__()
        if len(systems) < 1:
            raise ParameterError("an ensemble needs at least one system")
        members = [as_defended(s) for s in systems]
        first = members[0]
        for m in members[1:]:
            if m.task != first.task or list(m.speakers) != list(first.speakers):
                raise ParameterError("the members of an ensemble must share their task and speakers")
        self.members = nn.ModuleList(members)

    # -- what an oracle reads ---------------------------------------------------------------------------------------
    @property
    def task(self):
        return self.members[0].task

    @property
    def threshold(self) -> float | None:
        return 0.0 if self.task.has_threshold else None

    @property
    def speakers(self) -> list[str]:
        return self.members[0].speakers

    @property
    def n_scores(self) -> int:
        return self.members[0].n_scores

    @property
    def randomized(self) -> bool:
        return len(self.members) > 1 or any(m.randomized for m in self.members)

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def eot(self, draws_per_member: int = 1) -> int:
        """The oracle's EOT draws for ``draws_per_member`` draws on each member."""
        return len(self.members) * int(draws_per_member)

    def seed(self, seed: int) -> None:
        for i, m in enumerate(self.members):
            m.seed(seed * 1000 + i)

    def label(self) -> str:
        return "+".join(m.system.model.name for m in self.members)

    def _member_scores(self, m: DefendedSystem, x: torch.Tensor, claims: torch.Tensor | None) -> torch.Tensor:
        s = m(x, claims=claims)
        return s - m.threshold if self.task.has_threshold else s

    def forward(self, x: torch.Tensor, claims: torch.Tensor | None = None) -> torch.Tensor:
        k = len(self.members)
        if x.shape[0] % k:
            raise ParameterError(f"an ensemble of {k} systems takes rows in multiples of {k} (an oracle with eot a "
                                 f"multiple of {k}); got {x.shape[0]}")
        xs = x.chunk(k, dim=0)
        cs = [None] * k if claims is None else list(claims.chunk(k, dim=0))
        return torch.cat([self._member_scores(m, xi, ci) for m, xi, ci in zip(self.members, xs, cs)], dim=0)

    def decide(self, scores: torch.Tensor) -> torch.Tensor:
        return decide(scores, self.task, self.threshold)


def parse_sources(models: Sequence[str], ensembles: Sequence[str] = ()) -> list[tuple[str, list[str]]]:
    """(label, member specs) of each source: every model alone, then each ensemble ``a+b+...`` (its members must be
    among ``models``, which fixes their enrollment and trials)."""
    sources = [(m, [m]) for m in models]
    for e in ensembles:
        members = [p.strip() for p in e.split("+") if p.strip()]
        if len(members) < 2:
            raise ParameterError(f"ensemble {e!r}: name at least two models joined by '+', e.g. ge2e+ecapa")
        missing = [m for m in members if m not in models]
        if missing:
            raise ParameterError(f"ensemble {e!r}: {', '.join(missing)} not among --models ({', '.join(models)})")
        sources.append(("+".join(members), members))
    return sources


@dataclass
class TransferResult:
    """Success of each source on each target, per utterance and aggregated."""

    attack: str
    task: str
    sources: list[str]
    targets: list[str]
    utterances: list[str]
    #: success[source][target] = list of 0/1 per utterance
    success: dict[str, dict[str, list[int]]]
    #: seconds spent crafting per source
    seconds: dict[str, float] = field(default_factory=dict)
    #: benign[target] = list of 0/1 per utterance: the goal met by the unperturbed audio (the benign error rate of
    #: an untargeted goal), the floor every cell of that column should be read against
    benign: dict[str, list[int]] = field(default_factory=dict)

    def rate(self, source: str, target: str) -> dict[str, Any]:
        """n, success rate and its Wilson 95 % interval of one cell (``source`` None: the benign row)."""
        vals = self.benign.get(target, []) if source is None else self.success[source][target]
        k, n = sum(vals), len(vals)
        return {"n": n, "success": k / n if n else None, "ci": wilson(k, n)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack, "task": self.task, "sources": self.sources, "targets": self.targets,
            "utterances": self.utterances, "seconds": self.seconds,
            "matrix": {s: {t: self.rate(s, t) for t in self.targets} for s in self.sources},
            "benign": {t: self.rate(None, t) for t in self.targets},
            "per_utterance": self.success, "benign_per_utterance": self.benign,
        }

    def table(self) -> str:
        """The source × target matrix as a plain-text table (success %, Wilson 95 % interval)."""
        def cell(s: str | None, t: str) -> str:
            r = self.rate(s, t)
            if r["success"] is None:
                return "-"
            lo, hi = r["ci"]
            return f"{100 * r['success']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

        head = ["source \\ target", *self.targets]
        rows = [[s, *(cell(s, t) for t in self.targets)] for s in self.sources]
        if self.benign:
            rows.append(["(no attack)", *(cell(None, t) for t in self.targets)])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        n = len(self.utterances)
        lines = [f"transfer of {self.attack} on {self.task}, {n} trial(s): attack success % [Wilson 95 %]",
                 fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*r) for r in rows]
        lines.append("crafting time: " + ", ".join(f"{s} {self.seconds.get(s, 0.0):.1f} s" for s in self.sources))
        return "\n".join(lines)


def transfer(models: Sequence[str], attack: str, config: StudyConfig, ensembles: Sequence[str] = (),
             progress: Any = None) -> TransferResult:
    """Craft ``attack`` on every source (each of ``models``, then each ensemble) and judge it on every model.

    ``config`` gives the task, dataset, seed, limit, batch size, lengths, threshold, targeted and device, as for
    ``sec4sr run``; ``progress(message)`` is called once per crafted batch when given."""
    if not models:
        raise ParameterError("transfer needs at least one model (--models a,b,...)")
    if len(set(models)) != len(models):
        raise ParameterError(f"--models names a model twice: {', '.join(models)}")
    sources = parse_sources(models, ensembles)
    get_registry().resolve("attack", attack)  # a typo fails before any model loads
    benches: dict[str, Bench] = {m: bench(m, config) for m in models}
    check_same_speakers(list(benches.values()))
    ref = benches[models[0]]
    success: dict[str, dict[str, list[int]]] = {s: {t: [] for t in models} for s, _ in sources}
    seconds: dict[str, float] = {s: 0.0 for s, _ in sources}
    benign: dict[str, list[int]] = {t: [] for t in models}
    for _, sl in ref.batches():  # the goal met without any attack (untargeted: the benign error) on each target
        x = ref.load(sl)
        for target in models:
            _, ok = evaluate(benches[target].system, x, ref.goal(sl), config.targeted, ref.claims(sl))
            benign[target] += [int(v) for v in ok.tolist()]
    for label, members in sources:
        if len(members) == 1:
            system: Any = as_defended(benches[members[0]].system)
            eot = 1
        else:
            system = EnsembleSystem([benches[m].system for m in members])
            eot = system.eot(1)
        for bi, sl in ref.batches():
            x = ref.load(sl)
            y = ref.goal(sl)
            t0 = time.perf_counter()
            crafted = craft(attack, system, x, y, ref.claims(sl), non_adaptive_seed(config.seed, attack, bi),
                            eot=eot, targeted=config.targeted, dataset=ref.dataset)
            seconds[label] += time.perf_counter() - t0
            for target in models:
                _, ok = evaluate(benches[target].system, crafted.adv, y, config.targeted, ref.claims(sl))
                success[label][target] += [int(v) for v in ok.tolist()]
            if progress is not None:
                progress(f"{label}: batch {bi + 1}")
    return TransferResult(attack, ref.system.task.value, [s for s, _ in sources], list(models), ref.ids(), success,
                          seconds, benign)
