"""Adversarial training (AdvT, Madry et al.): the defense a study names ``advt`` or ``advt+<defense chain>``.

Two pieces:

* :class:`AdvT` — the study-facing marker. It is a ``wave``-level :class:`~sec4sr_core.interfaces.Defense` whose
  forward is the identity; its class attribute ``model_variant = True`` tells the runner that the row needs a
  differently *trained backbone*: the checkpoint tagged :meth:`AdvT.variant_tag` (trained by
  ``sec4sr_core.training.train_variant`` with ``adversarial=params.attack`` and the rest of the chain as the
  in-loop defense when missing). ``advt`` alone is vanilla AdvT; ``advt+feco-o-k`` is AdvT+FeCo: the backbone is
  trained with FeCo in its forward path *and* the adversarial examples are crafted through FeCo.
* :func:`make_batch_hook` — what the training loop calls on every batch. It replaces ⌈ratio·B⌉ seeded-random
  examples of the batch by adversarial examples crafted with the registry's attack (any white-box or black-box
  attack, through the matching oracle) against the model behind the in-loop defense chain, with BPDA for
  non-differentiable defenses and ``eot`` draws for randomized ones. The model is switched to **eval mode while
  crafting** (the predecessor crafted in train mode, so attack queries polluted the batch-norm statistics) and back
  to its previous mode afterwards; no parameter gradient is accumulated by crafting.

FGSM adversarial training is ``attack="pgd:steps=1,step_size=0.002"`` (one signed step of size ε) or ``fgsm`` when
an FGSM attack is registered.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Sequence

import torch
from pydantic import Field, field_validator

from sec4sr_core.errors import ParameterError
from sec4sr_core.interfaces import Defense, Task
from sec4sr_core.params import Params, format_spec, parse_spec
from sec4sr_core.system import DefendedSystem, SpeakerSystem

DEFAULT_ATTACK = "pgd:epsilon=0.002,steps=10"


class AdvTParams(Params):
    attack: str = Field(DEFAULT_ATTACK, description="attack spec crafting the training examples (ε in [-1, 1] "
                                                    "amplitude units); inside a chain spec separate its "
                                                    "parameters with ';', e.g. advt:attack=pgd:epsilon=0.004;steps=20")
    ratio: float = Field(0.5, gt=0.0, le=1.0, description="fraction of each training batch replaced by "
                                                         "adversarial examples")
    epochs: int | None = Field(None, ge=1, description="training epochs (default: the backbone's own)")
    eot: int = Field(1, ge=1, le=1000, description="EOT draws when crafting through randomized in-loop defenses")

    @field_validator("attack")
    @classmethod
    def _spec(cls, v: str) -> str:
        if "+" in v:
            raise ValueError("the attack spec must be a single attack (write the defense chain after advt+)")
        name, params = parse_spec(v.replace(";", ","))
        return format_spec(name, params)


class AdvT(Defense):
    """Adversarial training (FGSM/PGD AdvT): selects an adversarially trained backbone; identity at test time."""

    name = "advt"
    Params = AdvTParams
    differentiable = True
    randomized = False
    acts_on = ("wave",)
    #: the row needs a backbone variant trained differently (the runner loads ``variant_tag(...)``)
    model_variant: ClassVar[bool] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def variant_tag(self, rest: str = "") -> str:
        """The checkpoint tag of the backbone this row needs: ``advt-<attack>[@ratio=..,epochs=..,eot=..][+<rest>]``.

        ``rest`` is the rest of the defense chain (the in-loop defenses, e.g. ``feco-o-k``), as given in the study.
        """
        p = self.params
        extra = {k: v for k, v in (("ratio", p.ratio), ("epochs", p.epochs), ("eot", p.eot))
                 if v != AdvTParams.model_fields[k].default}
        tag = "advt-" + p.attack
        if extra:
            tag += "@" + ",".join(f"{k}={v}" for k, v in extra.items())
        return tag + (f"+{rest}" if rest else "")

    def training_options(self, rest: str = "") -> dict[str, Any]:
        """Keyword arguments for ``train_variant``: adversarial attack, in-loop defense chain, ratio, eot, epochs."""
        p = self.params
        out: dict[str, Any] = {"adversarial": p.attack, "defense": rest or None, "ratio": p.ratio, "eot": p.eot}
        if p.epochs is not None:
            out["epochs"] = p.epochs
        return out


def split_chain(chain: str) -> tuple[str | None, str]:
    """Split a defense chain spec at ``advt``: ``"advt:ratio=1+feco-o-k"`` -> (``"advt:ratio=1"``, ``"feco-o-k"``).

    Returns (None, chain) when the chain has no ``advt`` part.
    """
    parts = [p.strip() for p in chain.split("+") if p.strip()]
    adv = [p for p in parts if parse_spec(p)[0] == AdvT.name]
    if len(adv) > 1:
        raise ParameterError(f"defense chain {chain!r} names advt more than once")
    rest = "+".join(p for p in parts if parse_spec(p)[0] != AdvT.name)
    return (adv[0] if adv else None), rest


# ----------------------------------------------------------------------------------------------------------------
# crafting inside the training loop
# ----------------------------------------------------------------------------------------------------------------


class TrainingSystem(SpeakerSystem):
    """A backbone under training seen as a closed-set classifier over its training classes (CSI-NE).

    Scores are training logits: ``model.train_logits(final)`` for trainable embedding backbones (their training
    classifier), otherwise the model's own logits. Feature-level defenses act at the model's levels as usual.
    """

    def __init__(self, model: torch.nn.Module, n_classes: int | None = None) -> None:
        torch.nn.Module.__init__(self)
        self.model = model
        self.task = Task.CSI_NE
        ids = list(getattr(model, "class_ids", []) or [])
        if not ids:
            if n_classes is None:
                raise ParameterError("adversarial training needs the model's training classes (class_ids)")
            ids = [str(i) for i in range(n_classes)]
        self.speakers = ids
        self.enrolled = None
        self.threshold = None

    def scores_from(self, x: torch.Tensor, level: str = "wave", claims: torch.Tensor | None = None) -> torch.Tensor:
        train_logits = getattr(self.model, "train_logits", None)
        if callable(train_logits):
            return train_logits(self.model.to_level(x, level, "final"))
        return self.model.embed(x, level)


class AdversarialBatchHook:
    """Callable ``hook(model, x, y) -> (x', y)`` replacing ⌈ratio·B⌉ examples by adversarial ones.

    ``x`` (B, 1, T) waveforms in [-1, 1], ``y`` (B,) int64 training-class labels. ``last_stats`` holds the attack
    success rate, the number of replaced examples and the queries of the last call.
    """

    def __init__(self, attack_spec: str, defense_chain: str | Sequence[Defense] = "", ratio: float = 0.5,
                 eot: int = 1, seed: int = 0, order: str = "sequential") -> None:
        from sec4sr_core.plugins import get_registry
        from sec4sr_core.runner import build_defenses

        if not 0.0 < ratio <= 1.0:
            raise ParameterError(f"adversarial ratio must be in (0, 1], got {ratio}")
        if eot < 1:
            raise ParameterError(f"eot must be >= 1, got {eot}")
        self.attack = get_registry().build("attack", attack_spec)
        if isinstance(defense_chain, str):
            adv, rest = split_chain(defense_chain) if defense_chain else (None, "")
            self.defenses = build_defenses(rest) if rest else []
        else:
            self.defenses = list(defense_chain)
        self.ratio, self.eot, self.order = ratio, int(eot), order
        self.seed = int(seed)
        self.calls = 0
        self.generator = torch.Generator().manual_seed(self.seed)
        self.last_stats: dict[str, float] = {}

    def select(self, b: int) -> torch.Tensor:
        """Indices (m,) of the examples to replace: ⌈ratio·B⌉ distinct, seeded, sorted."""
        m = min(b, max(1, math.ceil(self.ratio * b)))
        return torch.randperm(b, generator=self.generator)[:m].sort().values

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 n_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        from sec4sr_core.oracle import make_oracle

        idx = self.select(x.shape[0]).to(x.device)
        system = DefendedSystem(TrainingSystem(model, n_classes), self.defenses, self.order)
        was_training = model.training
        model.eval()
        try:
            oracle = make_oracle(system, self.attack.knowledge, n=len(idx), eot=self.eot,
                                 seed=self.seed * 100003 + self.calls)
            result = self.attack.run(oracle, x[idx].detach(), y[idx].to(x.device), targeted=False)
        finally:
            model.train(was_training)
        self.calls += 1
        out = x.detach().clone()
        out[idx] = result.adv.to(out.device, out.dtype)
        self.last_stats = {
            "adv_examples": float(len(idx)),
            "adv_success": float(result.success.float().mean()),
            "adv_queries": float(result.queries.float().mean()),
        }
        return out, y


def make_batch_hook(attack_spec: str = DEFAULT_ATTACK, defense_chain: str | Sequence[Defense] = "",
                    ratio: float = 0.5, eot: int = 1, seed: int = 0,
                    order: str = "sequential") -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The per-batch hook of adversarial training (see :class:`AdversarialBatchHook`).

    ``defense_chain``: the in-loop defenses the examples are crafted through (a chain spec; an ``advt`` part in it
    is ignored) — the same chain the training forward applies for AdvT+X.
    """
    return AdversarialBatchHook(attack_spec, defense_chain, ratio, eot, seed, order)
