"""The attack interface: an algorithm that reaches the system only through an oracle of its knowledge level.

:meth:`Attack.run` is a template method. It does the bookkeeping every attack shares and calls one hook,
:meth:`Attack.perturb`, for the algorithm::

    run(oracle, x, y, targeted)
      1. checks x (B, 1, T) and y (B,) against the oracle and the task; moves both to the oracle's device
      2. builds the Goal (labels or targets, the success criterion, the task's loss)
      3. perturb(oracle, x, goal)  -> Crafted(adv, decisions, extra), or just adv       <- the attack's algorithm
      4. evaluates the decisions the attack did not record (one decision query per such utterance), judges success
         by the library's criterion (Goal.met), reads the queries from the oracle, flags utterances over the
         declared query budget, and assembles the AttackResult

An attack therefore writes only its algorithm; an attack written before the template (overriding ``run``) still
works. Shared parameters (ε, steps/step size, κ, loss, query budget) are mixins in
:mod:`sec4sr_core.sdk.attack_params`. Attacks that craft on held-out utterances (a universal perturbation) declare
:meth:`Attack.crafting_request`; the core (:mod:`sec4sr_core.compose.crafting`) or the caller
(``attack(system, x, y, crafting=waves)``) hands the waveforms over with :meth:`Attack.set_crafting` before ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from sec4sr_core.base.errors import ParameterError, PluginError
from sec4sr_core.base.params import Params
from sec4sr_core.base.types import REJECT, Knowledge, Task
from sec4sr_core.sdk.attack_params import Budget
from sec4sr_core.sdk.checks import check_waves
from sec4sr_core.sdk.interfaces import Component
from sec4sr_core.sdk.losses import LossFn, resolve_loss, success
from sec4sr_core.sdk.oracle import Oracle, make_oracle
from sec4sr_core.sdk.system import as_defended

__all__ = ["NOT_EVALUATED", "Attack", "AttackResult", "Crafted", "CraftingRequest", "Goal", "affordable",
           "check_labels"]

#: decision placeholder for "not evaluated yet" in :attr:`Crafted.decisions` (−1 is a legal decision: reject)
NOT_EVALUATED = -2


@dataclass
class AttackResult:
    """What an attack returns, per utterance (B = batch size)."""

    adv: torch.Tensor  #: (B, 1, T) adversarial waveforms in [-1, 1]
    success: torch.Tensor  #: (B,) bool, by the library's criterion (:meth:`Goal.met` of ``decisions``)
    queries: torch.Tensor  #: (B,) int64 system queries spent
    decisions: torch.Tensor  #: (B,) int64 final decision of the attacked system on ``adv``
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Crafted:
    """What :meth:`Attack.perturb` returns: the adversarial batch and what the attack already knows about it."""

    adv: torch.Tensor  #: (B, 1, T) in [-1, 1], on the oracle's device
    #: (B,) int64 decisions of the system on ``adv`` where the attack evaluated them, :data:`NOT_EVALUATED`
    #: elsewhere; None = none evaluated. The template evaluates the missing ones (one query each).
    decisions: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)  #: attack-specific outputs (CPU tensors or plain values)


@dataclass(frozen=True)
class CraftingRequest:
    """Held-out utterances an attack crafts on before it runs (e.g. a universal perturbation)."""

    dataset: str | None  #: dataset spec or folder; None = the dataset the attacked utterances come from
    split: str  #: split of that dataset, e.g. ``dev`` (disjoint from the attacked ``test`` utterances)
    size: int  #: number of utterances: the first ``size`` of the split


@dataclass(frozen=True)
class Goal:
    """What an attack must reach, per utterance: ``y`` (B,) int64 on the oracle's device holds the true labels
    (untargeted: any other decision succeeds) or the targets (targeted: that decision succeeds); −1 = reject."""

    y: torch.Tensor
    targeted: bool

    def labels(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The labels or targets (N,) of the utterances ``idx`` (all when None)."""
        return self.y if idx is None else self.y[idx]

    def met(self, decisions: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) bool: the decisions (N,) of the utterances ``idx`` (all when None) meet the goal."""
        return success(decisions, self.labels(idx), self.targeted)

    def objective(self, oracle: Oracle, loss: str = "margin", kappa: float = 0.0, clip: bool = False,
                  threshold: float | None = None) -> LossFn:
        """The per-utterance loss ``f(scores (N, S), labels (N,)) -> (N,)`` to **minimise** for this goal on the
        oracle's task (:func:`sec4sr_core.sdk.losses.resolve_loss`). SV/OSI read ``oracle.threshold`` (the real one
        for white-box oracles, the estimate for black-box ones) unless ``threshold`` is given."""
        th = threshold
        if th is None and oracle.task.has_threshold:
            th = oracle.threshold
        return resolve_loss(loss, oracle.task, self.targeted, kappa, th, clip)


def affordable(oracle: Oracle, cost: int, max_queries: int | None, idx: torch.Tensor | None = None) -> torch.Tensor:
    """(len(idx),) bool on the oracle's device: utterances ``idx`` (all when None) that can still pay ``cost``
    probes (× EOT draws) without exceeding ``max_queries`` (None = unlimited)."""
    q = oracle.queries if idx is None else oracle.queries[idx.cpu()]
    if max_queries is None:
        return torch.ones(q.shape[0], dtype=torch.bool, device=oracle.device)
    return (q + cost * oracle.eot <= max_queries).to(oracle.device)


def check_labels(oracle: Oracle, y: torch.Tensor, targeted: bool) -> None:
    """Refuse labels (B,) that make no sense for the oracle's task (one clear line instead of an index error)."""
    s = oracle.n_scores
    bad = (y < REJECT) | (y >= max(s, 1))
    if oracle.task == Task.SV:
        bad = (y != 0) & (y != REJECT)
    elif oracle.task.closed_set:
        bad = bad | (y == REJECT)
    if bool(bad.any()):
        raise ParameterError(
            f"labels {sorted(set(y[bad].tolist()))} are not valid {'targets' if targeted else 'labels'} "
            f"for task {oracle.task.value} with {s} score column(s)"
        )


