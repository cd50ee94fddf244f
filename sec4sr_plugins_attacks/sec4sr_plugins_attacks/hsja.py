"""HopSkipJump (Chen, Jordan & Wainwright, S&P 2020), L2, decision-based.

1. **Start**: an adversarial point per utterance: the utterance itself when it already meets the goal; targeted,
   the first utterance of the start pool (the first ``start_pool`` enrollment utterances, which the core hands
   over, :meth:`HSJA.crafting_request`; tried ``init_draws`` at a time) that meets the goal; then uniform noise
   blended with x at growing levels (``init_draws`` probes per level).
2. **Boundary**: a batched binary search on the segment from x to the adversarial point until the bracket is below
   ``θ = 1/(√d·d)`` (bounded by ``search_steps`` queries).
3. **Gradient direction** at the boundary point: ``n_t = min(init_evals·√t, max_evals)`` unit Gaussian probes at
   distance ``δ_t = √d·θ·‖x_adv − x‖``; ``ĝ = mean((φ_i − mean φ)·u_i)`` with ``φ = ±1`` by decision.
4. **Step**: ``ξ_t = ‖x_adv − x‖/√t``, halved until the point ``x_adv + ξ_t·ĝ/‖ĝ‖`` is adversarial; then back to 2.

**Query budget.** ``max_queries`` bounds every probe of an utterance — the start search, the binary searches, the
gradient probes (cut to what is left, keeping one query for the step) and the step search — and the result needs
no further query: the decision of every returned point was recorded when it was probed (an utterance without a
start point returns x with the decision of its first probe). When the budget runs out mid-round the utterance keeps
its last boundary point (adversarial, the best so far).

**Batch independence.** Every random draw of utterance i (start noise, gradient probes) comes from its own
generator seeded by the oracle's seed and a digest of x_i and its goal, and the start pool is the same for every
utterance, so an utterance gets the same start point — and the same search — alone or in any batch (the start
point used to be another utterance of the batch that carried the target: 8/8 targeted successes in a batch of 8,
3/8 one at a time).

With ``quantize`` (default) every point the searches accept is rounded to 16-bit first, so the boundary point
survives being saved as 16-bit audio (a float boundary point lies within θ of the boundary and rounding flips it
back). There is no ε bound: the attack minimises the L2 distance.
"""

from __future__ import annotations

import hashlib
import math

import torch
from pydantic import Field

from sec4sr_core.sdk import (
    NOT_EVALUATED,
    Attack,
    Crafted,
    CraftingRequest,
    Knowledge,
    QueryBudget,
    fit_length,
)

from .common import expand, l2_norm


class HSJAParams(QueryBudget):
    iterations: int = Field(20, ge=1, description="gradient-estimate / step / boundary-search rounds")
    init_evals: int = Field(100, ge=2, description="probes of the first gradient estimate")
    max_evals: int = Field(1000, ge=2, description="largest number of probes of one gradient estimate")
    probe_batch: int = Field(100, ge=1, description="probes per utterance per oracle call")
    search_steps: int = Field(25, ge=1, description="cap on the binary-search queries per boundary search")
    step_halvings: int = Field(15, ge=1, description="cap on the step-size halvings per round")
    init_draws: int = Field(8, ge=1, description="noise probes per level when looking for a start point")
    start_pool: int = Field(48, ge=0, description="targeted: enrollment utterances tried as start points, in the "
                                                  "same order for every utterance (0 = noise only)")
    quantize: bool = Field(True, description="search on 16-bit-quantised points, so the boundary point stays "
                                             "adversarial once saved as 16-bit audio")


def utterance_generators(x: torch.Tensor, seed: int, goals: torch.Tensor, salt: str = "hsja") -> list[torch.Generator]:
    """One generator per utterance of ``x`` (B, 1, T), seeded by ``seed``, the bytes of x_i and its goal, so the
    draws of an utterance do not depend on the batch it is in."""
    flat = x.detach().to("cpu", torch.float32).reshape(x.shape[0], -1).numpy()
    gens = []
    for i, g in enumerate(goals.tolist()):
        digest = hashlib.sha256(f"{salt}|{seed}|{g}|".encode() + flat[i].tobytes()).hexdigest()
        gen = torch.Generator(device=x.device)
        gen.manual_seed(int(digest[:15], 16))
        gens.append(gen)
    return gens


