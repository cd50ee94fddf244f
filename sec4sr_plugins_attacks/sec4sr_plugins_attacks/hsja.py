"""HopSkipJump (Chen, Jordan & Wainwright, S&P 2020), L2, decision-based.

1. **Start**: an adversarial point per utterance. Targeted: another utterance of the batch that the system already
   assigns to the target, else random noise; untargeted: uniform noise blended with x at growing levels
   (``init_draws`` probes per level, all utterances in one call).
2. **Boundary**: a batched binary search on the segment from x to the adversarial point until the bracket is below
   ``θ = 1/(√d·d)`` (bounded by ``search_steps`` queries).
3. **Gradient direction** at the boundary point: ``n_t = min(init_evals·√t, max_evals)`` unit Gaussian probes at
   distance ``δ_t = √d·θ·‖x_adv − x‖``; ``ĝ = mean((φ_i − mean φ)·u_i)`` with ``φ = ±1`` by decision.
4. **Step**: ``ξ_t = ‖x_adv − x‖/√t``, halved until the point ``x_adv + ξ_t·ĝ/‖ĝ‖`` is adversarial; then back to 2.

With ``quantize`` (default) every point the searches accept is rounded to 16-bit first, so the boundary point
survives being saved as 16-bit audio (a float boundary point lies within θ of the boundary and rounding flips it
back). The result is the last boundary point (on the adversarial side); ``max_queries`` bounds each utterance's queries.
There is no ε bound: the attack minimises the L2 distance.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from sec4sr_core.sdk import NOT_EVALUATED, Attack, Crafted, Knowledge, QueryBudget

from .common import expand, l2_norm


class HSJAParams(QueryBudget):
    iterations: int = Field(20, ge=1, description="gradient-estimate / step / boundary-search rounds")
    init_evals: int = Field(100, ge=2, description="probes of the first gradient estimate")
    max_evals: int = Field(1000, ge=2, description="largest number of probes of one gradient estimate")
    probe_batch: int = Field(100, ge=1, description="probes per utterance per oracle call")
    search_steps: int = Field(25, ge=1, description="cap on the binary-search queries per boundary search")
    step_halvings: int = Field(15, ge=1, description="cap on the step-size halvings per round")
    init_draws: int = Field(8, ge=1, description="noise probes per level when looking for a start point")
    quantize: bool = Field(True, description="search on 16-bit-quantised points, so the boundary point stays "
                                             "adversarial once saved as 16-bit audio")


class HSJA(Attack):
    """HopSkipJump: boundary search, gradient-direction estimate, geometric step search (decision-based)."""

    name = "hsja"
    Params = HSJAParams
    knowledge = Knowledge.DECISIONS
    norm = "l2"

    def perturb(self, oracle, x, goal):
        p = self.params
        n, dev = x.shape[0], x.device
        d = x[0].numel()
        theta = 1.0 / (math.sqrt(d) * d)
        self._oracle, self._goal = oracle, goal
        adv, found, dec = self._start(x)
        all_idx = torch.arange(n, device=dev)
        live = found.clone()
        adv, dec = self._boundary(x, adv, dec, all_idx[live], theta)
        for t in range(1, p.iterations + 1):
            live &= self.affordable(oracle, 2)
            idx = all_idx[live]
            if idx.numel() == 0:
                break
            dist = l2_norm(adv[idx] - x[idx])
            delta = (math.sqrt(d) * theta * dist) if t > 1 else torch.full_like(dist, 0.1)
            evals = int(min(p.init_evals * math.sqrt(t), p.max_evals))
            grad = self._direction(adv[idx], idx, delta, evals)
            xi = dist / math.sqrt(t)
            searching = torch.ones(idx.numel(), dtype=torch.bool, device=dev)
            new = adv[idx].clone()
            for _ in range(p.step_halvings):
                sub = searching & self.affordable(oracle, 1, idx)
                if not bool(sub.any()):
                    break
                cand = self._q((adv[idx][sub] + expand(xi[sub], grad[sub]) * grad[sub]).clamp(-1.0, 1.0))
                dd = oracle.decisions(cand, owners=idx[sub].cpu())
                ok = goal.met(dd, idx[sub])
                rows = sub.nonzero().flatten()
                new[rows[ok]] = cand[ok]
                dec[idx[rows[ok]]] = dd[ok]
                searching[rows[ok]] = False
                xi = torch.where(sub & ~searching, xi, xi / 2)
            adv[idx] = new
            adv, dec = self._boundary(x, adv, dec, idx, theta)
        dec = torch.where(found, dec, torch.full_like(dec, NOT_EVALUATED))
        out = torch.where(expand(found, x), adv, x)
        return Crafted(out, dec, {"l2": l2_norm(out - x).cpu()})

    def _q(self, wave):
        from sec4sr_core.sdk import quantize_16bit

        return quantize_16bit(wave) if self.params.quantize else wave

    def _adversarial(self, probes, owners):
        dec = self._oracle.decisions(probes, owners=owners.cpu())
        return self._goal.met(dec, owners), dec

    def _start(self, x):
        """A start point per utterance, its found flag and its decision."""
        n, dev = x.shape[0], x.device
        gen = self._oracle.generator
        adv = x.clone()
        dec = torch.full((n,), NOT_EVALUATED, dtype=torch.int64, device=dev)
        found = torch.zeros(n, dtype=torch.bool, device=dev)
        own_ok, own_dec = self._adversarial(x, torch.arange(n, device=dev))
        found |= own_ok
        dec = torch.where(own_ok, own_dec, dec)
        if self._goal.targeted:  # a batch utterance that already carries the target
            match = own_dec.view(1, -1) == self._goal.y.view(-1, 1)  # (n, n): row i: utterances decided as y_i
            has = match.any(dim=1) & ~found
            src = match.float().argmax(dim=1)
            adv[has] = x[src[has]]
            dec[has] = own_dec[src[has]]
            found |= has
        for level in (0.05, 0.2, 0.5, 1.0):
            idx = (~found & self.affordable(self._oracle, self.params.init_draws)).nonzero().flatten()
            if idx.numel() == 0:
                break
            m = self.params.init_draws
            noise = torch.rand((m,) + tuple(x[idx].shape), generator=gen, device=dev, dtype=x.dtype) * 2 - 1
            probes = ((1 - level) * x[idx].unsqueeze(0) + level * noise).reshape((-1,) + tuple(x.shape[1:]))
            ok, dd = self._adversarial(probes, idx.repeat(m))
            ok, dd = ok.view(m, -1), dd.view(m, -1)
            has = ok.any(dim=0)
            first = ok.float().argmax(dim=0)
            cols = torch.arange(idx.numel(), device=dev)
            pick = probes.view((m, idx.numel()) + tuple(x.shape[1:]))[first, cols]
            adv[idx[has]] = pick[has]
            dec[idx[has]] = dd[first, cols][has]
            found[idx[has]] = True
        return adv, found, dec

    def _boundary(self, x, adv, dec, idx, theta):
        """Binary search between x (not adversarial) and adv (adversarial) for the utterances ``idx``."""
        if idx.numel() == 0:
            return adv, dec
        lo = torch.zeros(idx.numel(), device=x.device, dtype=x.dtype)
        hi = torch.ones_like(lo)
        xs, target = x[idx], adv[idx]
        for _ in range(self.params.search_steps):
            sub = ((hi - lo) > theta) & self.affordable(self._oracle, 1, idx)
            if not bool(sub.any()):
                break
            mid = (lo + hi) / 2
            cand = self._q(xs[sub] + expand(mid[sub], xs[sub]) * (target[sub] - xs[sub]))
            ok, dd = self._adversarial(cand, idx[sub])
            rows = sub.nonzero().flatten()
            hi[rows[ok]] = mid[rows[ok]]
            lo[rows[~ok]] = mid[rows[~ok]]
            dec[idx[rows[ok]]] = dd[ok]
        adv[idx] = self._q(xs + expand(hi, xs) * (target - xs))
        return adv, dec

    def _direction(self, base, idx, delta, evals):
        """HSJA's gradient-direction estimate (k, 1, T), unit L2 norm, from ``evals`` probes per utterance."""
        k = idx.numel()
        gen = self._oracle.generator
        s_phi_u = torch.zeros_like(base)  # Σ φ_i u_i
        s_u = torch.zeros_like(base)  # Σ u_i
        s_phi = torch.zeros(k, device=base.device, dtype=base.dtype)
        done = 0
        while done < evals:  # running sums: memory stays at probe_batch probes per utterance
            m = min(self.params.probe_batch, evals - done)
            u = torch.randn((m,) + tuple(base.shape), generator=gen, device=base.device, dtype=base.dtype)
            u = u / u.flatten(2).norm(dim=2).clamp(min=1e-12).view(m, k, 1, 1)
            step = expand(delta, base).unsqueeze(0)
            probes = (base.unsqueeze(0) + step * u).clamp(-1.0, 1.0)
            u = (probes - base.unsqueeze(0)) / step.clamp(min=1e-12)
            ok, _ = self._adversarial(probes.reshape((-1,) + tuple(base.shape[1:])), idx.repeat(m))
            phi = ok.view(m, k).to(base.dtype) * 2 - 1
            s_phi_u += (phi.view(m, k, 1, 1) * u).sum(dim=0)
            s_u += u.sum(dim=0)
            s_phi += phi.sum(dim=0)
            done += m
        mean = s_phi / evals
        # baseline φ̄ unless every probe agreed (then the plain mean direction, as in the paper)
        total = torch.where(expand(mean.abs() == 1, base), s_phi_u, s_phi_u - expand(mean, base) * s_u) / evals
        return total / expand(l2_norm(total).clamp(min=1e-12), total)
