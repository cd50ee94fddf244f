"""Projected gradient descent (Madry et al.) in an L∞ ball, white-box.

x_{k+1} = clip_{[x-ε, x+ε] ∩ [-1, 1]}(x_k - α·sign(∇ loss)), with the losses of :mod:`sec4sr_core.losses`
(minimised). Optional random restarts start from x + U(-ε, ε). The best adversarial example is kept **per
utterance** across steps and restarts (success first, then the lowest loss), not per batch.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from sec4sr_core.interfaces import Attack, AttackResult, Knowledge
from sec4sr_core.losses import resolve_loss, success
from sec4sr_core.params import Params


class PGDParams(Params):
    epsilon: float = Field(0.002, gt=0, le=1, description="L∞ bound in [-1, 1] amplitude units")
    step_size: float = Field(0.0004, gt=0, description="step α per iteration in [-1, 1] amplitude units")
    steps: int = Field(10, ge=1, description="iterations per restart")
    restarts: int = Field(0, ge=0, description="random restarts (0 = start at x)")
    loss: Literal["ce", "margin"] = Field("ce", description="objective; SV/OSI always use the margin loss")
    kappa: float = Field(0.0, ge=0, description="confidence κ of the margin loss")


class PGD(Attack):
    """Projected gradient descent in an L∞ ball (white-box), best example kept per utterance."""

    name = "pgd"
    Params = PGDParams
    knowledge = Knowledge.WHITE_BOX
    norm = "linf"

    def run(self, oracle, x, y, targeted=False):
        p = self.params
        loss_fn = resolve_loss(p.loss, oracle.task, targeted, p.kappa, oracle.threshold)
        lower = (x - p.epsilon).clamp(min=-1.0)
        upper = (x + p.epsilon).clamp(max=1.0)
        best = x.clone()
        best_ok = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_loss = torch.full((x.shape[0],), float("inf"), device=x.device)
        y = y.to(x.device)
        for restart in range(max(1, p.restarts)):
            adv = x.clone()
            if p.restarts:
                noise = torch.rand(x.shape, generator=oracle.generator, device=x.device) * 2 - 1
                adv = torch.max(torch.min(x + noise * p.epsilon, upper), lower)
            for _ in range(p.steps + 1):
                loss, grad, _, dec = oracle.loss_and_grad(adv, loss_fn, y)
                ok = success(dec, y, targeted)
                better = (ok & ~best_ok) | ((ok == best_ok) & (loss < best_loss))
                best[better] = adv[better]
                best_loss = torch.where(better, loss, best_loss)
                best_ok = best_ok | ok
                adv = torch.max(torch.min(adv - p.step_size * grad.sign(), upper), lower).detach()
        with torch.no_grad():
            decisions = oracle.decisions(best)
        return AttackResult(best, success(decisions, y, targeted).cpu(), oracle.queries.clone(), decisions.cpu())
