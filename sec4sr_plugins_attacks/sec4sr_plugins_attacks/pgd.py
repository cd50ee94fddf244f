"""Gradient attacks: FGSM, PGD (L∞ and L2, random restarts), CW∞, and PGD on NES gradient estimates.

PGD (Madry et al.) descends the losses of :mod:`sec4sr_core.sdk.losses` (minimised):

* L∞: ``x_{k+1} = Π_{[x−ε, x+ε] ∩ [−1, 1]}(x_k − α·sign(∇))``;
* L2: ``x_{k+1} = Π_{‖·−x‖₂ ≤ ε, [−1, 1]}(x_k − α·∇/‖∇‖₂)``.

The budget is a fixed ε or per utterance from ``snr_db`` (:mod:`sec4sr_core.sdk.attack_params`): ``pgd:snr_db=30``
gives each utterance ε_i = rms(x_i)·10^(−1.5) and the step α_i = step_size·ε_i/0.002. L2 (``norm=l2``) defaults to
a radius of SNR 30 dB (‖δ_i‖₂ ≤ ‖x_i‖₂/31.6) and a step of 0.2 radius_i: at the L∞ default ε = 0.002, an L2 ball
over 3 s of audio would hold less than one 16-bit step per sample.

Every iterate's decision comes with its gradient (one forward+backward per step), and the final iterate is
evaluated with one forward, so the best adversarial example is kept **per utterance** (a success first, then the
lowest loss) across steps and restarts at no extra query. Restarts after the first start from ``x + U(−ε, ε)`` (L∞)
or a random point of the L2 ball, and run only for the utterances that have not succeeded yet.

FGSM is one step of size ε. CW∞ is PGD on the margin loss with the predecessor's CW∞ defaults (α = 0.001).
``pgd-nes`` is PGD whose gradient is an NES estimate from scores only (antithetic Gaussian probes), the
score-based adaptive attack.
"""

from __future__ import annotations

import torch
from pydantic import Field

from sec4sr_core.sdk import (
    DEFAULT_EPSILON, Attack, Kappa, Knowledge, LinfBall, LossChoice, NormBall, ParamMixin, Steps, StepSize, nes_gradient, probe_sampler,
)

from .common import (
    Best,
    NESSampling,
    ensure_threshold,
    expand,
    l2_norm,
    linf_box,
    project_l2,
    project_linf,
)


class Restarts(ParamMixin):
    """Random restarts, run only for the utterances not yet successful."""

    restarts: int = Field(0, ge=0, description="random restarts (0 = one run starting at x)")


_PER_RESTART = {"steps": "iterations per restart"}


class PGDParams(Kappa, LossChoice, Restarts, StepSize, Steps.with_defaults(descriptions=_PER_RESTART), NormBall):
    """PGD: ε ball (L∞ or L2), steps α, restarts, loss and κ."""


class PGD(Attack):
    """Projected gradient descent in an L∞ or L2 ball (white-box), restarts, best example kept per utterance."""

    name = "pgd"
    Params = PGDParams
    knowledge = Knowledge.WHITE_BOX
    norm = "linf"

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.norm = getattr(self.params, "norm", "linf")  # per instance: 'linf' or 'l2'

    # -- pieces subclasses may change -------------------------------------------------------------------------
    def gradient(self, oracle, adv, loss_fn, y, idx):
        """(loss (N,), gradient (N, 1, T), decisions (N,)) at ``adv`` for the utterances ``idx``."""
        loss, grad, _, dec = oracle.loss_and_grad(adv, loss_fn, y, owners=idx.cpu())
        return loss, grad, dec

    def prepare(self, oracle, x) -> None:
        """Hook run before the loss is built (black-box subclasses estimate the threshold here)."""

    def pgd_params(self) -> PGDParams:
        """The PGD configuration this attack runs (FGSM and CW∞ derive theirs)."""
        return self.params

    def start(self, p: PGDParams, x: torch.Tensor, generator: torch.Generator,
              bound: torch.Tensor | None = None) -> torch.Tensor:
        """The first iterate for ``x`` (B, 1, T) inside the per-utterance ``bound`` (B,) (a random point of the
        ball when restarting)."""
        if not p.restarts:
            return x.clone()
        bound = p.budget(x) if bound is None else bound
        if p.norm == "l2":
            d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
            d = d / expand(l2_norm(d).clamp(min=1e-12), d) * expand(r * bound, d)
            return project_l2(x + d, x, bound)
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
        return (x + noise * expand(bound, x)).clamp(-1.0, 1.0)

    def step(self, p: PGDParams, adv, grad, x, lower, upper, bound=None, alpha=None) -> torch.Tensor:
        """One projected step; ``bound`` and ``alpha`` are per utterance (B,)."""
        bound = p.budget(x) if bound is None else bound
        alpha = p.steps_for(bound) if alpha is None else alpha
        if p.norm == "l2":
            g = grad / expand(l2_norm(grad).clamp(min=1e-12), grad)
            return project_l2(adv - expand(alpha, g) * g, x, bound)
        return project_linf(adv - expand(alpha, grad) * grad.sign(), lower, upper)

    # -- the loop ---------------------------------------------------------------------------------------------
    def perturb(self, oracle, x, goal):
        p = self.pgd_params()
        self.prepare(oracle, x)
        loss_fn = goal.objective(oracle, p.loss, p.kappa)
        best = Best(x)
        all_idx = torch.arange(x.shape[0], device=x.device)
        bound = p.budget(x)  # (B,) ε or radius per utterance
        alpha = p.steps_for(bound)  # (B,) step per utterance
        for restart in range(max(1, p.restarts)):
            idx = all_idx if restart == 0 else all_idx[~best.ok]
            if idx.numel() == 0:
                break
            xs, ys, bs, al = x[idx], goal.labels(idx), bound[idx], alpha[idx]
            lower, upper = linf_box(xs, bs)
            adv = self.start(p, xs, oracle.generator, bs)
            for _ in range(p.steps):
                loss, grad, dec = self.gradient(oracle, adv, loss_fn, ys, idx)
                best.update(adv, loss, goal.met(dec, idx), dec, idx)
                adv = self.step(p, adv, grad, xs, lower, upper, bs, al).detach()
            with torch.no_grad():
                scores, dec = oracle.scores_and_decisions(adv, owners=idx.cpu())
                best.update(adv, loss_fn(scores, ys), goal.met(dec, idx), dec, idx)
        return best.crafted()


