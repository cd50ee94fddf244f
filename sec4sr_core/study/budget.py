"""Budgets that hold on disk: the adversarial audio a study saves (16-bit PCM) stays inside the attack's declared
ε-ball, and a row whose saved audio leaves it anyway is flagged.

Rounding ``adv`` to the 16-bit grid can add up to half a step (1/65536) to a sample of ``adv − x``: at ε = 0.002,
66 LSB, every saved row measured L∞ 0.0020142 (66 steps) before. Where plain rounding leaves the ball, the sample
(L∞) or the whole utterance (L2) is rounded *toward the benign sample* instead; since the benign audio read from a
16-bit file lies on the grid, that never increases any ``|adv − x|`` and so never leaves the ball.

Budgets may be per utterance (``snr_db``, :mod:`sec4sr_core.sdk.attack_params`): ε is then a (B,) tensor, the
bound the attack promised for each utterance of its last run, and every check here is per row.
"""

from __future__ import annotations

from typing import Any

import torch

from sec4sr_core.sdk.audio import INT16_SCALE, quantize_16bit

#: relative slack of the budget check (float32 arithmetic on ε)
TOLERANCE = 1e-6


def declared_budget(attack: Any) -> tuple[str, float | torch.Tensor] | None:
    """``(norm, ε)`` an attack declares, or None for unbounded attacks (CW2, HSJA minimise their perturbation
    instead). ε is the (B,) per-utterance bound of the attack's last run when it recorded one
    (``attack.last_budget``, set by :meth:`Attack.run`; per utterance with ``snr_db``), else the numeric
    ``params.epsilon`` with the ``norm`` class or instance attribute ``"linf"``/``"l2"``."""
    last = getattr(attack, "last_budget", None)
    if isinstance(last, tuple) and len(last) == 2 and last[0] in ("linf", "l2"):
        return last[0], last[1]
    norm = getattr(attack, "norm", None)
    eps = getattr(getattr(attack, "params", None), "epsilon", None)
    if norm not in ("linf", "l2") or not isinstance(eps, (int, float)) or isinstance(eps, bool):
        return None
    return norm, float(eps)


def _toward(adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``adv`` on the 16-bit grid, rounded toward ``x`` (truncation of ``adv − x`` in grid steps)."""
    up = torch.floor(adv * INT16_SCALE) / INT16_SCALE
    down = torch.ceil(adv * INT16_SCALE) / INT16_SCALE
    q = torch.where(adv >= x, up, down)
    return q.clamp(-1.0, (INT16_SCALE - 1) / INT16_SCALE).to(adv.dtype)


def distance(adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-utterance L∞ or L2 norm (B,) of ``adv − x`` (float64)."""
    d = (adv.double() - x.double()).flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


def _limit(eps: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The bound with its float slack as float64: a scalar or (B,) on ``like``'s device."""
    e = torch.as_tensor(eps, dtype=torch.float64).to(like.device)
    return e * (1 + TOLERANCE)


def quantize_within(adv: torch.Tensor, x: torch.Tensor,
                    budget: tuple[str, float | torch.Tensor] | None) -> torch.Tensor:
    """``adv`` (B, 1, T) as a 16-bit file holds it, inside ``budget`` = (norm, ε) around ``x`` wherever rounding
    alone would leave it (see the module docstring); plain rounding when there is no budget."""
    q = quantize_16bit(adv)
    if budget is None:
        return q
    norm, eps = budget
    limit = _limit(eps, q)
    if norm == "linf":
        lim = limit.view(-1, *([1] * (q.dim() - 1))) if limit.dim() else limit
        over = (q.double() - x.double()).abs() > lim
        return torch.where(over, _toward(adv, x), q) if bool(over.any()) else q
    over = distance(q, x, "l2") > limit
    if not bool(over.any()):
        return q
    return torch.where(over.view(-1, *([1] * (q.dim() - 1))), _toward(adv, x), q)


def over_budget(adv: torch.Tensor, x: torch.Tensor, budget: tuple[str, float | torch.Tensor] | None) -> torch.Tensor:
    """(B,) bool: utterances whose ``adv`` lies outside the declared budget around ``x``."""
    if budget is None:
        return torch.zeros(adv.shape[0], dtype=torch.bool)
    norm, eps = budget
    return (distance(adv, x, norm) > _limit(eps, adv)).cpu()
