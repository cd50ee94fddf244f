"""Oracles: the only way an attack reaches a system. Each enforces a knowledge level and counts queries.

=================  ===========  ========  ===========  ==============
oracle             decisions    scores    gradients    real threshold
=================  ===========  ========  ===========  ==============
DecisionOracle     yes          raises    raises       raises
ScoreOracle        yes          yes       raises       raises
WhiteBoxOracle     yes          yes       yes          yes
=================  ===========  ========  ===========  ==============

An oracle is bound to a batch of ``n`` utterances. Every call takes probes (N, 1, T) and optionally ``owners`` (N,)
telling which utterance each probe belongs to; by default ``owners = arange(N) % n``, the layout of repeated batches
(``[copy0 of all, copy1, ...]``). **The charge is the probe count**: each of the N rows costs ``eot`` queries (a
randomized system is evaluated ``eot`` times, in one batch), booked to its owner; ``owners`` only says *whose*
budget pays, so it must hold exactly one valid utterance index per row. Scores and losses are averaged over the EOT
draws; decisions are a majority vote, ties broken by :func:`majority_vote`'s rule.

The system itself is not an attribute of the oracle: it lives in closures built by the constructor, the class has
``__slots__`` (no ``__dict__``), and :attr:`Oracle.queries` is a read-only copy of the count. An attack therefore
cannot score the system, read its gradients or reset its count behind the oracle's back (Python's introspection of
closures remains possible on purpose only; the contract kit's ``attack.queries`` rule catches that).

For SV the oracle holds each utterance's claimed speaker (``claims``) and passes it along; a call may give its own
``claims`` (N,) instead (a claim is the attacker's choice, e.g. for crafting utterances that are not in the batch).
"""

from __future__ import annotations

from typing import Callable

import torch

from sec4sr_core.base.errors import KnowledgeError, ParameterError
from sec4sr_core.sdk.adaptive import eot_loss_and_grad, repeat_batch
from sec4sr_core.sdk.interfaces import Knowledge, Task
from sec4sr_core.sdk.system import DefendedSystem

__all__ = ["DecisionOracle", "Oracle", "ScoreOracle", "WhiteBoxOracle", "majority_vote", "make_oracle"]


def majority_vote(decisions: torch.Tensor) -> torch.Tensor:
    """The majority decision (N,) of ``decisions`` (draws, N) int64 (−1 = reject).

    Tie rule: among the most-voted decisions a speaker label beats reject, and among speaker labels the smallest
    index wins (so a tie never turns into a reject; ``torch.mode`` would pick the smallest value, −1)."""
    draws, n = decisions.shape
    if draws == 1:
        return decisions[0]
    width = int(decisions.max()) + 2  # column 0 = reject, column c + 1 = label c
    votes = torch.zeros(n, width, dtype=torch.int64, device=decisions.device)
    votes.scatter_add_(1, (decisions + 1).t(), torch.ones_like(decisions).t())
    cols = torch.arange(width, device=decisions.device)
    # priority within equal counts: labels 0, 1, ... before reject (column 0 gets the lowest bonus)
    bonus = torch.where(cols == 0, 0, width - cols)
    return (votes * (width + 1) + bonus).argmax(dim=1) - 1


