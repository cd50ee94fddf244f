"""Universal adversarial perturbation (white-box): one L∞-bounded perturbation crafted on a set of utterances and
added, unchanged, to unseen ones.

The crafting set is ``craft_size`` utterances of ``craft_split`` of ``craft_dataset`` (by default the ``dev`` split
of the dataset the attacked utterances come from, disjoint from its ``test`` utterances), cropped or padded to the
attacked length. The attack only *declares* that set (:meth:`UAP.crafting_request`); the core loads it
(:mod:`sec4sr_core.compose.crafting`, called by the study before each run) and hands it over with
``set_crafting``, and a Python caller passes its own: ``attack("uap")(system, x, y, crafting=waves)`` (every
utterance handed over is used). With none handed over, the attack crafts on the attacked batch itself and says so
(a warning, and ``extra["crafting"] = "attacked batch"``): then the perturbation is universal over the batch only.

Labels of the crafting set are the system's own benign decisions (untargeted: move every one away from it) or the
target (targeted: one perturbation per distinct target). Crafting is PGD on the **sum** of the per-utterance
losses: ``δ ← clip_{[−ε, ε]}(δ − α·sign(Σ_i ∇ max(loss(clip(x_i + δ)), −s)))``, ``steps`` passes in batches of
``craft_batch``; the margin loss saturates at ``−s`` (``saturation``) so utterances already moved stop steering δ.

With ``period`` P > 0 (default 1600 samples, 0.1 s) δ is a P-sample pattern tiled over the utterance, and every
crafting batch sees it at a fresh random offset: the perturbation is shift-invariant, so it does not depend on
where an unseen utterance starts. At ε = 0.002 only this form moved GE2E at all (``docs/attacks.md``): a
full-length δ (``period=0``) lowered the margins of unseen trials but flipped none.
**SV crafting trials.** On SV every score needs a claimed speaker. The crafting utterances are scored against the
claims handed over with them (``set_crafting(waves, claims=...)``: the study's own SV trials of the crafting split,
genuine utterances claiming their speaker), never against the attacked batch's claims borrowed by index. Without
handed-over claims, each crafting utterance claims the enrolled speaker it scores highest against (a genuine-style
trial, one query per utterance and speaker, charged); when crafting falls back to the attacked batch, the batch's
own claims are used.

**Budget.** ε is fixed, or per utterance with ``snr_db``: the pattern is crafted inside ε_c = the median of the
crafting utterances' ε_i (step ``step_size·ε_c/0.002``), and each attacked utterance receives it clipped to its own
ε_i, so every utterance stays within its SNR budget.

A perturbation is cached per (parameters, length, task, target, system and crafting-set fingerprint) within the
process, so every batch of a study reuses it; the crafting queries are charged, spread evenly, to the first
batch's utterances.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import torch
from pydantic import Field

from sec4sr_core.sdk import (
    Attack, Crafted, CraftingRequest, Kappa, Knowledge, LinfBall, LossChoice, ParameterError, Steps, StepSize,
    fit_length,
)

_CACHE: dict[tuple, torch.Tensor] = {}


class UAPParams(Kappa, LossChoice.with_defaults(loss="margin"), StepSize.with_defaults(step_size=0.0002),
                Steps.with_defaults(steps=40, descriptions={"steps": "passes over the crafting set"}), LinfBall):
    """UAP: ε, passes and step α, the tiling period, the crafting set, loss, saturation and κ."""

    period: int = Field(1600, ge=0, description="length in samples of the tiled, shift-invariant pattern "
                                                "(0 = one full-length perturbation)")
    craft_dataset: str | None = Field(None, description="dataset spec or folder of the crafting utterances "
                                                        "(None = the dataset the attacked utterances come from)")
    craft_split: str = Field("dev", description="split of the crafting utterances (disjoint from the attacked)")
    craft_size: int = Field(32, ge=1, description="number of crafting utterances the core loads")
    craft_batch: int = Field(16, ge=1, description="crafting utterances per forward+backward")
    saturation: float = Field(0.05, ge=0, description="margin loss only: crafting stops pushing an utterance once its "
                                                      "loss is below −saturation, so the pattern serves the "
                                                      "utterances it has not moved yet")


class UAP(Attack):
    """Universal perturbation: one δ crafted on held-out utterances, applied to unseen ones (white-box)."""

    name = "uap"
    Params = UAPParams
    knowledge = Knowledge.WHITE_BOX
    norm = "linf"

    def crafting_request(self) -> CraftingRequest:
        p = self.params
        return CraftingRequest(p.craft_dataset, p.craft_split, p.craft_size)

    def crafting_set(self, x: torch.Tensor) -> tuple[torch.Tensor, str | None]:
        """The crafting waveforms (N, 1, T) at the length and on the device of ``x`` (B, 1, T), and the fallback
        label (None when they were handed over)."""
        if self.crafting is None:
            warnings.warn("uap: no crafting utterances were handed over (the study's core or "
                          "crafting=... does that); crafting on the attacked batch itself", stacklevel=4)
            return x, "attacked batch"
        return fit_length(self.crafting, x.shape[-1]).to(x.device, x.dtype), None

    def crafting_claims_for(self, oracle, xc: torch.Tensor, fallback: str | None) -> torch.Tensor | None:
        """The claimed speaker (N,) of each crafting utterance on SV (None for other tasks and for the attacked
        batch itself, whose own claims the oracle holds); see the module docstring."""
        if oracle.task.value != "sv" or fallback is not None:
            return None
        if self.crafting_claims is not None:
            claims = self.crafting_claims.to(oracle.device)
            if int(claims.min()) < 0 or int(claims.max()) >= oracle.n_speakers:
                raise ParameterError(f"uap: crafting claims must be enrolled speaker indices in "
                                     f"[0, {oracle.n_speakers - 1}]")
            return claims
        n, s = xc.shape[0], oracle.n_speakers
        probes = xc.repeat(s, 1, 1)  # [all utterances claiming 0, all claiming 1, ...]
        claims = torch.arange(s, device=oracle.device).repeat_interleave(n)
        owners = torch.arange(n * s) % oracle.n
        scores = oracle.scores(probes, owners=owners, claims=claims).view(s, n)
        return scores.argmax(dim=0)

    def pattern_length(self, length: int) -> int:
        p = self.params
        return length if p.period == 0 or p.period >= length else p.period

    @staticmethod
    def tile(pattern: torch.Tensor, length: int, offset: int = 0) -> torch.Tensor:
        """(1, 1, P) pattern repeated to (1, 1, length), starting ``offset`` samples into the pattern."""
        period = pattern.shape[-1]
        reps = -(-(length + offset) // period)
        return pattern.repeat(1, 1, reps)[..., offset:offset + length]

    @staticmethod
    def fold(grad: torch.Tensor, period: int, offset: int = 0) -> torch.Tensor:
        """Gradient (1, 1, P) of ``Σ_i <grad_i, tile(pattern, T, offset)>`` w.r.t. the pattern, for grad (N, 1, T)."""
        g = grad.sum(dim=0, keepdim=True)
        g = torch.nn.functional.pad(g, (offset, (-(g.shape[-1] + offset)) % period))
        return g.view(1, 1, -1, period).sum(dim=2)

    def craft(self, oracle, xc: torch.Tensor, labels: torch.Tensor, loss_fn,
              claims: torch.Tensor | None = None) -> torch.Tensor:
        """The universal pattern (1, 1, P) for crafting inputs ``xc`` (N, 1, T) with labels (N,) and, on SV, the
        claims (N,) of the crafting trials."""
        p = self.params
        t = xc.shape[-1]
        period = self.pattern_length(t)
        eps = float(self.budget(xc).median())  # ε_c: the fixed ε, or the crafting set's median ε_i (snr_db)
        alpha = float(p.steps_for(torch.tensor([eps]))[0])
        delta = torch.zeros((1, 1, period), device=xc.device, dtype=xc.dtype)
        for _ in range(p.steps):
            total = torch.zeros_like(delta)
            for s in range(0, xc.shape[0], p.craft_batch):
                chunk = xc[s : s + p.craft_batch]
                owners = torch.arange(s, s + chunk.shape[0]) % oracle.n
                shift = 0 if period == t else int(torch.randint(0, period, (1,), generator=oracle.generator,
                                                                device=oracle.generator.device))
                cl = None if claims is None else claims[s : s + chunk.shape[0]]
                _, grad, _, _ = oracle.loss_and_grad((chunk + self.tile(delta, t, shift)).clamp(-1, 1), loss_fn,
                                                     labels[s : s + chunk.shape[0]], owners=owners, claims=cl)
                total += self.fold(grad, period, shift)
            delta = (delta - alpha * total.sign()).clamp(-eps, eps)
        return delta

    def perturb(self, oracle, x, goal):
        p = self.params
        loss_fn = goal.objective(oracle, p.loss, p.kappa)
        craft_loss = loss_fn
        if p.loss == "margin" or oracle.task.has_threshold:
            def craft_loss(scores, labels):
                return loss_fn(scores, labels).clamp(min=-p.saturation)
        xc, fallback = self.crafting_set(x)
        claims_c = self.crafting_claims_for(oracle, xc, fallback)
        owners = torch.arange(xc.shape[0]) % oracle.n
        scores_c, dec_c = oracle.scores_and_decisions(xc, owners=owners, claims=claims_c)
        fingerprint = hashlib.sha256(scores_c.double().cpu().numpy().round(5).tobytes()).hexdigest()[:16]
        base = (json.dumps(p.model_dump(), sort_keys=True), x.shape[-1], oracle.task.value, fingerprint)
        goals = sorted(set(goal.y.tolist())) if goal.targeted else [None]
        deltas = {}
        for g in goals:
            key = base + (g,)
            if key not in _CACHE:
                labels = dec_c if g is None else torch.full_like(dec_c, g)
                _CACHE[key] = self.craft(oracle, xc, labels, craft_loss, claims_c).detach()
            deltas[g] = _CACHE[key]
        if goal.targeted:
            pick = torch.tensor([goals.index(v) for v in goal.y.tolist()], device=x.device)
            delta = torch.cat([self.tile(deltas[g], x.shape[-1]) for g in goals])[pick]
        else:
            delta = self.tile(deltas[None], x.shape[-1])
        bound = self.budget(x).view(-1, 1, 1)  # each utterance's own ε_i (snr_db) or the fixed ε
        adv = (x + torch.maximum(torch.minimum(delta, bound), -bound)).clamp(-1.0, 1.0)
        with torch.no_grad():
            _, dec = oracle.scores_and_decisions(adv)
        extra = {"universal": True} if fallback is None else {"universal": True, "crafting": fallback}
        return Crafted(adv, dec, extra)
