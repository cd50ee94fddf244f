"""Attack objectives for every task, targeted and untargeted (SEC4SR §7), as per-sample losses to **minimise**.

The predecessor returned a loss and a ``grad_sign``; here the sign is folded in, so every attack descends. For the
margin losses an attack has succeeded once the (unclipped) loss is below zero for κ = 0.

Notation: ``s`` scores (B, S), ``y`` the true label (untargeted) or the target label (targeted), ``θ`` the threshold,
``κ`` the confidence, ``s_other = max_{j≠y} s_j`` (the true entry is excluded with a mask, not with a magic constant).

* CE (CSI only): untargeted ``-CE(s, y)``; targeted ``CE(s, y)``; ``y = -1`` gives 0.
* Margin, CSI: untargeted ``s_y - s_other + κ``; targeted ``s_other - s_y + κ``; ``y = -1`` gives 0.
* Margin, OSI, y enrolled: targeted ``max(s_other, θ) - s_y + κ``; untargeted
  ``min(max_j s_j + κ - θ, max(s_y, θ) + κ - s_other)`` (reject or misidentify, whichever is closer).
* Margin, OSI, y = -1: targeted (→ reject) ``max_j s_j + κ - θ``; untargeted (imposter → accept) ``θ + κ - max_j s_j``.
* Margin, SV (S = 1, y ∈ {0, -1}): y = 0 targeted / y = -1 untargeted (→ accept): ``θ + κ - s``;
  y = 0 untargeted / y = -1 targeted (→ reject): ``s + κ - θ``.
* ``clip=True`` returns ``max(f, 0)`` (CW2).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.sdk.interfaces import REJECT, Task

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _other_max(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} s_j, with y = -1 rows giving the plain max."""
    if scores.shape[1] == 1:
        return torch.full_like(scores[:, 0], float("-inf"))
    mask = F.one_hot(y.clamp(min=0), scores.shape[1]).bool() & (y >= 0).unsqueeze(1)
    return scores.masked_fill(mask, float("-inf")).max(dim=1).values


def _true_score(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return scores.gather(1, y.clamp(min=0).view(-1, 1)).squeeze(1)


def margin_loss(
    scores: torch.Tensor,
    y: torch.Tensor,
    task: Task | str,
    targeted: bool = False,
    kappa: float = 0.0,
    threshold: float | None = None,
    clip: bool = False,
) -> torch.Tensor:
    """Per-sample margin loss (B,) as defined in the module docstring."""
    task = Task(task)
    y = y.to(scores.device).long()
    best = scores.max(dim=1).values
    if task in (Task.CSI_E, Task.CSI_NE):
        s_y, s_o = _true_score(scores, y), _other_max(scores, y)
        f = (s_o - s_y + kappa) if targeted else (s_y - s_o + kappa)
        f = torch.where(y == REJECT, torch.zeros_like(f), f)
    else:
        if threshold is None:
            raise ParameterError(f"the {task.value} margin loss needs a threshold (real or estimated)")
        th = torch.as_tensor(threshold, dtype=scores.dtype, device=scores.device)
        if task == Task.SV:
            if scores.shape[1] != 1:
                raise ValueError("SV scores must have exactly one column")
            if bool(((y != 0) & (y != REJECT)).any()):
                raise ValueError("SV labels must be 0 (accept) or -1 (reject)")
            s = scores[:, 0]
            to_accept = (y == 0) == targeted
            f = torch.where(to_accept, th + kappa - s, s + kappa - th)
        else:
            s_y, s_o = _true_score(scores, y), _other_max(scores, y)
            enrolled = y != REJECT
            if targeted:
                f_enr = torch.maximum(s_o, th) - s_y + kappa
                f_rej = best + kappa - th
            else:
                f_enr = torch.minimum(best + kappa - th, torch.maximum(s_y, th) + kappa - s_o)
                f_rej = th + kappa - best
            f = torch.where(enrolled, f_enr, f_rej)
    return f.clamp(min=0) if clip else f


def ce_loss(scores: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Per-sample cross-entropy objective (B,) to minimise; rows with y = -1 give 0."""
    y = y.to(scores.device).long()
    ce = F.cross_entropy(scores, y.clamp(min=0), reduction="none")
    f = ce if targeted else -ce
    return torch.where(y == REJECT, torch.zeros_like(f), f)


def resolve_loss(
    name: str,
    task: Task | str,
    targeted: bool = False,
    kappa: float = 0.0,
    threshold: float | None = None,
    clip: bool = False,
) -> LossFn:
    """``loss_fn(scores, y) -> (B,)`` for ``name`` in {"ce", "margin"}. SV and OSI always use the margin loss."""
    task = Task(task)
    name = name.lower()
    if name not in ("ce", "margin"):
        raise ParameterError(f"unknown loss {name!r} (choose 'ce' or 'margin')")
    if name == "ce" and task.closed_set:
        return lambda scores, y: ce_loss(scores, y, targeted)
    return lambda scores, y: margin_loss(scores, y, task, targeted, kappa, threshold, clip)


def success(decisions: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Decision-based success (B,) bool: targeted ``decision == y``; untargeted ``decision != y``."""
    y = y.to(decisions.device)
    return decisions == y if targeted else decisions != y
