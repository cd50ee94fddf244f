"""Universal adversarial perturbation (white-box): one L∞-bounded perturbation crafted on a set of utterances and
added, unchanged, to unseen ones.

The crafting set is ``craft_size`` utterances of ``craft_split`` of ``craft_dataset`` (by default the embedded
corpus' ``dev`` split, disjoint from the ``test`` utterances attacked), cropped or padded to the attacked length.
Their labels are the system's own benign decisions (untargeted: move every one away from it) or the target
(targeted: one perturbation per distinct target). Crafting is PGD on the **sum** of the per-utterance losses:
``δ ← clip_{[−ε, ε]}(δ − α·sign(Σ_i ∇ max(loss(clip(x_i + δ)), −s)))``, ``steps`` passes in batches of
``craft_batch``; the margin loss saturates at ``−s`` (``saturation``) so utterances already moved stop steering δ.

With ``period`` P > 0 (default 1600 samples, 0.1 s) δ is a P-sample pattern tiled over the utterance, and every
crafting batch sees it at a fresh random offset: the perturbation is shift-invariant, so it does not depend on
where an unseen utterance starts. At ε = 0.002 only this form moved GE2E at all (``docs/attacks.md``): a
full-length δ (``period=0``) lowered the margins of unseen trials but flipped none.
A perturbation is cached per (parameters, length, task, target, system fingerprint) within the process, so every
batch of a study reuses it; the crafting queries are charged, spread evenly, to the first batch's utterances.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import torch
from pydantic import Field

from sec4sr_core.interfaces import Attack, AttackResult, Knowledge
from sec4sr_core.losses import success
from sec4sr_core.params import Params

from .common import check_labels, objective

_CACHE: dict[tuple, torch.Tensor] = {}


class UAPParams(Params):
    epsilon: float = Field(0.002, gt=0, le=1, description="L∞ bound in [-1, 1] amplitude units")
    step_size: float = Field(0.0002, gt=0, description="step α per pass in [-1, 1] amplitude units")
    steps: int = Field(40, ge=1, description="passes over the crafting set")
    period: int = Field(1600, ge=0, description="length in samples of the tiled, shift-invariant pattern "
                                                "(0 = one full-length perturbation)")
    craft_dataset: str = Field("embedded", description="dataset spec or folder of the crafting utterances")
    craft_split: str = Field("dev", description="split of the crafting utterances (disjoint from the attacked)")
    craft_size: int = Field(32, ge=1, description="number of crafting utterances")
    craft_batch: int = Field(16, ge=1, description="crafting utterances per forward+backward")
    loss: Literal["ce", "margin"] = Field("margin", description="objective; SV/OSI always use the margin loss")
    saturation: float = Field(0.05, ge=0, description="margin loss only: crafting stops pushing an utterance once its "
                                                      "loss is below −saturation, so the pattern serves the "
                                                      "utterances it has not moved yet")
    kappa: float = Field(0.0, ge=0, description="confidence κ of the margin loss (score units)")


class UAP(Attack):
    """Universal perturbation: one δ crafted on held-out utterances, applied to unseen ones (white-box)."""

    name = "uap"
    Params = UAPParams
    knowledge = Knowledge.WHITE_BOX
    norm = "linf"

    def crafting_set(self, length: int) -> torch.Tensor:
        from sec4sr_core.audio import load_batch
        from sec4sr_core.errors import ParameterError
        from sec4sr_core.runner import resolve_dataset

        p = self.params
        ds = resolve_dataset(p.craft_dataset)
        if p.craft_split not in ds.split_names():
            raise ParameterError(f"uap: dataset {p.craft_dataset!r} has no split {p.craft_split!r}")
        utts = ds.split(p.craft_split)[: p.craft_size]
        if not utts:
            raise ParameterError(f"uap: split {p.craft_split!r} of {p.craft_dataset!r} is empty")
        return load_batch([u.path for u in utts], length)

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

    def craft(self, oracle, xc: torch.Tensor, labels: torch.Tensor, loss_fn) -> torch.Tensor:
        """The universal pattern (1, 1, P) for crafting inputs ``xc`` (N, 1, T) with labels (N,)."""
        p = self.params
        t = xc.shape[-1]
        period = self.pattern_length(t)
        delta = torch.zeros((1, 1, period), device=xc.device, dtype=xc.dtype)
        for _ in range(p.steps):
            total = torch.zeros_like(delta)
            for s in range(0, xc.shape[0], p.craft_batch):
                chunk = xc[s : s + p.craft_batch]
                owners = torch.arange(s, s + chunk.shape[0]) % oracle.n
                shift = 0 if period == t else int(torch.randint(0, period, (1,), generator=oracle.generator,
                                                                device=oracle.generator.device))
                _, grad, _, _ = oracle.loss_and_grad((chunk + self.tile(delta, t, shift)).clamp(-1, 1), loss_fn,
                                                     labels[s : s + chunk.shape[0]], owners=owners)
                total += self.fold(grad, period, shift)
            delta = (delta - p.step_size * total.sign()).clamp(-p.epsilon, p.epsilon)
        return delta

    def run(self, oracle, x, y, targeted=False) -> AttackResult:
        p = self.params
        x = x.to(oracle.device)
        y = y.to(oracle.device).long()
        check_labels(oracle, y, targeted)
        loss_fn = objective(oracle, p.loss, targeted, p.kappa)
        craft_loss = loss_fn
        if p.loss == "margin" or oracle.task.has_threshold:
            def craft_loss(scores, labels):
                return loss_fn(scores, labels).clamp(min=-p.saturation)
        xc = self.crafting_set(x.shape[-1]).to(x.device)
        owners = torch.arange(xc.shape[0]) % oracle.n
        scores_c, dec_c = oracle.scores_and_decisions(xc, owners=owners)
        fingerprint = hashlib.sha256(scores_c.double().cpu().numpy().round(5).tobytes()).hexdigest()[:16]
        base = (json.dumps(p.model_dump(), sort_keys=True), x.shape[-1], oracle.task.value, fingerprint)
        goals = sorted(set(y.tolist())) if targeted else [None]
        deltas = {}
        for g in goals:
            key = base + (g,)
            if key not in _CACHE:
                labels = dec_c if g is None else torch.full_like(dec_c, g)
                _CACHE[key] = self.craft(oracle, xc, labels, craft_loss).detach()
            deltas[g] = _CACHE[key]
        if targeted:
            pick = torch.tensor([goals.index(v) for v in y.tolist()], device=x.device)
            delta = torch.cat([self.tile(deltas[g], x.shape[-1]) for g in goals])[pick]
        else:
            delta = self.tile(deltas[None], x.shape[-1])
        adv = (x + delta).clamp(-1.0, 1.0)
        with torch.no_grad():
            _, dec = oracle.scores_and_decisions(adv)
        return AttackResult(adv, success(dec, y, targeted).cpu(), oracle.queries.clone(), dec.cpu(),
                            {"universal": True})
