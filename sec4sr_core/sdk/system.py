"""Enrolled systems and defended systems.

* :class:`SpeakerSystem` = a backbone + a task + (for embedding models) enrolled speaker embeddings + a threshold.
  ``system(x, claims)`` returns scores (B, S); :meth:`SpeakerSystem.decide` turns scores into decisions (B,).
* :class:`DefendedSystem` puts a chain of defenses in front of (and inside) a system, each at its feature level,
  sequentially or averaged. Non-differentiable defenses are wrapped in BPDA (identity backward), so every defended
  system has a gradient.

Decision rules (strict ``>`` against the threshold; a threshold of 0.0 is a threshold):

* CSI-E / CSI-NE: ``argmax(scores)``.
* SV (scores (B, 1) against the claimed speaker): ``0`` if ``score > θ`` else ``-1``.
* OSI: ``argmax(scores)`` if ``max(scores) > θ`` else ``-1``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from sec4sr_core.sdk.adaptive import BPDA
from sec4sr_core.base.errors import ParameterError, Sec4srError
from sec4sr_core.sdk.interfaces import REJECT, Defense, SpeakerModel, Task


def decide(scores: torch.Tensor, task: Task, threshold: float | None) -> torch.Tensor:
    """Decisions (B,) int64 from scores (B, S) for ``task`` (see module docstring)."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be (B, S), got {tuple(scores.shape)}")
    best, arg = scores.max(dim=1)
    if task == Task.SV:
        if threshold is None:
            raise Sec4srError("SV needs a threshold: run `sec4sr threshold` or pass one")
        return torch.where(scores[:, 0] > threshold, 0, REJECT).to(torch.int64)
    if task == Task.OSI:
        if threshold is None:
            raise Sec4srError("OSI needs a threshold: run `sec4sr threshold` or pass one")
        return torch.where(best > threshold, arg, torch.full_like(arg, REJECT)).to(torch.int64)
    return arg.to(torch.int64)


class SpeakerSystem(nn.Module):
    """A backbone enrolled for a task. Scores are raw (cosine, PLDA LLR or logits); no softmax."""

    def __init__(
        self,
        model: SpeakerModel,
        task: Task | str,
        speakers: Sequence[str],
        enrolled: torch.Tensor | None = None,
        threshold: float | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = Task(task)
        self.speakers = list(speakers)
        if self.task not in model.tasks:
            raise ParameterError(
                f"model {model.name!r} does not support task {self.task.value} "
                f"(supports: {', '.join(t.value for t in model.tasks)})"
            )
        if model.output == "embedding":
            if enrolled is None:
                raise ParameterError(f"model {model.name!r} needs enrolled speakers for {self.task.value}")
            self.register_buffer("enrolled", enrolled.detach().clone())
        else:
            self.enrolled = None
        self.threshold = threshold

    @property
    def levels(self) -> tuple[str, ...]:
        return self.model.levels

    @property
    def n_scores(self) -> int:
        return 1 if self.task == Task.SV else len(self.speakers)

    def scores_from(self, x: torch.Tensor, level: str = "wave", claims: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B, S) of ``x`` given at feature ``level``. SV needs ``claims`` (B,): claimed speaker indices."""
        out = self.model.embed(x, level)
        if self.model.output == "logits":
            return out
        scores = self.model.score(out, self.enrolled)
        if self.task == Task.SV:
            if claims is None:
                raise Sec4srError("SV scores need the claimed speaker of each utterance (claims)")
            claims = claims.to(scores.device)
            scores = scores.gather(1, claims.view(-1, 1))
        return scores

    def forward(self, x: torch.Tensor, claims: torch.Tensor | None = None) -> torch.Tensor:
        return self.scores_from(x, "wave", claims)

    def decide(self, scores: torch.Tensor) -> torch.Tensor:
        return decide(scores, self.task, self.threshold)


class DefendedSystem(nn.Module):
    """A :class:`SpeakerSystem` behind a chain of defenses.

    ``order="sequential"``: walk the model's levels in order, computing each level only when a defense acts there;
    apply that level's defenses in the order given; continue to the scores.
    ``order="average"``: run each defense alone on its own branch (clean input lifted to its level) and average the
    branches' scores with ``torch.stack(...).mean(0)``, so the gradient is the mean of every branch's gradient.
    """

    def __init__(self, system: SpeakerSystem, defenses: Sequence[Defense] = (), order: str = "sequential") -> None:
        super().__init__()
        if order not in ("sequential", "average"):
            raise ParameterError(f"defense order must be 'sequential' or 'average', got {order!r}")
        self.system = system
        self.order = order
        levels = system.levels
        for d in defenses:
            if d.level not in levels:
                raise ParameterError(
                    f"defense {d.name!r} acts on level {d.level!r}, which model {system.model.name!r} does not have "
                    f"(levels: {', '.join(levels)})"
                )
            kind = "wave" if d.level == "wave" else "feature"
            if kind not in d.acts_on:
                raise ParameterError(f"defense {d.name!r} cannot act on level {d.level!r} (acts on: {d.acts_on})")
        self.defenses = nn.ModuleList(defenses)
        pairs = [(d, d if d.differentiable else BPDA(d)) for d in defenses]
        if order == "sequential":
            # stable sort by level position: defenses at the same level keep the order given
            pairs.sort(key=lambda pair: levels.index(pair[0].level))
        #: (defense, callable) in application order; the callable is the defense itself or its BPDA wrapper
        self._steps = pairs

    # --- properties used by attacks, oracles and reports ---------------------------------------------------------
    @property
    def task(self) -> Task:
        return self.system.task

    @property
    def threshold(self) -> float | None:
        return self.system.threshold

    @property
    def speakers(self) -> list[str]:
        return self.system.speakers

    @property
    def n_scores(self) -> int:
        return self.system.n_scores

    @property
    def randomized(self) -> bool:
        return any(d.randomized for d in self.defenses)

    @property
    def differentiable(self) -> bool:
        return all(d.differentiable for d in self.defenses)

    @property
    def device(self) -> torch.device:
        return self.system.model.device

    def label(self) -> str:
        if not len(self.defenses):
            return "none"
        joiner = "+" if self.order == "sequential" else "|"
        return joiner.join(d.label() for d in self.defenses)

    def seed(self, seed: int) -> None:
        """Seed every randomized defense (each from its own offset, so two AT defenses do not share noise)."""
        for i, d in enumerate(self.defenses):
            d.seed(seed * 1000 + i, self.device)

    # --- forward ---------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, claims: torch.Tensor | None = None) -> torch.Tensor:
        if not len(self.defenses):
            return self.system(x, claims)
        model = self.system.model
        if self.order == "sequential":
            level = "wave"
            for d, step in self._steps:
                if d.level != level:
                    x = model.to_level(x, level, d.level)
                    level = d.level
                x = step(x)
            return self.system.scores_from(x, level, claims)
        branches = []
        for d, step in self._steps:
            feats = x if d.level == "wave" else model.to_level(x, "wave", d.level)
            branches.append(self.system.scores_from(step(feats), d.level, claims))
        return torch.stack(branches, dim=0).mean(dim=0)

    def decide(self, scores: torch.Tensor) -> torch.Tensor:
        return self.system.decide(scores)


def as_defended(system: Any) -> DefendedSystem:
    """Wrap a plain :class:`SpeakerSystem` in an (undefended) :class:`DefendedSystem`."""
    if isinstance(system, DefendedSystem):
        return system
    if isinstance(system, SpeakerSystem):
        return DefendedSystem(system)
    raise TypeError(f"expected a SpeakerSystem or DefendedSystem, got {type(system).__name__}")
