"""A decision-based random search in an L∞ ball, packaged the way an outside author would package a sec4sr plugin.

For each utterance the attack draws random sign vectors ``s ∈ {-1, +1}^T`` and probes ``clip(x + ε·s, -1, 1)``,
keeping the first probe whose decision meets the goal (untargeted: the decision differs from the true label;
targeted: it equals the target). It sees decisions only: it declares ``Knowledge.DECISIONS`` and sec4sr hands it
an oracle that refuses scores and gradients and counts every probe. Probes of all utterances still searching go
to the oracle in one batch per round; the random signs come from the oracle's seeded generator.

The attack writes only its algorithm (``perturb``): sec4sr's ``Attack.run`` checks the inputs, builds the
``goal``, evaluates the final decisions, judges success and reads the queries from the oracle. ``epsilon`` comes
from the sdk's ``LinfBall`` mixin.
"""

from __future__ import annotations

import torch
from pydantic import Field

from sec4sr_core.sdk import Attack, Knowledge, LinfBall, Preset, hookimpl


class RandomSignParams(LinfBall):
    trials: int = Field(20, ge=1, le=100_000, description="random sign vectors tried per utterance (queries)")
    batch: int = Field(5, ge=1, le=1024, description="trials per utterance sent to the oracle in one round")


class RandomSign(Attack):
    """Random ±ε sign search in an L∞ ball (decision-based); first success kept per utterance."""

    name = "random-sign"
    Params = RandomSignParams
    knowledge = Knowledge.DECISIONS
    norm = "linf"  # sec4sr (and the contract kit) check |adv - x| <= epsilon

    def perturb(self, oracle, x, goal):
        """``x`` (B, 1, T) in [-1, 1] on the oracle's device; ``goal.met(decisions, idx)`` says which decisions of
        the utterances ``idx`` meet the goal. Returns the adversarial batch (B, 1, T)."""
        p = self.params
        t = x.shape[-1]
        best = x.clone()
        found = goal.met(oracle.decisions(x))  # already misclassified: nothing to do
        tried = 0
        while tried < p.trials and not bool(found.all()):
            k = min(p.batch, p.trials - tried)
            todo = (~found).nonzero().squeeze(1)  # utterances still searching, (m,)
            m = todo.numel()
            signs = torch.randint(0, 2, (k, m, 1, t), generator=oracle.generator, device=x.device) * 2 - 1
            probes = (x[todo].unsqueeze(0) + p.epsilon * signs.to(x.dtype)).clamp(-1.0, 1.0)
            owners = todo.repeat(k)  # probe j of round row i belongs to utterance todo[j]
            decisions = oracle.decisions(probes.reshape(k * m, 1, t), owners=owners.cpu())
            hit = goal.met(decisions, owners).view(k, m)
            won = hit.any(dim=0)
            first = hit.to(torch.int8).argmax(dim=0)  # index of the first successful trial
            cols = won.nonzero().squeeze(1)
            best[todo[cols]] = probes[first[cols], cols]
            found[todo[cols]] = True
            tried += k
        return best  # sec4sr evaluates the final decisions (one query per utterance) and judges success


@hookimpl
def register_attacks(register):
    register(RandomSign)


@hookimpl
def register_presets(register):
    register(Preset("random-sign-100", "attack", "random-sign", {"trials": 100},
                    "random-sign with 100 trials per utterance, ε = 0.002"))
