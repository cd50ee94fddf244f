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
  non-differentiable defenses and ``eot`` draws for randomized ones. The model is in **eval mode while crafting**
  (the predecessor crafted in train mode, so attack queries polluted the batch-norm statistics) and back in its
  previous mode afterwards. The crafting is :func:`sec4sr_core.training.adversarial_hook`, which
  ``sec4sr train --adversarial`` uses too.

Note: the checkpoint tag encodes the attack and the in-loop chain only; ``ratio``, ``eot`` and ``epochs`` other
than the defaults train into the same tag (keep them at their defaults within one model store, or use another
``$SEC4SR_HOME``).

FGSM adversarial training is ``attack="pgd:steps=1,step_size=0.002"`` (one signed step of size ε) or ``fgsm`` when
an FGSM attack is registered.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import torch
from pydantic import Field, field_validator

from sec4sr_core.errors import ParameterError
from sec4sr_core.interfaces import Defense
from sec4sr_core.params import Params, format_spec, parse_spec

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
        """The checkpoint tag of the backbone this row needs — the tag ``train_variant`` stores it under:
        ``advt-<attack slug>[+<rest slug>]`` (:func:`sec4sr_core.training.variant_tag`).

        ``rest`` is the rest of the defense chain (the in-loop defenses, e.g. ``feco-o-k``), a spec or its slug.
        """
        from sec4sr_core.training import variant_tag

        return variant_tag(self.params.attack, rest or None)

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


def make_batch_hook(attack_spec: str = DEFAULT_ATTACK, defense_chain: str | Sequence[Defense] = "",
                    ratio: float = 0.5, eot: int = 1, seed: int = 0,
                    order: str = "sequential") -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The per-batch hook of adversarial training: ``hook(model, x, y) -> (x', y)``.

    ``x`` (B, 1, T) waves in [-1, 1], ``y`` (B,) training-class labels. ⌈ratio·B⌉ seeded-random examples are
    replaced by untargeted adversarial examples of ``attack_spec`` crafted through an oracle on the model's
    CSI-NE view behind ``defense_chain`` (a chain spec or built defenses; an ``advt`` part is ignored): BPDA for
    non-differentiable defenses, ``eot`` draws for randomized ones. The crafting itself is
    :func:`sec4sr_core.training.adversarial_hook` (one implementation for ``sec4sr train --adversarial`` and
    studies); this wrapper adds the guarantee that the model is in eval mode while crafting and is returned to its
    previous mode afterwards, whoever calls the hook.
    """
    from sec4sr_core.runner import build_defenses
    from sec4sr_core.training import adversarial_hook

    if isinstance(defense_chain, str):
        _, rest = split_chain(defense_chain) if defense_chain.strip() else (None, "")
        defenses: list[Defense] = build_defenses(rest) if rest else []
    else:
        defenses = [d for d in defense_chain if not isinstance(d, AdvT)]
    if eot < 1:
        raise ParameterError(f"eot must be >= 1, got {eot}")
    craft = adversarial_hook(attack_spec, defenses, ratio, eot, seed, order)

    def hook(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        was_training = model.training
        model.eval()
        try:
            return craft(model, x, y)
        finally:
            model.train(was_training)

    return hook
