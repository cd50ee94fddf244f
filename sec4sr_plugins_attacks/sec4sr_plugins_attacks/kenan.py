"""Kenansville (Abdullah et al., 2021): a decision-based signal-processing attack that removes low-energy content.

* ``mode=fft`` (batched, on the input's device): zero every rFFT bin of the original whose magnitude is below a
  per-utterance threshold f and invert with the exact length (odd lengths work). A binary search on f starts at
  ``max|X|/2`` in ``[0, max|X|]``: success → lower f (remove less), failure → raise it. ``max_iter`` decision
  queries per utterance; the least-distorting success is kept.
* ``mode=ssa`` (singular spectrum analysis, one utterance at a time on the CPU, as the algorithm is per signal):
  window ``L = min(⌊0.05·N⌋, 3000)``; the eigenvectors of the lag-covariance of the Hankel trajectory matrix are
  computed once per utterance (cached; equivalent to its SVD, built in O(L²) from running sums, not O(N·L²)); the
  signal is rebuilt from its first K = max(1, ⌊L·p/100⌋) components by diagonal averaging (FFT convolutions). A
  binary search on the percentage p ∈ [0, raster_width], starting at 50: success → keep more components, failure →
  fewer. It stops when K stops changing or after ``max_iter`` queries. Success is judged in the attack's own
  direction (targeted: decision == target), which the predecessor's SSA search ignored.

There is no ε bound: report distortion metrics next to the success rate. Decisions only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from sec4sr_core.sdk import NOT_EVALUATED, Attack, Crafted, Knowledge, Params


class KenanParams(Params):
    mode: Literal["fft", "ssa"] = Field("fft", description="'fft' (magnitude threshold) or 'ssa' (components)")
    max_iter: int = Field(15, ge=1, description="binary-search steps (one decision query per utterance each)")
    raster_width: float = Field(100.0, gt=0, le=100, description="SSA: upper end of the percentage search")
    max_window: int = Field(3000, ge=2, description="SSA: largest window L in samples")


class Kenan(Attack):
    """Kenansville: remove low-energy FFT bins or SSA components, binary search by decisions (decision-based)."""

    name = "kenan"
    Params = KenanParams
    knowledge = Knowledge.DECISIONS
    norm = None

    def perturb(self, oracle, x, goal):
        search = self._fft if self.params.mode == "fft" else self._ssa
        adv, dec = search(oracle, x, goal)
        return Crafted(adv, dec)

    # -- FFT ----------------------------------------------------------------------------------------------------
    def _fft(self, oracle, x, goal):
        t = x.shape[-1]
        spec = torch.fft.rfft(x, dim=-1)
        mag = spec.abs()
        top = mag.flatten(1).max(dim=1).values
        lo = torch.zeros_like(top)
        hi = top.clone()
        f = top / 2
        best = x.clone()
        best_dec = torch.full((x.shape[0],), NOT_EVALUATED, dtype=torch.int64, device=x.device)
        for _ in range(self.params.max_iter):
            keep = mag >= f.view(-1, 1, 1)
            cand = torch.fft.irfft(spec * keep, n=t, dim=-1).clamp(-1.0, 1.0)
            dec = oracle.decisions(cand)
            ok = goal.met(dec)
            best = torch.where(ok.view(-1, 1, 1), cand, best)
            best_dec = torch.where(ok, dec, best_dec)
            hi = torch.where(ok, f, hi)
            lo = torch.where(ok, lo, f)
            f = (lo + hi).abs() / 2
        return best, best_dec

    # -- SSA ----------------------------------------------------------------------------------------------------
    def _ssa(self, oracle, x, goal):
        p = self.params
        n = x.shape[0]
        best = x.clone()
        best_dec = torch.full((n,), NOT_EVALUATED, dtype=torch.int64, device=x.device)
        for i in range(n):  # per signal (see module docstring); bounded by max_iter queries each
            sig = x[i, 0].detach().double().cpu()
            ssa = SSA(sig, min(max(2, int(0.05 * sig.numel())), p.max_window))
            lo_p, hi_p, pct = 0.0, p.raster_width, 50.0
            last_k = -1
            owner = torch.tensor([i])
            for _ in range(p.max_iter):
                k = max(1, int(ssa.window * pct / 100))
                if k == last_k:
                    break
                last_k = k
                cand = ssa.reconstruct(k).to(x.dtype).clamp(-1.0, 1.0).to(x.device).view(1, 1, -1)
                dec = oracle.decisions(cand, owners=owner)
                if bool(goal.met(dec, owner.to(x.device))):
                    best[i] = cand[0]
                    best_dec[i] = dec[0]
                    lo_p = pct  # success: keep more components (less distortion)
                else:
                    hi_p = pct  # failure: keep fewer
                pct = (lo_p + hi_p) / 2
        return best, best_dec


class SSA:
    """Singular spectrum analysis of one signal (N,) with window L; eigenvectors computed once (cached)."""

    def __init__(self, sig: torch.Tensor, window: int) -> None:
        self.sig = sig
        self.window = window
        n = sig.numel()
        k = n - window + 1
        self.k = k
        # lag covariance C[i, j] = Σ_{r<K} x[r+i] x[r+j] (the Gram matrix Xᵀ X of the trajectory matrix)
        lags = torch.arange(window)
        nfft = 1 << (n + window).bit_length()
        fx = torch.fft.rfft(sig, nfft)
        head = torch.fft.rfft(sig[:k], nfft)
        row0 = torch.fft.irfft(fx * head.conj(), nfft)[:window]  # C[0, d] = Σ_{r<K} x[r] x[r+d]
        # C[i, i+d] = C[0, d] + Σ_{m<i} (x[K+m] x[K+m+d] − x[m] x[m+d])
        m = torch.arange(window - 1).view(-1, 1)
        d = lags.view(1, -1)
        valid = (m + d) < n - k
        pad = torch.cat([sig, torch.zeros(window)])
        tail = pad[(k + m + d).clamp(max=n + window - 1)] * sig[k + m].expand(-1, window)
        headp = sig[m].expand(-1, window) * pad[(m + d)]
        inc = torch.where(valid, tail - headp, torch.zeros(()))
        diag = torch.cat([row0.view(1, -1), row0.view(1, -1) + inc.cumsum(dim=0)], dim=0)  # diag[i, d] = C[i, i+d]
        i_idx = torch.arange(window).view(-1, 1).expand(-1, window)
        j_idx = i_idx + d
        ok = j_idx < window
        cov = torch.zeros(window, window, dtype=sig.dtype)
        cov[i_idx[ok], j_idx[ok]] = diag[ok]
        cov = torch.triu(cov) + torch.triu(cov, 1).T
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)
        self.vectors = evecs[:, order]  # (L, L), columns = right singular vectors of the trajectory matrix
        self.counts = torch.nn.functional.conv1d(
            torch.ones(1, 1, k, dtype=sig.dtype), torch.ones(1, 1, window, dtype=sig.dtype), padding=window - 1
        ).view(-1)
        self.nfft = nfft
        self.fx = fx

    def reconstruct(self, components: int, chunk: int = 256) -> torch.Tensor:
        """The signal (N,) rebuilt from the first ``components`` components by diagonal averaging."""
        n, L, k, nfft = self.sig.numel(), self.window, self.k, self.nfft
        out = torch.zeros(nfft, dtype=self.sig.dtype)
        for start in range(0, components, chunk):  # bounded memory: chunk × nfft
            v = self.vectors[:, start : min(components, start + chunk)].T  # (c, L)
            fv = torch.fft.rfft(v, nfft, dim=-1)
            pcs = torch.fft.irfft(self.fx.unsqueeze(0) * fv.conj(), nfft, dim=-1)[:, :k]  # PC_c[r] = Σ_j x[r+j] v[j]
            out += torch.fft.irfft((torch.fft.rfft(pcs, nfft, dim=-1) * fv).sum(dim=0), nfft)
        return out[:n] / self.counts
