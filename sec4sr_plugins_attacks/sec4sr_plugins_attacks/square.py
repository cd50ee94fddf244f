"""Square Attack (Andriushchenko et al., ECCV 2020), L∞, score-based, adapted to waveforms.

Start from ``x + ε·s`` with a random sign s per sample (the 1-D analogue of the vertical-stripe initialisation). Each
iteration proposes, per active utterance, one random window of ``h = max(1, round(p_i·T))`` samples set to
``x ± ε`` (one random sign for the window) and keeps it when the margin (or CE) loss falls: one query per utterance
per iteration. ``p_i`` starts at ``p_init`` and is halved on the paper's schedule (iterations
10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10 000, rescaled to ``max_iter``). An utterance is done when its
decision meets the goal with a negative margin loss; ``max_queries`` is honoured. SV/OSI use an estimated
threshold.

Defaults (5000 iterations, ``p_init`` = 0.1) are the paper's query budget with a larger first window than its
ImageNet setting: at ε = 0.002 on 3 s of speech a GE2E trial needs thousands of queries (``docs/attacks.md``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from sec4sr_core.interfaces import Attack, AttackResult, Knowledge
from sec4sr_core.losses import success
from sec4sr_core.params import Params

from .common import Best, affordable, check_labels, ensure_threshold, objective

_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_fraction(p_init: float, it: int, max_iter: int) -> float:
    """The fraction of the signal changed at iteration ``it`` (halved at each rescaled schedule point)."""
    i = int(it / max_iter * 10000)
    return p_init / (2 ** sum(i > s for s in _SCHEDULE))


class SquareParams(Params):
    epsilon: float = Field(0.002, gt=0, le=1, description="L∞ bound in [-1, 1] amplitude units")
    max_iter: int = Field(5000, ge=1, description="iterations (one query per active utterance each)")
    p_init: float = Field(0.1, gt=0, le=1, description="initial fraction of the samples changed per proposal")
    loss: Literal["ce", "margin"] = Field("margin", description="objective; SV/OSI always use the margin loss")
    kappa: float = Field(0.0, ge=0, description="confidence κ of the margin loss (score units)")
    max_queries: int | None = Field(None, ge=1, description="query budget per utterance (None = max_iter bound)")


class Square(Attack):
    """Square Attack: random-search L∞ attack with shrinking windows (score-based)."""

    name = "square"
    Params = SquareParams
    knowledge = Knowledge.SCORES
    norm = "linf"

    def run(self, oracle, x, y, targeted=False) -> AttackResult:
        p = self.params
        x = x.to(oracle.device)
        y = y.to(oracle.device).long()
        check_labels(oracle, y, targeted)
        n, t, dev = x.shape[0], x.shape[-1], x.device
        ensure_threshold(oracle, x, p.epsilon, max_queries=p.max_queries)
        loss_fn = objective(oracle, p.loss, targeted, p.kappa)
        gen = oracle.generator
        sign = torch.randint(0, 2, x.shape, generator=gen, device=dev).to(x.dtype) * 2 - 1
        adv = (x + p.epsilon * sign).clamp(-1.0, 1.0)
        scores, dec = oracle.scores_and_decisions(adv)
        cur = loss_fn(scores, y)
        best = Best(x)
        best.update(adv, cur, success(dec, y, targeted), dec)
        all_idx = torch.arange(n, device=dev)
        pos = torch.arange(t, device=dev).view(1, 1, -1)
        for it in range(p.max_iter):
            active = ~(best.ok & (best.loss < 0)) & affordable(oracle, 1, p.max_queries)
            idx = all_idx[active]
            if idx.numel() == 0:
                break
            k = idx.numel()
            h = max(1, round(window_fraction(p.p_init, it, p.max_iter) * t))
            start = torch.randint(0, t - h + 1, (k,), generator=gen, device=dev).view(-1, 1, 1)
            s = (torch.randint(0, 2, (k,), generator=gen, device=dev).to(x.dtype) * 2 - 1).view(-1, 1, 1)
            window = (pos >= start) & (pos < start + h)
            cand = torch.where(window, (x[idx] + p.epsilon * s).clamp(-1.0, 1.0), adv[idx])
            scores, dec = oracle.scores_and_decisions(cand, owners=idx.cpu())
            loss = loss_fn(scores, y[idx])
            better = loss < cur[idx]
            rows = idx[better]
            adv[rows] = cand[better]
            cur[rows] = loss[better]
            best.update(cand, loss, success(dec, y[idx], targeted), dec, idx)
        extra = {"threshold_estimate": oracle.estimated_threshold} if oracle.task.has_threshold else {}
        return best.result(oracle, y, targeted, **extra)
