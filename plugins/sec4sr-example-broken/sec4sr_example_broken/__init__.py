"""A deliberately broken sec4sr plugin. Do not install it for real use.

Each component breaks rules of the sec4sr contract (``sec4sr_core.testing``) in a way plugin authors plausibly
do, so the kit's messages can be seen and tested. The rule each one breaks is in its docstring.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field

from sec4sr_core.sdk import Attack, AttackResult, Defense, Knowledge, Params, SpeakerModel, hookimpl


class NoisyParams(Params):
    snr: float = Field(30.0)  # no description, no bound


class UnseededNoise(Defense):
    """Adds noise from the global RNG. Breaks: params.described, defense.deterministic (declares randomized =
    False), defense.differentiable (detaches its output although it declares differentiable = True)."""

    name = "broken-noise"
    Params = NoisyParams
    randomized = False
    differentiable = True

    def forward(self, x):
        power = x.pow(2).mean(dim=(1, 2), keepdim=True)
        noise = torch.randn_like(x) * (power / 10 ** (self.params.snr / 10)).sqrt()
        return (x + noise).clamp(-1, 1).detach()


class LooseParams(BaseModel):  # a plain pydantic model: unknown keys are silently ignored
    keep: float = Field(0.9, gt=0, le=1, description="fraction of samples kept")


class Truncate(Defense):
    """Drops the tail of the waveform and returns float64. Breaks: params.model, defense.shape."""

    name = "broken-shape"
    Params = LooseParams  # type: ignore[assignment]

    def forward(self, x):
        keep = int(x.shape[-1] * self.params.keep)
        return x[..., :keep].double()


class OverBudgetParams(Params):
    epsilon: float = Field(0.002, gt=0, le=1, description="L∞ bound in [-1, 1] amplitude units")


class OverBudget(Attack):
    """Adds 2ε sign noise and forgets to report queries. Breaks: attack.budget, attack.queries."""

    name = "broken-budget"
    Params = OverBudgetParams
    knowledge = Knowledge.DECISIONS
    norm = "linf"

    def run(self, oracle, x, y, targeted=False):
        noise = torch.randint(0, 2, x.shape, generator=oracle.generator, device=x.device) * 2 - 1
        adv = (x + 2 * self.params.epsilon * noise).clamp(-1, 1)
        decisions = oracle.decisions(adv)
        ok = decisions == y if targeted else decisions != y
        return AttackResult(adv, ok.cpu(), torch.zeros(x.shape[0], dtype=torch.int64), decisions.cpu())


class Peek(Attack):
    """Declares decision-based but reads scores. Breaks: attack.knowledge."""

    name = "broken-peek"
    knowledge = Knowledge.DECISIONS

    def run(self, oracle, x, y, targeted=False):
        scores = oracle.scores(x)
        decisions = scores.argmax(dim=1)
        return AttackResult(x.clone(), decisions != y, oracle.queries.clone(), decisions)


class BatchNorm(SpeakerModel):
    """Normalises features across the batch and skips a step when continuing from ``raw``. Breaks: model.chain,
    model.batch."""

    name = "broken-model"
    levels = ("wave", "raw", "final")

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self.proj = torch.nn.Linear(8, 8)

    def load_weights(self, home):
        pass

    def to_level(self, x, src, dst):
        self.check_level(src), self.check_level(dst)
        if src == dst:
            return x
        if src == "wave":
            frames = x.reshape(x.shape[0], -1, 8)  # 8-sample "frames"
            raw = frames - frames.mean(dim=0, keepdim=True)  # statistics of the whole batch
            return raw if dst == "raw" else raw * 2.0
        return x  # raw -> final forgets the * 2.0

    def head(self, final):
        return self.proj(final.abs()).mean(dim=1)


@hookimpl
def register_defenses(register):
    register(UnseededNoise)
    register(Truncate)


@hookimpl
def register_attacks(register):
    register(OverBudget)
    register(Peek)


@hookimpl
def register_models(register):
    register(BatchNorm)
