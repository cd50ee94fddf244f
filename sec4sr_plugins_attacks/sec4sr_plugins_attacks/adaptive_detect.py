"""``pgd-detect``: L∞ PGD against a system *and* a WaveGuard detector in front of it (the adaptive attack of
Hussain et al. 2021, §7: a joint loss, as Carlini & Wagner 2017 do against detectors).

Per step the attack queries the white-box oracle with the probes ``[adv; T(adv)]`` (two queries per utterance) and
descends the joint loss

    L(adv) = max(f(s(adv)), 0) + λ · d(adv),     d(adv) = dist(s(adv), s(T(adv)))

where ``f`` is the task's margin loss with confidence κ (clipped at 0: once the decision is reached with margin κ
only the detector term pulls) — or the CE objective (not clipped) — and ``d`` is WaveGuard's detection score for the
transform T the attack is told (:mod:`sec4sr_core.sdk.waveguard`; the white-box adversary knows the detector).
The oracle returns the gradient with respect to both probes; the one through ``T(adv)`` is pulled back through T
(a vector–Jacobian product, straight-through for ``quantize``). The step is PGD's signed step in the ε-ball, and the
best example per utterance is kept: a success first, then the lowest joint loss (i.e. the lowest detection score).
"""

from __future__ import annotations

import torch
from pydantic import Field

from sec4sr_core.sdk import Attack, Kappa, Knowledge, LinfBall, LossChoice, Steps, StepSize
from sec4sr_core.sdk.waveguard import WaveGuardTransform, output_distance, waveguard_transform

from .common import Best, linf_box, project_linf


class PGDDetectParams(WaveGuardTransform, Kappa, LossChoice.with_defaults(loss="margin"),
                      StepSize, Steps.with_defaults(steps=20), LinfBall):
    """PGD's L∞ budget and steps, the loss and κ, the detector's transform, and the detector weight λ."""

    lam: float = Field(4.0, ge=0, description="weight λ of the detection score (score-change units) in the joint "
                                              "loss; 0 = plain PGD")


class PGDDetect(Attack):
    """L∞ PGD on attack loss + λ·WaveGuard score: evades the system and a WaveGuard detector (white-box)."""

    name = "pgd-detect"
    Params = PGDDetectParams
    knowledge = Knowledge.WHITE_BOX
    norm = "linf"

    def joint_gradient(self, oracle, adv, base_loss, y, idx):
        """(joint loss (k,), gradient (k, 1, T), decisions (k,)) at ``adv`` (k, 1, T) for the utterances ``idx``."""
        p = self.params
        fn = waveguard_transform(p)
        k = adv.shape[0]
        clip_attack = p.loss == "margin" or oracle.task.has_threshold  # SV/OSI always use the margin loss

        def loss_fn(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            s = scores.view(-1, 2, k, scores.shape[-1])           # (eot, [x, T(x)], k, S)
            lab = labels.view(-1, 2, k)[:, 0].reshape(-1)
            att = base_loss(s[:, 0].reshape(-1, s.shape[-1]), lab).view(-1, k)
            if clip_attack:
                att = att.clamp(min=0)
            det = output_distance(s[:, 0], s[:, 1], p.distance)   # (eot, k)
            return torch.stack([att + p.lam * det, torch.zeros_like(att)], dim=1).reshape(-1)

        with torch.no_grad():
            t_adv = fn(adv)
        probes = torch.cat([adv, t_adv])
        loss, grad, _, dec = oracle.loss_and_grad(probes, loss_fn, torch.cat([y, y]),
                                                  owners=torch.cat([idx, idx]).cpu())
        with torch.enable_grad():
            a = adv.detach().requires_grad_(True)
            (back,) = torch.autograd.grad(fn(a), a, grad[k:])
        return loss[:k], grad[:k] + back, dec[:k]

    def perturb(self, oracle, x, goal):
        p = self.params
        base_loss = goal.objective(oracle, p.loss, p.kappa)
        best = Best(x)
        idx = torch.arange(x.shape[0], device=x.device)
        y = goal.labels()
        bound = self.budget(x)  # (B,): ε, or ε_i from snr_db
        step = p.steps_for(bound).view(-1, 1, 1)
        lower, upper = linf_box(x, bound)
        adv = x.clone()
        for _ in range(p.steps):
            loss, grad, dec = self.joint_gradient(oracle, adv, base_loss, y, idx)
            best.update(adv, loss, goal.met(dec), dec)
            adv = project_linf(adv - step * grad.sign(), lower, upper).detach()
        loss, _, dec = self.joint_gradient(oracle, adv, base_loss, y, idx)
        best.update(adv, loss, goal.met(dec), dec)
        return best.crafted()
