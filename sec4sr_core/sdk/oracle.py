"""Oracles: the only way an attack reaches a system. Each enforces a knowledge level and counts queries.

=================  ===========  ========  ===========  ==============
oracle             decisions    scores    gradients    real threshold
=================  ===========  ========  ===========  ==============
DecisionOracle     yes          raises    raises       raises
ScoreOracle        yes          yes       raises       raises
WhiteBoxOracle     yes          yes       yes          yes
=================  ===========  ========  ===========  ==============

An oracle is bound to a batch of ``n`` utterances. Every call takes probes (N, 1, T) and ``owners`` (N,) telling
which utterance each probe belongs to; by default ``owners = arange(N) % n``, the layout of repeated batches
(``[copy0 of all, copy1, ...]``). Each probe costs ``eot`` queries to its owner (a randomized system is evaluated
``eot`` times, in one batch). Scores and losses are averaged over the EOT draws; decisions are a majority vote.

For SV the oracle holds each utterance's claimed speaker (``claims``) and passes it along.
"""

from __future__ import annotations

from typing import Callable

import torch

from sec4sr_core.sdk.adaptive import eot_loss_and_grad, repeat_batch
from sec4sr_core.base.errors import KnowledgeError
from sec4sr_core.sdk.interfaces import Knowledge, Task
from sec4sr_core.sdk.system import DefendedSystem, decide


class Oracle:
    knowledge: Knowledge = Knowledge.DECISIONS

    def __init__(
        self,
        system: DefendedSystem,
        n: int,
        claims: torch.Tensor | None = None,
        eot: int = 1,
        seed: int = 0,
        estimated_threshold: float | None = None,
    ) -> None:
        if eot < 1:
            raise ValueError("eot must be >= 1")
        self._system = system
        self.n = int(n)
        self.eot = int(eot)
        self.device = system.device
        self.claims = None if claims is None else claims.to(self.device).long()
        self.queries = torch.zeros(self.n, dtype=torch.int64)
        self.estimated_threshold = estimated_threshold
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        system.seed(seed)

    # -- public facts every attack may know --------------------------------------------------------------------
    @property
    def task(self) -> Task:
        return self._system.task

    @property
    def n_scores(self) -> int:
        """Number of score columns S (1 for SV, the number of speakers otherwise)."""
        return self._system.n_scores

    @property
    def n_speakers(self) -> int:
        return len(self._system.speakers)

    @property
    def randomized(self) -> bool:
        return self._system.randomized

    @property
    def threshold(self) -> float | None:
        """The system's real threshold (white-box), or the estimate given to the oracle; None for CSI."""
        if not self.task.has_threshold:
            return None
        if self.estimated_threshold is not None:
            return self.estimated_threshold
        raise KnowledgeError(
            f"a {self.knowledge.value} attack cannot read the real threshold; estimate it (e.g. FAKEBOB's estimator)"
        )

    # -- bookkeeping --------------------------------------------------------------------------------------------
    def _owners(self, x: torch.Tensor, owners: torch.Tensor | None) -> torch.Tensor:
        if owners is None:
            owners = torch.arange(x.shape[0]) % self.n
        return owners.to("cpu").long()

    def _count(self, owners: torch.Tensor) -> None:
        self.queries += torch.bincount(owners, minlength=self.n) * self.eot

    def _claims(self, owners: torch.Tensor) -> torch.Tensor | None:
        return None if self.claims is None else self.claims[owners.to(self.device)]

    def _scores_all(self, x: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Scores (eot, N, S) of every draw, no gradient."""
        claims = self._claims(owners)
        xr = repeat_batch(x.to(self.device), self.eot)
        cr = None if claims is None else repeat_batch(claims, self.eot)
        with torch.no_grad():
            s = self._system(xr, claims=cr)
        return s.view(self.eot, x.shape[0], -1)

    def _decide(self, scores_all: torch.Tensor) -> torch.Tensor:
        eot, n, s = scores_all.shape
        d = decide(scores_all.reshape(eot * n, s), self.task, self._system.threshold).view(eot, n)
        return d[0] if eot == 1 else torch.mode(d, dim=0).values

    # -- queries ------------------------------------------------------------------------------------------------
    def decisions(self, x: torch.Tensor, owners: torch.Tensor | None = None) -> torch.Tensor:
        """Decisions (N,) of probes (N, 1, T) (majority vote over EOT draws)."""
        owners = self._owners(x, owners)
        self._count(owners)
        return self._decide(self._scores_all(x, owners))

    def scores(self, x: torch.Tensor, owners: torch.Tensor | None = None) -> torch.Tensor:
        raise KnowledgeError(f"a {self.knowledge.value} attack may not read scores")

    def scores_and_decisions(
        self, x: torch.Tensor, owners: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise KnowledgeError(f"a {self.knowledge.value} attack may not read scores")

    def loss_and_grad(
        self,
        x: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        y: torch.Tensor,
        owners: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        raise KnowledgeError(f"a {self.knowledge.value} attack may not read gradients")


class DecisionOracle(Oracle):
    knowledge = Knowledge.DECISIONS


class ScoreOracle(Oracle):
    knowledge = Knowledge.SCORES

    def scores(self, x: torch.Tensor, owners: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (N, S) averaged over EOT draws."""
        return self.scores_and_decisions(x, owners)[0]

    def scores_and_decisions(
        self, x: torch.Tensor, owners: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        owners = self._owners(x, owners)
        self._count(owners)
        s = self._scores_all(x, owners)
        return s.mean(dim=0), self._decide(s)


class WhiteBoxOracle(ScoreOracle):
    knowledge = Knowledge.WHITE_BOX

    @property
    def threshold(self) -> float | None:
        if self.estimated_threshold is not None:
            return self.estimated_threshold
        return self._system.threshold if self.task.has_threshold else None

    def loss_and_grad(
        self,
        x: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        y: torch.Tensor,
        owners: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """EOT-averaged loss (N,), gradient (N, 1, T), scores (N, S) and decisions (N,) at ``x``.

        ``loss_fn(scores, labels)`` is per sample; ``y`` (N,) are the labels of the probes.
        """
        owners = self._owners(x, owners)
        self._count(owners)
        claims = self._claims(owners)
        y = y.to(self.device)
        cr = None if claims is None else repeat_batch(claims, self.eot)
        yr = repeat_batch(y, self.eot)

        def fn(xr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            s = self._system(xr, claims=cr)
            return loss_fn(s, yr), s

        loss, grad, s = eot_loss_and_grad(fn, x.to(self.device), self.eot)
        return loss, grad, s.mean(dim=0), self._decide(s)


_ORACLES = {Knowledge.DECISIONS: DecisionOracle, Knowledge.SCORES: ScoreOracle, Knowledge.WHITE_BOX: WhiteBoxOracle}


def make_oracle(
    system: DefendedSystem,
    knowledge: Knowledge,
    n: int,
    claims: torch.Tensor | None = None,
    eot: int = 1,
    seed: int = 0,
    estimated_threshold: float | None = None,
) -> Oracle:
    """The oracle class for ``knowledge``, bound to a batch of ``n`` utterances."""
    return _ORACLES[Knowledge(knowledge)](
        system, n=n, claims=claims, eot=eot, seed=seed, estimated_threshold=estimated_threshold
    )