class Oracle:
    """Decision access to a system (see the module docstring); subclasses add scores and gradients."""

    __slots__ = ("_Oracle__fact", "_Oracle__evaluate", "_Oracle__evaluate_grad", "_Oracle__read", "device",
                 "claims", "seed", "estimated_threshold", "threshold_info", "generator", "__weakref__")
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
        n, eot = int(n), int(eot)
        self.device = system.device
        self.claims = None if claims is None else claims.to(self.device).long()
        self.seed = int(seed)
        self.estimated_threshold = estimated_threshold
        self.threshold_info: dict | None = None
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        system.seed(seed)
        counts = torch.zeros(n, dtype=torch.int64)
        facts = {
            "task": lambda: system.task, "n_scores": lambda: system.n_scores,
            "n_speakers": lambda: len(system.speakers), "randomized": lambda: system.randomized,
            "threshold": lambda: system.threshold, "n": lambda: n, "eot": lambda: eot,
            "decide": lambda: system.decide,  # the system's own rule (a detector may reject in closed-set tasks)
        }
        oracle = self

        def charged(x: torch.Tensor, owners: torch.Tensor | None, claims: torch.Tensor | None):
            owners = oracle._owners(x, owners)
            counts.add_(torch.bincount(owners, minlength=n) * eot)
            return x.to(oracle.device), oracle._claims(owners, claims)

        def evaluate(x: torch.Tensor, owners: torch.Tensor | None, claims: torch.Tensor | None) -> torch.Tensor:
            """Scores (eot, N, S) of every draw, no gradient; charges N·eot queries."""
            x, claims = charged(x, owners, claims)
            cr = None if claims is None else repeat_batch(claims, eot)
            with torch.no_grad():
                s = system(repeat_batch(x, eot), claims=cr)
            return s.view(eot, x.shape[0], -1)

        def evaluate_grad(x, loss_fn, y, owners, claims):
            """EOT loss (N,), gradient (N, 1, T), scores (eot, N, S); charges N·eot queries."""
            x, claims = charged(x, owners, claims)
            cr = None if claims is None else repeat_batch(claims, eot)
            yr = repeat_batch(y.to(oracle.device), eot)

            def fn(xr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                s = system(xr, claims=cr)
                return loss_fn(s, yr), s

            return eot_loss_and_grad(fn, x, eot)

        # private by closure: no attribute of the oracle is the system or the live count, and every path to the
        # system charges the probes it evaluates
        self.__fact = lambda name: facts[name]()
        self.__evaluate = evaluate
        self.__evaluate_grad = evaluate_grad
        self.__read = counts.clone

    # -- public facts every attack may know --------------------------------------------------------------------
    @property
    def queries(self) -> torch.Tensor:
        """(n,) int64 queries charged to each utterance so far, EOT draws included (a copy: read-only)."""
        return self.__read()

    @property
    def n(self) -> int:
        """The number of utterances the oracle is bound to."""
        return self.__fact("n")

    @property
    def eot(self) -> int:
        """EOT draws per probe (each probe costs ``eot`` queries)."""
        return self.__fact("eot")

    @property
    def task(self) -> Task:
        return self.__fact("task")

    @property
    def n_scores(self) -> int:
        """Number of score columns S (1 for SV, the number of speakers otherwise)."""
        return self.__fact("n_scores")

    @property
    def n_speakers(self) -> int:
        return self.__fact("n_speakers")

    @property
    def randomized(self) -> bool:
        return self.__fact("randomized")

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

    def __real_threshold(self) -> float | None:
        return self.__fact("threshold")

    # -- bookkeeping --------------------------------------------------------------------------------------------
    def _owners(self, x: torch.Tensor, owners: torch.Tensor | None) -> torch.Tensor:
        """The owner (N,) of every probe row, checked: one valid utterance index per row of ``x``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] != 1:
            desc = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ParameterError(f"oracle probes must be a tensor (N, 1, T); got {desc}")
        rows = x.shape[0]
        if owners is None:
            return torch.arange(rows) % self.n
        owners = torch.as_tensor(owners).to("cpu").long().flatten()
        if owners.numel() != rows:
            raise ParameterError(f"oracle: owners has {owners.numel()} entries for {rows} probe(s); give one owner "
                                 "per probe row (each row is charged)")
        if rows and (int(owners.min()) < 0 or int(owners.max()) >= self.n):
            raise ParameterError(f"oracle: owners must be utterance indices in [0, {self.n - 1}]")
        return owners

    def _claims(self, owners: torch.Tensor, claims: torch.Tensor | None = None) -> torch.Tensor | None:
        if claims is not None:
            claims = torch.as_tensor(claims).to(self.device).long().flatten()
            if claims.numel() != owners.numel():
                raise ParameterError(f"oracle: claims has {claims.numel()} entries for {owners.numel()} probe(s)")
            return claims
        return None if self.claims is None else self.claims[owners.to(self.device)]

    def _scores_all(self, x: torch.Tensor, owners: torch.Tensor | None,
                    claims: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (eot, N, S) of every draw of probes (N, 1, T), no gradient; charges N·eot queries."""
        return self.__evaluate(x, owners, claims)

    def _loss_grad_all(self, x, loss_fn, y, owners, claims):
        """EOT loss (N,), gradient (N, 1, T) and scores (eot, N, S); charges N·eot queries."""
        return self.__evaluate_grad(x, loss_fn, y, owners, claims)

    def _decide(self, scores_all: torch.Tensor) -> torch.Tensor:
        eot, n, s = scores_all.shape
        d = self.__fact("decide")(scores_all.reshape(eot * n, s)).view(eot, n)
        return majority_vote(d)

    # -- queries ------------------------------------------------------------------------------------------------
    def decisions(self, x: torch.Tensor, owners: torch.Tensor | None = None,
                  claims: torch.Tensor | None = None) -> torch.Tensor:
        """Decisions (N,) of probes (N, 1, T) (majority vote over EOT draws); N·eot queries."""
        return self._decide(self._scores_all(x, owners, claims))

    def scores(self, x: torch.Tensor, owners: torch.Tensor | None = None,
               claims: torch.Tensor | None = None) -> torch.Tensor:
        raise KnowledgeError(f"a {self.knowledge.value} attack may not read scores")

    def scores_and_decisions(
        self, x: torch.Tensor, owners: torch.Tensor | None = None, claims: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise KnowledgeError(f"a {self.knowledge.value} attack may not read scores")

    def loss_and_grad(
        self,
        x: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        y: torch.Tensor,
        owners: torch.Tensor | None = None,
        claims: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        raise KnowledgeError(f"a {self.knowledge.value} attack may not read gradients")


class DecisionOracle(Oracle):
    __slots__ = ()
    knowledge = Knowledge.DECISIONS


class ScoreOracle(Oracle):
    __slots__ = ()
    knowledge = Knowledge.SCORES

    def scores(self, x: torch.Tensor, owners: torch.Tensor | None = None,
               claims: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (N, S) averaged over EOT draws; N·eot queries."""
        return self.scores_and_decisions(x, owners, claims)[0]

    def scores_and_decisions(
        self, x: torch.Tensor, owners: torch.Tensor | None = None, claims: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self._scores_all(x, owners, claims)
        return s.mean(dim=0), self._decide(s)


class WhiteBoxOracle(ScoreOracle):
    __slots__ = ()
    knowledge = Knowledge.WHITE_BOX

    @property
    def threshold(self) -> float | None:
        if self.estimated_threshold is not None:
            return self.estimated_threshold
        return self._Oracle__real_threshold() if self.task.has_threshold else None

    def loss_and_grad(
        self,
        x: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        y: torch.Tensor,
        owners: torch.Tensor | None = None,
        claims: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """EOT-averaged loss (N,), gradient (N, 1, T), scores (N, S) and decisions (N,) at ``x``; N·eot queries.

        ``loss_fn(scores, labels)`` is per sample; ``y`` (N,) are the labels of the probes.
        """
        loss, grad, s = self._loss_grad_all(x, loss_fn, y, owners, claims)
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
    """The oracle class for ``knowledge``, bound to a batch of ``n`` utterances. A white-box oracle on a backbone
    without gradients (``differentiable = False``, e.g. an ONNX graph) is refused before anything is crafted."""
    knowledge = Knowledge(knowledge)
    model = getattr(getattr(system, "system", None), "model", None)
    if knowledge == Knowledge.WHITE_BOX and not getattr(model, "differentiable", True):
        raise KnowledgeError(f"model {getattr(model, 'name', '?')!r} has no gradient: white-box attacks cannot run "
                             f"against it; use a score-based attack (fakebob, pgd-nes, square, ...) or a "
                             f"decision-based one (hsja, kenan, ...)")
    return _ORACLES[knowledge](
        system, n=n, claims=claims, eot=eot, seed=seed, estimated_threshold=estimated_threshold
    )