class FGSMParams(Kappa, LossChoice, LinfBall):
    """FGSM: one signed step of size ε."""


class FGSM(PGD):
    """Fast gradient sign method: one signed step of size ε (white-box)."""

    name = "fgsm"
    Params = FGSMParams

    def pgd_params(self) -> PGDParams:
        p = self.params
        # one step of the whole budget: α = ε (fixed) or α_i = ε_i (snr_db: step_size 0.002 is "one ε")
        step = DEFAULT_EPSILON if p.snr_db is not None else p.epsilon
        return PGDParams(epsilon=p.epsilon, snr_db=p.snr_db, step_size=step, steps=1, loss=p.loss, kappa=p.kappa)


class CWInfParams(Kappa, Restarts, StepSize.with_defaults(step_size=0.001),
                  Steps.with_defaults(descriptions=_PER_RESTART), LinfBall):
    """CW∞: PGD's L∞ configuration on the margin loss (α = 0.001)."""


class CWInf(PGD):
    """CW∞: PGD in an L∞ ball on the margin loss with confidence κ (white-box)."""

    name = "cwinf"
    Params = CWInfParams

    def pgd_params(self) -> PGDParams:
        p = self.params
        return PGDParams(epsilon=p.epsilon, snr_db=p.snr_db, step_size=p.step_size, steps=p.steps,
                         restarts=p.restarts, loss="margin", kappa=p.kappa)


class PGDNESParams(NESSampling, StepSize.with_defaults(step_size=0.0002), Steps.with_defaults(steps=100, descriptions={
        "steps": "iterations per restart ((samples + 1) queries each)"}), PGDParams):
    momentum: float = Field(0.9, ge=0, lt=1, description="the step follows g ← μ·g + (1 − μ)·ĝ: averaging the noisy "
                                                        "NES estimates over steps (0 = plain PGD on each estimate)")


class PGDNES(PGD):
    """PGD on NES gradient estimates from scores only (score-based; estimates the SV/OSI threshold)."""

    name = "pgd-nes"
    Params = PGDNESParams
    knowledge = Knowledge.SCORES
    estimates_threshold = True

    def prepare(self, oracle, x) -> None:
        ensure_threshold(oracle, x, self.params.budget(x))
        self._sampler = probe_sampler(self.params.prior)  # one per run: its mel filterbank is built once

    def start(self, p, x, generator, bound=None):
        self._avg = None  # the momentum buffer restarts with every restart
        return super().start(p, x, generator, bound)

    def gradient(self, oracle, adv, loss_fn, y, idx):
        p = self.params
        k = idx.numel()
        seen = {}

        def probe_loss(probes: torch.Tensor) -> torch.Tensor:
            m = probes.shape[0] // k
            scores, dec = oracle.scores_and_decisions(probes, owners=idx.repeat(m).cpu())
            if "dec" not in seen:
                seen["dec"] = dec[:k]
            return loss_fn(scores, y.repeat(m))

        grad, _, loss_at_x = nes_gradient(probe_loss, adv, p.samples, p.sigma, oracle.generator,
                                          batch=min(p.samples_batch, p.samples), sampler=self._sampler)
        if p.momentum and self._avg is not None:
            grad = p.momentum * self._avg + (1 - p.momentum) * grad
        self._avg = grad
        return loss_at_x, grad, seen["dec"]
