"""Square Attack (Andriushchenko et al., ECCV 2020), L∞, score-based, adapted to waveforms.

Start from ``x + ε·s`` with a random sign s per sample (the 1-D analogue of the vertical-stripe initialisation). Each
iteration proposes, per active utterance, one random window of ``h = max(1, round(p_i·T))`` samples set to
``x ± ε`` (one random sign for the window) and keeps it when the margin (or CE) loss falls: one query per utterance
per iteration. ``p_i`` starts at ``p_init`` and is halved on the paper's schedule (iterations
10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10 000, rescaled to ``max_iter``). An utterance is done when its
decision meets the goal — with the margin loss also once that margin is negative (κ reached); the cross-entropy
is never negative, so with ``loss=ce`` the decision alone ends it (targeted CE used to run all ``max_iter``).
``max_queries`` is honoured. SV/OSI use an estimated threshold. ε is fixed or per utterance (``snr_db``).

Defaults (5000 iterations, ``p_init`` = 0.1) are the paper's query budget with a larger first window than its
ImageNet setting: at ε = 0.002 on 3 s of speech a GE2E trial needs thousands of queries (``docs/attacks.md``).
"""

from __future__ import annotations

import torch
from pydantic import Field

from sec4sr_core.sdk import Kappa, LinfBall, LossChoice, QueryBudget

from .common import Best, ScoreBased, expand

_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_fraction(p_init: float, it: int, max_iter: int) -> float:
    """The fraction of the signal changed at iteration ``it`` (halved at each rescaled schedule point)."""
    i = int(it / max_iter * 10000)
    return p_init / (2 ** sum(i > s for s in _SCHEDULE))


class SquareParams(QueryBudget, Kappa, LossChoice.with_defaults(loss="margin"), LinfBall):
    """Square Attack: ε, loss and κ, iterations, the first window fraction and a query budget."""

    max_iter: int = Field(5000, ge=1, description="iterations (one query per active utterance each)")
    p_init: float = Field(0.1, gt=0, le=1, description="initial fraction of the samples changed per proposal")


class Square(ScoreBased):
    """Square Attack: random-search L∞ attack with shrinking windows (score-based)."""

    name = "square"
    Params = SquareParams

    def perturb(self, oracle, x, goal):
        p = self.params
        n, t, dev = x.shape[0], x.shape[-1], x.device
        self.estimate_threshold(oracle, x)
        loss_fn = goal.objective(oracle, p.loss, p.kappa)
        gen = oracle.generator
        bound = self.budget(x)  # (B,) ε per utterance
        margin = p.loss == "margin" or oracle.task.has_threshold  # SV/OSI always use the margin loss
        sign = torch.randint(0, 2, x.shape, generator=gen, device=dev).to(x.dtype) * 2 - 1
        adv = (x + expand(bound, x) * sign).clamp(-1.0, 1.0)
        scores, dec = oracle.scores_and_decisions(adv)
        cur = loss_fn(scores, goal.y)
        best = Best(x)
        best.update(adv, cur, goal.met(dec), dec)
        all_idx = torch.arange(n, device=dev)
        pos = torch.arange(t, device=dev).view(1, 1, -1)
        for it in range(p.max_iter):
            done = best.ok & (best.loss < 0) if margin else best.ok
            active = ~done & self.affordable(oracle, 1)
            idx = all_idx[active]
            if idx.numel() == 0:
                break
            k = idx.numel()
            h = max(1, round(window_fraction(p.p_init, it, p.max_iter) * t))
            start = torch.randint(0, t - h + 1, (k,), generator=gen, device=dev).view(-1, 1, 1)
            s = (torch.randint(0, 2, (k,), generator=gen, device=dev).to(x.dtype) * 2 - 1).view(-1, 1, 1)
            window = (pos >= start) & (pos < start + h)
            cand = torch.where(window, (x[idx] + expand(bound[idx], s) * s).clamp(-1.0, 1.0), adv[idx])
            scores, dec = oracle.scores_and_decisions(cand, owners=idx.cpu())
            loss = loss_fn(scores, goal.labels(idx))
            better = loss < cur[idx]
            rows = idx[better]
            adv[rows] = cand[better]
            cur[rows] = loss[better]
            best.update(cand, loss, goal.met(dec, idx), dec, idx)
        return best.crafted()
