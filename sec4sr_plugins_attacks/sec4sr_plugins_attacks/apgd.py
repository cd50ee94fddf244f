"""Auto-PGD (Croce & Hein, ICML 2020) in an L∞ ball, white-box: PGD with momentum and an adaptive step size.

Step size η starts at 2ε. Iterates: ``z = Π(x_k − η·sign(∇))``, ``x_{k+1} = Π(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1}))``
with α = 0.75 (α = 1 for the first step). At the checkpoints ``w_j = ⌈p_j·N⌉`` (``p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``), per utterance, η is halved and the iterate restarts from the
lowest-loss point when (1) fewer than ρ = 0.75 of the steps since the last checkpoint lowered the loss, or (2) η
was *not* halved at the previous checkpoint and the best loss has not improved since then (the paper's
``η^{(w_{j−1})} ≡ η^{(w_j)}`` and ``f_min^{(w_{j−1})} ≡ f_min^{(w_j)}``: η is recorded at each checkpoint *before*
it is halved, so condition 2 cannot fire twice in a row). The checkpoints are computed in exact arithmetic
(100 steps: 22, 41, 57, 70, 80, 87, 93, 99 — float rounding gave 58 for 57). The losses are minimised; the best
adversarial example is kept per utterance (success first, then loss). ``extra["halvings"]`` counts η's halvings per
utterance. The budget is a fixed ε or per utterance from ``snr_db`` (η starts at 2ε_i).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from pydantic import Field

from sec4sr_core.sdk import Attack, Kappa, Knowledge, LinfBall, LossChoice, Steps

from .common import Best, expand, linf_box, project_linf


def checkpoints(steps: int) -> list[int]:
    """APGD's checkpoint iterations ``w_j = ⌈p_j·steps⌉ < steps`` (j ≥ 1) for ``p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``, in exact rational arithmetic."""
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    return sorted({math.ceil(q * steps) for q in p[1:] if math.ceil(q * steps) < steps})


class StepSchedule:
    """APGD's per-utterance step size η and its checkpoint rule (see the module docstring), for a batch of B.

    Call :meth:`observe` with every iterate's loss (B,) and :meth:`checkpoint` at the checkpoints; it returns the
    (B,) mask of utterances whose η was halved (they restart from their best point)."""

    def __init__(self, eta: torch.Tensor, rho: float) -> None:
        self.eta = eta.clone()
        self.rho = rho
        self.count = torch.zeros_like(eta)
        self.last_loss: torch.Tensor | None = None
        self.best = torch.full_like(eta, math.inf)
        self.eta_ck = self.eta.clone()  # η at the previous checkpoint, before its halving
        self.best_ck: torch.Tensor | None = None  # best loss at the previous checkpoint (after the first step)
        self.prev_ck = 0
        self.halvings = torch.zeros(eta.shape, dtype=torch.int64, device=eta.device)

    def observe(self, loss: torch.Tensor) -> torch.Tensor:
        """Record an iterate's loss; returns the (B,) mask of new best losses."""
        better = loss < self.best
        self.best = torch.where(better, loss, self.best)
        if self.last_loss is not None:
            self.count += (loss < self.last_loss).to(self.count.dtype)
        self.last_loss = loss
        if self.best_ck is None:
            self.best_ck = self.best.clone()
        return better

    def checkpoint(self, k: int) -> torch.Tensor:
        cond1 = self.count < self.rho * (k - self.prev_ck)
        cond2 = (self.eta_ck == self.eta) & (self.best >= self.best_ck)
        red = cond1 | cond2
        self.eta_ck = self.eta.clone()  # saved before the halving: next time, cond 2 sees whether η changed
        self.best_ck = self.best.clone()
        self.eta = torch.where(red, self.eta / 2, self.eta)
        self.halvings += red.long()
        self.count.zero_()
        self.prev_ck = k
        return red


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
        bound = self.budget(x)  # (B,) ε per utterance
        lower, upper = linf_box(x, bound)
        best = Best(x)
        sched = StepSchedule(2 * bound, p.rho)
        xk, xprev = x.clone(), x.clone()
        loc_x, loc_grad = x.clone(), torch.zeros_like(x)
        ckpts = set(checkpoints(p.steps))
        for k in range(p.steps):
            loss, grad, _, dec = oracle.loss_and_grad(xk, loss_fn, goal.y)
            best.update(xk, loss, goal.met(dec), dec)
            better = sched.observe(loss)
            loc_x[better] = xk[better]
            loc_grad[better] = grad[better]
            if k in ckpts:
                red = sched.checkpoint(k)
                xk[red] = loc_x[red]
                xprev[red] = loc_x[red]
                grad[red] = loc_grad[red]
            eta = sched.eta
            z = project_linf(xk - expand(eta, xk) * grad.sign(), lower, upper)
            a = 1.0 if k == 0 else p.alpha
            xnew = project_linf(xk + a * (z - xk) + (1 - a) * (xk - xprev), lower, upper)
            xprev, xk = xk, xnew.detach()
        with torch.no_grad():
            scores, dec = oracle.scores_and_decisions(xk)
            best.update(xk, loss_fn(scores, goal.y), goal.met(dec), dec)
        return best.crafted(halvings=sched.halvings.cpu(), step_size=sched.eta.cpu())
