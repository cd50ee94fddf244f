"""``masking``: a psychoacoustic attack — PGD under a frequency-masking threshold (Qin, Carlini, Cottrell, Goodfellow,
Raffel, ICML 2019, "Imperceptible, robust, and targeted adversarial examples for automatic speech recognition", §4).

**Masking threshold** θ_x (per utterance, per STFT frame and bin; computed once, no gradient), following Qin et al.'s
implementation of the MPEG-1 psychoacoustic model 1:

* PSD: ``p = 10·log10(|√(8/3)·STFT(x)/N|²)`` (Hann, N = ``n_fft``, hop N/4), normalised so the loudest bin of the
  utterance sits at 96 dB: ``P_x = 96 − max(p) + p``.
* Absolute threshold of hearing ``ATH(f) = 3.64(f/1k)^−0.8 − 6.5·exp(−0.6(f/1k − 3.3)²) + 10⁻³(f/1k)⁴ − 12`` dB
  above 1 Bark (below it: no constraint from the ATH).
* Tonal maskers: strict local maxima of P_x, smoothed ``P_TM = 10·log10(Σ_{k−1..k+1} 10^{P/10})``, kept when above
  the ATH and the strongest within ±0.5 Bark (Bark ``z(f) = 13·atan(0.00076 f) + 3.5·atan((f/7500)²)``).
* Spreading: masker k at z_k masks bin j with ``T = P_TM + Δ + SF``, ``Δ = −6.025 − 0.275·z_k``,
  ``SF = 27·dz`` for ``dz = z_j − z_k ≤ 0`` and ``(−27 + 0.37·max(P_TM − 40, 0))·dz`` above.
* Global threshold ``θ_x = Σ_k 10^{T/10} + 10^{ATH/10}`` (linear power, same 96 dB reference).

**The perturbation's PSD** is measured on the benign reference: ``PSD_δ = 10^{9.6}·|√(8/3)·STFT(δ)/N|² / max_bin
|√(8/3)·STFT(x)/N|²``. The masking penalty is the relative excess, averaged over frames,
``mean_frames Σ_k max(PSD_δ − θ_x, 0) / Σ_k θ_x`` (Qin's ``Σ max(PSD_δ − θ_x, 0)`` with a per-frame scale, so α
is dimensionless and quiet frames — where a perturbation is most audible — weigh as much as loud ones).

**The attack** minimises ``max(f(s(x+δ)), 0) + α·penalty(δ)`` (f: the task's margin loss with confidence κ, or CE)
with Adam on δ (step ``lr`` in [-1, 1] amplitude units), δ kept in the L∞ cap ε and x + δ in [-1, 1]. α is per
utterance and adapts as in Qin et al.: every 20 steps ×1.2 where the current iterate succeeds, every 50 steps ×0.8
where it fails. The best example per utterance is the successful one with the lowest penalty. With ``project=True``
the best δ is finally clipped to the threshold in the STFT domain (each bin scaled by ``min(1, √(θ_x/PSD_δ))``,
inverse STFT; three rounds, since the inverse STFT of a clipped STFT is not exactly consistent) and kept where it
still succeeds (one more query per utterance). :func:`masking_excess` measures how far
a perturbation exceeds the threshold (the tolerance the tests state).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from sec4sr_core.sdk import SAMPLE_RATE, Attack, Kappa, Knowledge, LinfBall, LossChoice, Steps

from .common import Best

_SCALE = math.sqrt(8.0 / 3.0)


def bark(f: torch.Tensor) -> torch.Tensor:
    """Bark scale of frequencies ``f`` in Hz."""
    return 13 * torch.atan(0.00076 * f) + 3.5 * torch.atan((f / 7500.0) ** 2)


def quiet_threshold(f: torch.Tensor) -> torch.Tensor:
    """Absolute threshold of hearing in dB SPL at ``f`` Hz (f > 0)."""
    k = f * 0.001
    return 3.64 * k ** -0.8 - 6.5 * torch.exp(-0.6 * (k - 3.3) ** 2) + 0.001 * k ** 4 - 12


def _stft(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Scaled STFT √(8/3)·STFT/N (B, K, F) of (B, 1, T)."""
    win = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    z = torch.stft(x[:, 0], n_fft, n_fft // 4, window=win, center=True, pad_mode="constant", return_complex=True)
    return z * (_SCALE / n_fft)


def _istft(z: torch.Tensor, n_fft: int, length: int) -> torch.Tensor:
    win = torch.hann_window(n_fft, dtype=z.real.dtype, device=z.device)
    return torch.istft(z / (_SCALE / n_fft), n_fft, n_fft // 4, window=win, center=True,
                       length=length).unsqueeze(1)


def masking_threshold(x: torch.Tensor, n_fft: int = 512, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Global masking threshold θ_x (B, K, F) in linear power (96 dB reference) and each utterance's reference
    power ``psd_max`` (B,), for waves ``x`` (B, 1, T). Float64, no gradient; frames in chunks of ``chunk``."""
    with torch.no_grad():
        z = _stft(x.double(), n_fft)
        power = z.real ** 2 + z.imag ** 2                                   # (B, K, F)
        psd_max = power.flatten(1).max(dim=1).values.clamp(min=1e-20)
        psd = 10 * torch.log10(power + 1e-20)
        PSD = 96 - psd.flatten(1).max(dim=1).values.view(-1, 1, 1) + psd    # dB, loudest bin at 96
        b, k, f = PSD.shape
        freqs = torch.linspace(0, SAMPLE_RATE / 2, k, dtype=torch.float64, device=x.device)
        z_b = bark(freqs)
        ath = torch.full_like(freqs, -math.inf)
        above = z_b > 1
        ath[above] = quiet_threshold(freqs[above])
        frames = PSD.permute(0, 2, 1).reshape(-1, k)                          # (B·F, K)
        out = []
        delta = -6.025 - 0.275 * z_b                                          # (K,) offset of a masker at bin k
        ath_lin = torch.where(torch.isfinite(ath), 10 ** (ath / 10), torch.zeros_like(ath))
        for s in range(0, frames.shape[0], chunk):
            P = frames[s : s + chunk]                                         # (C, K)
            c = P.shape[0]
            is_max = torch.zeros_like(P, dtype=torch.bool)
            is_max[:, 1:-1] = (P[:, 1:-1] > P[:, :-2]) & (P[:, 1:-1] > P[:, 2:])
            lin = 10 ** (P / 10)
            p_tm = torch.full_like(P, -math.inf)
            p_tm[:, 1:-1] = 10 * torch.log10(lin[:, :-2] + lin[:, 1:-1] + lin[:, 2:])
            cand = is_max & (p_tm >= ath)
            m = int(cand.sum(1).max()) if c else 0
            if m == 0:
                out.append(ath_lin.expand(c, k))
                continue
            # the candidates of each frame, in bin order, padded to m (pad = not a masker)
            pos = torch.sort(torch.where(cand, torch.arange(k, device=x.device), k), dim=1).values[:, :m]
            valid = pos < k
            pos = pos.clamp(max=k - 1)
            pm = torch.where(valid, p_tm.gather(1, pos), torch.full_like(pos, -math.inf, dtype=P.dtype))
            zm = z_b[pos]                                                     # (C, m)
            # a candidate is beaten by a stronger one within 0.5 Bark (equal: the lower bin wins)
            near = ((zm.unsqueeze(1) - zm.unsqueeze(2)).abs() < 0.5) & valid.unsqueeze(1) & valid.unsqueeze(2)
            near &= ~torch.eye(m, dtype=torch.bool, device=x.device)
            pi, pj = pm.unsqueeze(2), pm.unsqueeze(1)                         # [i, j]: i beaten by j?
            rank = torch.arange(m, device=x.device)
            stronger = (pj > pi) | ((pj == pi) & (rank.view(1, 1, m) < rank.view(1, m, 1)))
            keep = valid & ~(near & stronger).any(dim=2)                      # (C, m) maskers
            p_safe = torch.where(keep, pm, torch.zeros_like(pm))
            dz = z_b.view(1, 1, k) - zm.unsqueeze(2)                          # (C, m, K): maskee − masker
            upper_slope = (-27 + 0.37 * (p_safe - 40).clamp(min=0)).unsqueeze(2)
            sf = torch.where(dz > 0, upper_slope * dz, 27 * dz)
            t = p_safe.unsqueeze(2) + delta[pos].unsqueeze(2) + sf
            contrib = torch.where(keep.unsqueeze(2), torch.exp(t * (math.log(10) / 10)), torch.zeros_like(t)).sum(dim=1)
            out.append(contrib + ath_lin)
        theta = torch.cat(out).view(b, f, k).permute(0, 2, 1)
    return theta, psd_max


def perturbation_psd(delta: torch.Tensor, psd_max: torch.Tensor, n_fft: int = 512) -> torch.Tensor:
    """PSD_δ (B, K, F) of perturbations (B, 1, T) in the benign utterances' 96 dB reference; differentiable."""
    z = _stft(delta, n_fft)
    power = z.real ** 2 + z.imag ** 2
    return (10 ** 9.6) * power / psd_max.to(power.dtype).view(-1, 1, 1)


def masking_penalty(delta: torch.Tensor, theta: torch.Tensor, psd_max: torch.Tensor, n_fft: int = 512) -> torch.Tensor:
    """Relative excess (B,): the mean over frames of ``Σ_k max(PSD_δ − θ_x, 0) / Σ_k θ_x``; differentiable in δ."""
    psd = perturbation_psd(delta, psd_max, n_fft)
    th = theta.to(psd.dtype)
    return ((psd - th).clamp(min=0).sum(1) / th.sum(1)).mean(1)


def masking_excess(x: torch.Tensor, adv: torch.Tensor, n_fft: int = 512) -> dict[str, torch.Tensor]:
    """How far ``adv − x`` exceeds the masking threshold of ``x``: ``relative`` (the penalty, B,) and ``bins`` (the
    fraction of frame × bin cells with PSD_δ > θ_x, B,)."""
    theta, psd_max = masking_threshold(x, n_fft)
    with torch.no_grad():
        psd = perturbation_psd((adv - x).double(), psd_max, n_fft)
    over = psd > theta
    return {"relative": ((psd - theta).clamp(min=0).sum(1) / theta.sum(1)).mean(1).float(),
            "bins": over.flatten(1).double().mean(1).float()}


def project_to_threshold(delta: torch.Tensor, theta: torch.Tensor, psd_max: torch.Tensor,
                         n_fft: int = 512) -> torch.Tensor:
    """δ with every STFT bin scaled by ``min(1, √(θ_x / PSD_δ))``, back through the inverse STFT."""
    with torch.no_grad():
        z = _stft(delta.double(), n_fft)
        psd = (10 ** 9.6) * (z.real ** 2 + z.imag ** 2) / psd_max.view(-1, 1, 1)
        scale = torch.sqrt(theta / psd.clamp(min=1e-30)).clamp(max=1.0)
        return _istft(z * scale, n_fft, delta.shape[-1]).to(delta.dtype)


class MaskingParams(Kappa, LossChoice.with_defaults(loss="margin"), Steps.with_defaults(steps=100),
                    LinfBall.with_defaults(epsilon=0.01, descriptions={
                        "epsilon": "L∞ cap on δ in [-1, 1] amplitude units (the masking threshold is the budget)"})):
    """The masking attack: L∞ cap, Adam steps, loss and κ, the penalty weight α and the STFT size."""

    lr: float = Field(0.0002, gt=0, description="Adam step on δ in [-1, 1] amplitude units")
    alpha: float = Field(0.05, ge=0, description="initial weight α of the masking penalty (adapted per utterance)")
    n_fft: int = Field(512, ge=64, le=4096, description="STFT size of the masking model (hop n_fft/4)")
    project: bool = Field(True, description="finally clip δ to the threshold in the STFT domain where that keeps "
                                            "the attack successful")


class Masking(Attack):
    """Psychoacoustic attack: Adam under a frequency-masking threshold (Qin et al. 2019; white-box)."""

    name = "masking"
    Params = MaskingParams
    knowledge = Knowledge.WHITE_BOX
    norm = "linf"

    def perturb(self, oracle, x, goal):
        p = self.params
        loss_fn = goal.objective(oracle, p.loss, p.kappa)
        clip = p.loss == "margin" or oracle.task.has_threshold
        theta, psd_max = masking_threshold(x, p.n_fft)
        n = x.shape[0]
        idx = torch.arange(n, device=x.device)
        y = goal.labels()
        best = Best(x)
        delta = torch.zeros_like(x)
        m, v = torch.zeros_like(x), torch.zeros_like(x)
        alpha = torch.full((n,), p.alpha, dtype=x.dtype, device=x.device)
        b1, b2 = 0.9, 0.999

        def attack_loss(scores, labels):
            f = loss_fn(scores, labels)
            return f.clamp(min=0) if clip else f

        cap = self.budget(x).view(-1, 1, 1)  # (B, 1, 1): the L∞ cap ε, or ε_i from snr_db
        for step in range(1, p.steps + 1):
            adv = (x + delta).clamp(-1.0, 1.0)
            _, g_att, _, dec = oracle.loss_and_grad(adv, attack_loss, y, owners=idx.cpu())
            ok = goal.met(dec)
            with torch.enable_grad():
                d = delta.detach().requires_grad_(True)
                pen = masking_penalty(d, theta, psd_max, p.n_fft)
                (g_pen,) = torch.autograd.grad(pen.sum(), d)
            best.update(adv, pen.detach(), ok, dec)
            g = g_att + alpha.view(-1, 1, 1) * g_pen.to(x.dtype)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            upd = (m / (1 - b1 ** step)) / ((v / (1 - b2 ** step)).sqrt() + 1e-12)
            delta = torch.maximum(torch.minimum(delta - p.lr * upd, cap), -cap)
            delta = (x + delta).clamp(-1.0, 1.0) - x
            if step % 20 == 0:
                alpha = torch.where(ok, alpha * 1.2, alpha)
            if step % 50 == 0:
                alpha = torch.where(ok, alpha, alpha * 0.8)
        adv = (x + delta).clamp(-1.0, 1.0)
        with torch.no_grad():
            scores, dec = oracle.scores_and_decisions(adv, owners=idx.cpu())
            best.update(adv, masking_penalty(delta, theta, psd_max, p.n_fft).to(x.dtype), goal.met(dec), dec)
            if p.project:
                cand = best.ok.nonzero().flatten()
                if cand.numel():
                    d0 = best.adv[cand] - x[cand]
                    dp = d0
                    for _ in range(3):
                        dp = project_to_threshold(dp, theta[cand], psd_max[cand], p.n_fft)
                        dp = torch.maximum(torch.minimum(dp, cap[cand]), -cap[cand])
                    adv_p = (x[cand] + dp).clamp(-1.0, 1.0)
                    _, dec_p = oracle.scores_and_decisions(adv_p, owners=cand.cpu())
                    pen_p = masking_penalty(adv_p - x[cand], theta[cand], psd_max[cand], p.n_fft).to(x.dtype)
                    # a projected success replaces the unprojected one (its penalty is lower by construction)
                    keep = goal.met(dec_p, cand)
                    rows = cand[keep]
                    best.adv[rows] = adv_p[keep]
                    best.loss[rows] = pen_p[keep]
                    best.decisions[rows] = dec_p[keep]
        return best.crafted(masking_penalty=best.loss.detach().cpu())