def _draw(gens: list[torch.Generator], rows: torch.Tensor, shape: tuple, like: torch.Tensor, kind: str,
          m: int) -> torch.Tensor:
    """(m, len(rows), *shape) draws, column j from the generator of utterance ``rows[j]``."""
    fn = torch.rand if kind == "rand" else torch.randn
    cols = [fn((m,) + shape, generator=gens[int(r)], device=like.device, dtype=like.dtype) for r in rows.tolist()]
    return torch.stack(cols, dim=1)


class HSJA(Attack):
    """HopSkipJump: boundary search, gradient-direction estimate, geometric step search (decision-based)."""

    name = "hsja"
    Params = HSJAParams
    knowledge = Knowledge.DECISIONS
    norm = "l2"

    def crafting_request(self) -> CraftingRequest | None:
        """Targeted runs try enrollment utterances as start points (the same pool for every utterance): the
        attacker holds recordings of the enrolled speakers, as in HSJA's targeted setting (a sample of the target
        class). Every study has an enrollment split, so the request never fails."""
        p = self.params
        return CraftingRequest(None, "enroll", p.start_pool) if p.start_pool else None

    def remaining(self, idx: torch.Tensor) -> torch.Tensor:
        """(len(idx),) probes utterances ``idx`` may still make within ``max_queries`` (a large number when
        unbounded)."""
        mq = self.params.max_queries
        if mq is None:
            return torch.full((idx.numel(),), 2 ** 40, dtype=torch.int64, device=idx.device)
        q = self._oracle.queries[idx.cpu()].to(idx.device)
        return ((mq - q) // self._oracle.eot).clamp(min=0)

    def perturb(self, oracle, x, goal):
        p = self.params
        n, dev = x.shape[0], x.device
        d = x[0].numel()
        theta = 1.0 / (math.sqrt(d) * d)
        self._oracle, self._goal = oracle, goal
        self._gens = utterance_generators(x, oracle.seed, goal.y)
        adv, found, dec = self._start(x)
        all_idx = torch.arange(n, device=dev)
        live = found.clone()
        adv, dec = self._boundary(x, adv, dec, all_idx[live], theta)
        for t in range(1, p.iterations + 1):
            idx = all_idx[live]
            if idx.numel() == 0:
                break
            dist = l2_norm(adv[idx] - x[idx])
            delta = (math.sqrt(d) * theta * dist) if t > 1 else torch.full_like(dist, 0.1)
            evals = int(min(p.init_evals * math.sqrt(t), p.max_evals))
            # the gradient probes get what is left of the budget, less one query for the step
            per = (self.remaining(idx) - 1).clamp(max=evals)
            keep = per >= 2
            live[idx[~keep]] = False  # out of budget: keep the last boundary point
            idx, dist, delta, per = idx[keep], dist[keep], delta[keep], per[keep]
            if idx.numel() == 0:
                break
            grad = self._direction(adv[idx], idx, delta, per)
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
        dec = torch.where(found, dec, self._own_dec)  # no start point: x itself, decided by the first probe
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
        adv = x.clone()
        dec = torch.full((n,), NOT_EVALUATED, dtype=torch.int64, device=dev)
        found = torch.zeros(n, dtype=torch.bool, device=dev)
        all_idx = torch.arange(n, device=dev)
        own = self.affordable(self._oracle, 1)
        own_dec = torch.full((n,), NOT_EVALUATED, dtype=torch.int64, device=dev)
        if bool(own.any()):
            ok, dd = self._adversarial(x[own], all_idx[own])
            own_dec[own] = dd
            found[all_idx[own][ok]] = True
        self._own_dec = own_dec
        dec = torch.where(found, own_dec, dec)
        pool = self.crafting
        if self._goal.targeted and pool is not None and self.params.start_pool:
            # every utterance tries the same held-out candidates in the same order, init_draws at a time: its start
            # point is the first that meets its goal (one query per candidate tried, charged to it)
            cands = fit_length(pool[: self.params.start_pool], x.shape[-1]).to(dev, x.dtype)
            chunk = self.params.init_draws
            for c0 in range(0, cands.shape[0], chunk):
                part = cands[c0 : c0 + chunk]
                m = part.shape[0]
                idx = (~found & self.affordable(self._oracle, m)).nonzero().flatten()
                if idx.numel() == 0:
                    break
                probes = part.repeat(idx.numel(), 1, 1)  # [candidates for utterance idx[0], for idx[1], ...]
                ok, dd = self._adversarial(probes, idx.repeat_interleave(m))
                ok, dd = ok.view(-1, m), dd.view(-1, m)
                has = ok.any(dim=1)
                first = ok.float().argmax(dim=1)
                rows = torch.arange(idx.numel(), device=dev)
                adv[idx[has]] = part[first[has]]
                dec[idx[has]] = dd[rows, first][has]
                found[idx[has]] = True
        for level in (0.05, 0.2, 0.5, 1.0):
            m = self.params.init_draws
            idx = (~found & self.affordable(self._oracle, m)).nonzero().flatten()
            if idx.numel() == 0:
                break
            noise = _draw(self._gens, idx, tuple(x.shape[1:]), x, "rand", m) * 2 - 1  # (m, k, 1, T)
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
        moved = hi < 1  # hi = 1: no accepted probe, keep the start point exactly as probed
        pts = self._q(xs + expand(hi, xs) * (target - xs))
        adv[idx] = torch.where(expand(moved, xs), pts, target)
        return adv, dec

    def _direction(self, base, idx, delta, evals):
        """HSJA's gradient-direction estimate (k, 1, T), unit L2 norm, from ``evals`` (k,) probes per utterance."""
        k = idx.numel()
        s_phi_u = torch.zeros_like(base)  # Σ φ_i u_i
        s_u = torch.zeros_like(base)  # Σ u_i
        s_phi = torch.zeros(k, device=base.device, dtype=base.dtype)
        done = torch.zeros(k, dtype=torch.int64, device=base.device)
        evals = evals.to(base.device)
        while bool((done < evals).any()):  # running sums: memory stays at probe_batch probes per utterance
            rows = (done < evals).nonzero().flatten()
            m = int(min(self.params.probe_batch, int((evals[rows] - done[rows]).max())))
            use = (torch.arange(m, device=base.device).view(m, 1) < (evals[rows] - done[rows]).view(1, -1))
            u = _draw(self._gens, idx[rows], tuple(base.shape[1:]), base, "randn", m)  # (m, r, 1, T)
            u = u / u.flatten(2).norm(dim=2).clamp(min=1e-12).view(m, rows.numel(), 1, 1)
            step = expand(delta[rows], base[rows]).unsqueeze(0)
            probes = (base[rows].unsqueeze(0) + step * u).clamp(-1.0, 1.0)
            u = (probes - base[rows].unsqueeze(0)) / step.clamp(min=1e-12)
            flat_use = use.flatten()
            owners = idx[rows].repeat(m)[flat_use]
            ok_all = torch.zeros(m * rows.numel(), dtype=torch.bool, device=base.device)
            ok, _ = self._adversarial(probes.reshape((-1,) + tuple(base.shape[1:]))[flat_use], owners)
            ok_all[flat_use] = ok
            w = use.to(base.dtype)
            phi = (ok_all.view(m, -1).to(base.dtype) * 2 - 1) * w
            s_phi_u[rows] += (phi.view(m, -1, 1, 1) * u).sum(dim=0)
            s_u[rows] += (w.view(m, -1, 1, 1) * u).sum(dim=0)
            s_phi[rows] += phi.sum(dim=0)
            done[rows] += use.sum(dim=0)
        cnt = evals.clamp(min=1).to(base.dtype)
        mean = s_phi / cnt
        # baseline φ̄ unless every probe agreed (then the plain mean direction, as in the paper)
        total = torch.where(expand(mean.abs() == 1, base), s_phi_u, s_phi_u - expand(mean, base) * s_u)
        total = total / expand(cnt, base)
        return total / expand(l2_norm(total).clamp(min=1e-12), total)
