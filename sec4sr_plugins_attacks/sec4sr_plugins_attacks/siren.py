"""SirenAttack (Du et al., 2020): score-based particle-swarm attack in an L∞ ball.

Particles are perturbations δ in ``[max(−1 − x, −ε), min(1 − x, ε)]``; the swarms of all active utterances are
evaluated in one oracle call ((particles·k, 1, T) probes with owners). Epoch 0 samples every particle uniformly in
the box; each later epoch keeps the swarm's best particle (position and personal best) as particle 0 and re-samples
the others. Velocities start uniform in ``[−V, V]``, ``V = upper − lower``. Inner iterations evaluate the margin loss,
update personal and global bests, then ``v ← w·v + c1·r1·(pbest − pos) + c2·r2·(gbest − pos)`` with the inertia
``w`` falling linearly from ``w_init`` to ``w_end`` and ``r1, r2 ~ U[0, 1) + 1e−5``; ``pos ← clip(pos + v, box)``.
Every ``abort_early_iter`` iterations (``abort_early_epoch`` epochs) the loop ends for the utterances whose global
best did not fall below 0.9999 × its value at the previous check (per utterance). An utterance is done once its
global best meets the goal (decision) with a negative margin loss. SV/OSI use an estimated threshold (the
predecessor refused them). Class defaults follow the predecessor's class (its CLI had stale ones).
"""

from __future__ import annotations

import torch
from pydantic import Field

from sec4sr_core.sdk import Kappa, LinfBall, QueryBudget

from .common import Best, ScoreBased


class SirenParams(QueryBudget, Kappa, LinfBall):
    """SirenAttack: ε, κ, the swarm, its schedule, early stop and a query budget."""

    max_epoch: int = Field(300, ge=1, description="epochs (swarm re-seeding rounds)")
    max_iter: int = Field(30, ge=1, description="PSO iterations per epoch")
    n_particles: int = Field(25, ge=2, description="particles per utterance")
    c1: float = Field(1.4961, ge=0, description="cognitive coefficient")
    c2: float = Field(1.4961, ge=0, description="social coefficient")
    w_init: float = Field(0.9, ge=0, description="initial inertia weight")
    w_end: float = Field(0.1, ge=0, description="final inertia weight")
    abort_early: bool = Field(True, description="stop utterances whose best loss stopped falling")
    abort_early_iter: int = Field(10, ge=1, description="iterations between inner early-stop checks")
    abort_early_epoch: int = Field(10, ge=1, description="epochs between outer early-stop checks")


class Siren(ScoreBased):
    """SirenAttack: particle swarm optimisation in an L∞ ball (score-based; estimated threshold on SV/OSI)."""

    name = "siren"
    Params = SirenParams

    def perturb(self, oracle, x, goal):
        p = self.params
        n, dev, dt = x.shape[0], x.device, x.dtype
        self.estimate_threshold(oracle, x)
        loss_fn = goal.objective(oracle, "margin", p.kappa)
        gen = oracle.generator
        m = p.n_particles
        eps = self.budget(x).view(-1, 1, 1)  # (n, 1, 1): ε fixed or per utterance (snr_db)
        lo = torch.maximum(-1 - x, -eps.expand_as(x)).unsqueeze(1)  # (n, 1, 1, T)
        hi = torch.minimum(1 - x, eps.expand_as(x)).unsqueeze(1)
        span = hi - lo
        shape = (n, m) + tuple(x.shape[1:])

        def uniform(size) -> torch.Tensor:
            return torch.rand(size, generator=gen, device=dev, dtype=dt)

        pos = lo + uniform(shape) * span
        pbest = torch.full((n, m), float("inf"), device=dev, dtype=dt)
        pbest_pos = pos.clone()
        gbest = torch.full((n,), float("inf"), device=dev, dtype=dt)
        gbest_pos = torch.zeros_like(x).unsqueeze(1)
        best = Best(x)
        active = torch.ones(n, dtype=torch.bool, device=dev)
        epoch_prev = torch.full((n,), float("inf"), device=dev, dtype=dt)
        all_idx = torch.arange(n, device=dev)
        for epoch in range(p.max_epoch):
            if epoch > 0:  # keep the best particle as particle 0, re-seed the rest
                arg = pbest.argmin(dim=1)
                keep_pos = pbest_pos[all_idx, arg]
                keep_val = pbest[all_idx, arg]
                pos = lo + uniform(shape) * span
                pos[:, 0] = keep_pos
                pbest = torch.full((n, m), float("inf"), device=dev, dtype=dt)
                pbest[:, 0] = keep_val
                pbest_pos = pos.clone()
            vel = (uniform(shape) * 2 - 1) * span
            iter_prev = torch.full((n,), float("inf"), device=dev, dtype=dt)
            running = active.clone()
            for it in range(p.max_iter):
                running &= self.affordable(oracle, m + 1)
                idx = all_idx[running]
                if idx.numel() == 0:
                    break
                k = idx.numel()
                probes = (x[idx].unsqueeze(1) + pos[idx]).transpose(0, 1).reshape((m * k,) + tuple(x.shape[1:]))
                scores, dec = oracle.scores_and_decisions(probes, owners=idx.repeat(m).cpu())
                loss = loss_fn(scores, goal.labels(idx).repeat(m)).view(m, k).T  # (k, m)
                dec = dec.view(m, k).T
                improved = loss < pbest[idx]
                pb = torch.where(improved, loss, pbest[idx])
                pbest[idx] = pb
                pbp = pbest_pos[idx]
                pbp[improved] = pos[idx][improved]
                pbest_pos[idx] = pbp
                val, arg = loss.min(dim=1)
                better = val < gbest[idx]
                rows = idx[better]
                gbest[rows] = val[better]
                gbest_pos[rows] = pos[rows, arg[better]].unsqueeze(1)
                cand_dec = dec[torch.arange(k, device=dev), arg]
                cand = x[idx] + pos[idx, arg]
                best.update(cand, val, goal.met(cand_dec, idx), cand_dec, idx)
                done = best.ok[idx] & (best.loss[idx] < 0)
                active[idx[done]] = False
                running[idx[done]] = False
                if p.abort_early and it % p.abort_early_iter == 0:
                    stalled = gbest[idx] > 0.9999 * iter_prev[idx]
                    iter_prev[idx] = gbest[idx]
                    running[idx[stalled]] = False
                w = (p.w_init - p.w_end) * (p.max_iter - it - 1) / p.max_iter + p.w_end
                r1 = uniform((k, m) + tuple(x.shape[1:])) + 1e-5
                r2 = uniform((k, m) + tuple(x.shape[1:])) + 1e-5
                v = w * vel[idx] + p.c1 * r1 * (pbest_pos[idx] - pos[idx]) + p.c2 * r2 * (gbest_pos[idx] - pos[idx])
                vel[idx] = v
                pos[idx] = torch.maximum(torch.minimum(pos[idx] + v, hi[idx]), lo[idx])
            if not bool(active.any()):
                break
            if p.abort_early and epoch % p.abort_early_epoch == 0:
                stalled = gbest > 0.9999 * epoch_prev
                epoch_prev = gbest.clone()
                active &= ~stalled
                if not bool(active.any()):
                    break
            if not bool(self.affordable(oracle, m + 1).any()):
                break
        return best.crafted()