def _check_batch(oracle: Oracle, x: Any, y: Any) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] != 1 or not x.is_floating_point():
        desc = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ParameterError(f"an attack takes waveforms x of shape (B, 1, T), floating point; got {desc}")
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        desc = str(tuple(y.shape)) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ParameterError(f"an attack takes one label per utterance, y of shape ({x.shape[0]},); got {desc}")
    if oracle.n != x.shape[0]:
        raise ParameterError(f"the oracle is bound to {oracle.n} utterance(s) but the batch holds {x.shape[0]}")


class Attack(Component):
    """An adversarial attack. It reaches the system only through an oracle of its ``knowledge`` level.

    Implement :meth:`perturb` (the algorithm); :meth:`run` does the bookkeeping around it (see the module
    docstring). From Python, ``PGD(epsilon=0.002)(system, x, y)`` builds the oracle for you and returns the
    adversarial waveforms (the full :class:`AttackResult` is kept in ``attack.last_result``).
    """

    knowledge: ClassVar[Knowledge] = Knowledge.WHITE_BOX
    #: "linf" or "l2" when ``params.epsilon`` bounds the perturbation in that norm; None when unbounded
    norm: ClassVar[str | None] = None
    #: True for black-box attacks that estimate the SV/OSI threshold: the result then carries
    #: ``extra["threshold_estimate"]`` (the oracle's ``estimated_threshold``)
    estimates_threshold: ClassVar[bool] = False

    def __init__(self, params: Params | dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.params = self.make_params(params, **kwargs)
        self.last_result: AttackResult | None = None
        #: (N, 1, T) crafting waveforms handed over by :meth:`set_crafting` (None until then)
        self.crafting: torch.Tensor | None = None
        #: where :attr:`crafting` came from (e.g. ``embedded:dev[:32]``), for the result's ``extra``
        self.crafting_source: str | None = None
        #: (N,) claimed speakers of the crafting utterances (SV), handed over with them; None = not given
        self.crafting_claims: torch.Tensor | None = None
        #: ``(norm, bound (B,))`` the last run promised (see :meth:`declared_budget`); None before a run
        self.last_budget: tuple[str, torch.Tensor] | None = None

    @classmethod
    def make_params(cls, params: Params | dict[str, Any] | None = None, **kwargs: Any) -> Params:
        """Validate ``params`` updated with ``kwargs``. A Params instance contributes only the values that were set
        (not the defaults filled in), so budget defaults that depend on other fields are derived again: ``norm=l2``
        added to default parameters gets the L2 default, not the L∞ ε (:mod:`~sec4sr_core.sdk.attack_params`)."""
        if isinstance(params, Params):
            params = params.model_dump(exclude_unset=True)
        return super().make_params(params, **kwargs)

    # -- the template -----------------------------------------------------------------------------------------
    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> AttackResult:
        """Attack ``x`` (B, 1, T) in [-1, 1]. ``y`` (B,) is the true label (untargeted) or the target (targeted);
        −1 = reject. Returns the :class:`AttackResult` (``adv`` on the oracle's device, the rest on the CPU)."""
        _check_batch(oracle, x, y)
        x = x.to(oracle.device)
        y = y.to(oracle.device).long()
        check_labels(oracle, y, targeted)
        goal = Goal(y, bool(targeted))
        out = self.perturb(oracle, x, goal)
        return self.finish(oracle, x, goal, out)

    def perturb(self, oracle: Oracle, x: torch.Tensor, goal: Goal) -> Crafted | torch.Tensor:
        """The attack's algorithm: adversarial examples for ``x`` (B, 1, T) on the oracle's device. Return a
        :class:`Crafted` (with the decisions already evaluated, to save queries) or just the ``adv`` tensor."""
        raise NotImplementedError(f"{type(self).__name__} implements neither perturb() nor run()")

    def finish(self, oracle: Oracle, x: torch.Tensor, goal: Goal, out: Crafted | torch.Tensor) -> AttackResult:
        """The :class:`AttackResult` of :meth:`perturb`'s output: missing decisions evaluated through the oracle,
        success by :meth:`Goal.met`, queries read from the oracle."""
        if isinstance(out, torch.Tensor):
            out = Crafted(out)
        adv = out.adv.detach()
        if adv.shape != x.shape:
            raise PluginError(f"attack {self.name!r}: perturb returned adv of shape {tuple(adv.shape)}, "
                              f"expected {tuple(x.shape)}")
        n = x.shape[0]
        if out.decisions is None:
            dec = torch.full((n,), NOT_EVALUATED, dtype=torch.int64, device=adv.device)
        else:
            dec = out.decisions.to(adv.device, torch.int64)
        missing = (dec == NOT_EVALUATED).nonzero().flatten()
        if missing.numel():
            dec[missing] = oracle.decisions(adv[missing], owners=missing.cpu()).to(dec.device, torch.int64)
        extra = dict(out.extra)
        if self.estimates_threshold and oracle.task.has_threshold:
            extra.setdefault("threshold_estimate", oracle.estimated_threshold)
        if self.crafting_source is not None:
            extra.setdefault("crafting", self.crafting_source)
        declared = self.declared_budget(x)
        #: (norm, bound (B,)) of the last run: what :func:`sec4sr_core.study.budget.declared_budget` reads
        self.last_budget = declared
        queries = oracle.queries.clone()
        budget = getattr(self.params, "max_queries", None)
        if budget is not None and bool((queries > budget).any()):
            extra.setdefault("over_query_budget", queries > budget)
        return AttackResult(adv, goal.met(dec).cpu(), queries, dec.cpu(), extra)

    # -- the perturbation budget ------------------------------------------------------------------------------
    def declared_budget(self, x: torch.Tensor) -> tuple[str, torch.Tensor] | None:
        """``(norm, bound (B,) float64 on the CPU)`` this attack promises for the batch ``x`` (B, 1, T): ε (L∞) or
        the radius (L2) per utterance — fixed or from ``snr_db`` (:class:`~sec4sr_core.sdk.attack_params.Budget`)
        — or None for unbounded attacks (no ``norm`` or no numeric ε)."""
        norm = getattr(self, "norm", None)
        if norm not in ("linf", "l2"):
            return None
        p = self.params
        if isinstance(p, Budget):
            return norm, p.budget(x).detach().double().cpu()
        eps = getattr(p, "epsilon", None)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool):
            return None
        return norm, torch.full((x.shape[0],), float(eps), dtype=torch.float64)

    def budget(self, x: torch.Tensor) -> torch.Tensor:
        """The per-utterance bound (B,) of the attack's parameters for ``x`` (B, 1, T), on ``x``'s device and
        dtype (see :meth:`~sec4sr_core.sdk.attack_params.Budget.budget`)."""
        return self.params.budget(x)

    # -- helpers for perturb ----------------------------------------------------------------------------------
    def affordable(self, oracle: Oracle, cost: int, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(len(idx),) bool: utterances ``idx`` (all when None) that can pay ``cost`` more probes within
        ``params.max_queries`` (unlimited when the attack has no such parameter or it is None)."""
        return affordable(oracle, cost, getattr(self.params, "max_queries", None), idx)

    # -- crafting data ----------------------------------------------------------------------------------------
    def crafting_request(self) -> CraftingRequest | None:
        """The held-out utterances this attack crafts on, or None (the default: it needs none)."""
        return None

    def set_crafting(self, waves: torch.Tensor, source: str = "given", claims: torch.Tensor | None = None) -> None:
        """Hand over crafting waveforms (N, 1, T) float in [-1, 1] (any length: the attack fits them); ``source``
        says where they came from (stored in the result's ``extra["crafting"]``). For SV, ``claims`` (N,) are the
        enrolled speakers the crafting trials claim (the crafting set is then a set of SV trials built like the
        study's own: genuine utterances claiming their speaker, imposters a seeded random one)."""
        if not isinstance(waves, torch.Tensor) or waves.dim() != 3 or waves.shape[1] != 1 or waves.shape[0] < 1 \
                or not waves.is_floating_point():
            desc = f"{tuple(waves.shape)} {waves.dtype}" if isinstance(waves, torch.Tensor) else type(waves).__name__
            raise ParameterError(f"{self.name}: crafting waveforms must be (N, 1, T) floating point, N ≥ 1; "
                                 f"got {desc}")
        if not bool(torch.isfinite(waves).all()) or float(waves.abs().max()) > 1.0:
            raise ParameterError(f"{self.name}: crafting waveforms must be finite and in [-1, 1]")
        if claims is not None and (not isinstance(claims, torch.Tensor) or claims.shape != (waves.shape[0],)
                                   or claims.is_floating_point() or claims.dtype == torch.bool):
            raise ParameterError(f"{self.name}: crafting claims must be an integer tensor ({waves.shape[0]},), one "
                                 "claimed speaker per crafting utterance")
        self.crafting = waves.detach()
        self.crafting_source = source
        self.crafting_claims = None if claims is None else claims.detach().long()


    # -- the Python API ---------------------------------------------------------------------------------------
    def __call__(
        self,
        system: Any,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        targeted: bool = False,
        claims: torch.Tensor | None = None,
        eot: int = 1,
        seed: int = 0,
        crafting: torch.Tensor | None = None,
        crafting_claims: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attack ``system`` on ``x`` (B, 1, T); ``y`` defaults to the system's own benign decisions. ``crafting``
        (N, 1, T) hands an attack with a :meth:`crafting_request` its crafting utterances (for SV with the speakers
        they claim, ``crafting_claims`` (N,))."""
        system = as_defended(system)
        # one clear line instead of a hang (a 1-D x) or raw torch text (float64, NaN, wrong-length y)
        check_waves(x, y, device=system.device, claims=claims, labels_what="y")
        if crafting is not None:
            check_waves(crafting, device=system.device, what="crafting")
            self.set_crafting(crafting, claims=crafting_claims)
        if y is None:
            with torch.no_grad():
                y = system.decide(system(x, claims=claims))
        oracle = make_oracle(system, self.knowledge, claims=claims, eot=eot, seed=seed, n=x.shape[0])
        self.last_result = self.run(oracle, x, y, targeted=targeted)
        return self.last_result.adv
