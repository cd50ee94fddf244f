"""Auto-PGD (Croce & Hein, ICML 2020) in an L∞ ball, white-box: PGD with momentum and an adaptive step size.

Step size η starts at 2ε. Iterates: ``z = Π(x_k − η·sign(∇))``, ``x_{k+1} = Π(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1}))``
with α = 0.75 (α = 1 for the first step). At the checkpoints ``w_j = ⌈p_j·N⌉`` (``p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``), per utterance, η is halved and the iterate restarts from the
lowest-loss point when (1) fewer than ρ = 0.75 of the steps since the last checkpoint lowered the loss, or (2) η
and the best loss are both unchanged since the last checkpoint. The losses are minimised; the best adversarial
example is kept per utterance (success first, then loss).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from sec4sr_core.sdk import Attack, Kappa, Knowledge, LinfBall, LossChoice, Steps

from .common import Best, expand, linf_box, project_linf


def checkpoints(steps: int) -> list[int]:
    """APGD's checkpoint iterations for ``steps`` iterations."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps) for q in p[1:] if math.ceil(q * steps) < steps})


class APGDParams(Kappa, LossChoice, Steps.with_defaults(steps=100, descriptions={
        "steps": "iterations (one forward+backward each)"}), LinfBall):
    """Auto-PGD: ε, iterations, ρ, momentum α, loss and κ (the step size is adaptive, from 2ε)."""

    rho: float = Field(0.75, gt=0, le=1, description="share of improving steps below which η is halved")
    alpha: float = Field(0.75, gt=0, le=1, description="momentum weight of the new step")


class APGD(Attack):
    """Auto-PGD: L∞ PGD with momentum and a checkpointed step-size schedule (white-box)."""

    name = "apgd"
    Params = APGDParams
    knowledge = Knowledge.WHITE_BOX
    norm = "linf"

    def perturb(self, oracle, x, goal):
        p = self.params
        loss_fn = goal.objective(oracle, p.loss, p.kappa)
        n = x.shape[0]
        lower, upper = linf_box(x, p.epsilon)
        best = Best(x)
        eta = torch.full((n,), 2 * p.epsilon, device=x.device, dtype=x.dtype)
        xk, xprev = x.clone(), x.clone()
        loc_loss = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
        loc_x, loc_grad = x.clone(), torch.zeros_like(x)
        last_loss = None
        count = torch.zeros(n, device=x.device)
        ckpts = checkpoints(p.steps)
        prev_ck = 0
        eta_ck, loss_ck = eta.clone(), loc_loss.clone()
        for k in range(p.steps):
            loss, grad, _, dec = oracle.loss_and_grad(xk, loss_fn, goal.y)
            best.update(xk, loss, goal.met(dec), dec)
            better = loss < loc_loss
            loc_loss = torch.where(better, loss, loc_loss)
            loc_x[better] = xk[better]
            loc_grad[better] = grad[better]
            if last_loss is not None:
                count += (loss < last_loss).float()
            last_loss = loss
            if k in ckpts:
                cond1 = count < p.rho * (k - prev_ck)
                cond2 = (eta_ck == eta) & (loss_ck == loc_loss)
                red = cond1 | cond2
                eta = torch.where(red, eta / 2, eta)
                xk[red] = loc_x[red]
                xprev[red] = loc_x[red]
                grad[red] = loc_grad[red]
                count.zero_()
                prev_ck = k
                eta_ck, loss_ck = eta.clone(), loc_loss.clone()
            z = project_linf(xk - expand(eta, xk) * grad.sign(), lower, upper)
            a = 1.0 if k == 0 else p.alpha
            xnew = project_linf(xk + a * (z - xk) + (1 - a) * (xk - xprev), lower, upper)
            xprev, xk = xk, xnew.detach()
        with torch.no_grad():
            scores, dec = oracle.scores_and_decisions(xk)
            best.update(xk, loss_fn(scores, goal.y), goal.met(dec), dec)
        return best.crafted()
