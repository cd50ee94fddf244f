"""FAKEBOB (Chen et al., S&P 2021): score-based black-box attack with NES gradients, in an L∞ ball.

Per iteration and per active utterance: an NES estimate from ``samples`` antithetic probes ``x ± σu`` plus the
current point (``samples + 1`` queries); momentum ``g ← m·g + (1 − m)·ĝ``; a signed step of the utterance's own
learning rate, projected onto ``[x − ε, x + ε] ∩ [−1, 1]``. Plateau schedule per utterance: a sliding window of the
last ``plateau_length`` mean probe losses; when it is full and its last value exceeds its first, the learning rate
is divided by ``plateau_drop`` (floored at ``min_lr``) and the window cleared (each utterance has its own window,
unlike the predecessor's shared first list). Early stop every ``stop_early_iter`` iterations: an utterance whose
mean probe loss is above 0.9999 × its value at the previous check leaves. An utterance is done once the system's
decision meets the goal and its margin loss is below zero (κ respected); a ``max_queries`` budget is honoured.

SV/OSI need a threshold for the loss: a black-box attacker estimates it (:func:`~.common.estimate_threshold`,
bounded, using every utterance of the batch) unless the oracle already carries ``estimated_threshold``.
"""

from __future__ import annotations

import torch
from pydantic import Field

from sec4sr_core.sdk import NES_PRIOR_HELP, Kappa, LinfBall, QueryBudget, nes_gradient, probe_sampler

from .common import Best, NESSampling, ScoreBased, linf_box, project_linf


class FakeBobParams(QueryBudget, NESSampling.with_defaults(prior="white", descriptions={
        "samples": "NES probes per iteration (antithetic pairs)",
        "prior": NES_PRIOR_HELP + " ('white' is the published FAKEBOB)"}), Kappa, LinfBall):
    """FAKEBOB: ε, κ, the NES sampling, the learning-rate schedule, early stop and a query budget."""

    max_iter: int = Field(1000, ge=1, description="NES iterations")
    max_lr: float = Field(0.001, gt=0, description="initial learning rate in [-1, 1] amplitude units")
    min_lr: float = Field(1e-6, gt=0, description="learning-rate floor")
    momentum: float = Field(0.9, ge=0, lt=1, description="gradient momentum")
    plateau_length: int = Field(5, ge=2, description="window of mean losses for the plateau schedule")
    plateau_drop: float = Field(2.0, gt=1, description="learning-rate divisor on a plateau")
    stop_early: bool = Field(True, description="drop utterances whose loss stopped falling")
    stop_early_iter: int = Field(100, ge=1, description="iterations between early-stop checks")
    estimate_iter: int = Field(30, ge=0, description="iteration cap of the SV/OSI threshold estimation")


class FakeBob(ScoreBased):
    """FAKEBOB: NES with antithetic sampling, momentum, plateau lr schedule, early stop (score-based)."""

    name = "fakebob"
    Params = FakeBobParams

    def perturb(self, oracle, x, goal):
        p = self.params
        n, dev = x.shape[0], x.device
        self.estimate_threshold(oracle, x, max_iter=p.estimate_iter, sigma=p.sigma, lr=p.max_lr)
        loss_fn = goal.objective(oracle, "margin", p.kappa)
        lower, upper = linf_box(x, self.budget(x))  # ε fixed or per utterance (snr_db)
        adv = x.clone()
        best = Best(x)
        g_prev = torch.zeros_like(x)
        lr = torch.full((n,), p.max_lr, device=dev, dtype=x.dtype)
        window = torch.zeros(n, p.plateau_length, device=dev, dtype=x.dtype)
        filled = torch.zeros(n, dtype=torch.long, device=dev)
        prev_check = torch.full((n,), float("inf"), device=dev, dtype=x.dtype)
        active = torch.ones(n, dtype=torch.bool, device=dev)
        all_idx = torch.arange(n, device=dev)
        batch = min(p.samples_batch, p.samples)
        sampler = probe_sampler(p.prior)
        for it in range(p.max_iter):
            active &= self.affordable(oracle, p.samples + 2)  # + 1 probe at x, + 1 final evaluation
            idx = all_idx[active]
            if idx.numel() == 0:
                break
            k = idx.numel()
            ys = goal.labels(idx)
            seen: dict[str, torch.Tensor] = {}

            def probe_loss(probes: torch.Tensor) -> torch.Tensor:
                m = probes.shape[0] // k
                scores, dec = oracle.scores_and_decisions(probes, owners=idx.repeat(m).cpu())
                seen.setdefault("dec", dec[:k])
                return loss_fn(scores, ys.repeat(m))

            grad, mean_loss, loss_at = nes_gradient(probe_loss, adv[idx], p.samples, p.sigma, oracle.generator, batch,
                                                    sampler=sampler)
            dec = seen["dec"]
            ok = goal.met(dec, idx)
            best.update(adv[idx], loss_at, ok, dec, idx)
            done = ok & (loss_at < 0)
            active[idx[done]] = False
            # momentum and the per-utterance plateau schedule
            g = p.momentum * g_prev[idx] + (1 - p.momentum) * grad
            g_prev[idx] = g
            window[idx] = torch.cat([window[idx, 1:], mean_loss.unsqueeze(1)], dim=1)
            filled[idx] = (filled[idx] + 1).clamp(max=p.plateau_length)
            plateau = (filled[idx] == p.plateau_length) & (window[idx, -1] > window[idx, 0])
            rows = idx[plateau]
            lr[rows] = (lr[rows] / p.plateau_drop).clamp(min=p.min_lr)
            filled[rows] = 0
            mv = idx[~done]  # a finished utterance keeps its successful point
            step = lr[mv].view(-1, 1, 1) * g[~done].sign()
            adv[mv] = project_linf(adv[mv] - step, lower[mv], upper[mv])
            if p.stop_early and it % p.stop_early_iter == 0:
                stalled = mean_loss > 0.9999 * prev_check[idx]
                prev_check[idx] = mean_loss
                active[idx[stalled & ~done]] = False
        # the last step's result has not been evaluated yet
        last = all_idx[(adv != best.adv).flatten(1).any(dim=1)]
        if last.numel():
            scores, dec = oracle.scores_and_decisions(adv[last], owners=last.cpu())
            best.update(adv[last], loss_fn(scores, goal.labels(last)), goal.met(dec, last), dec, last)
        return best.crafted()
