"""Model-variant defenses: the declared interface of defenses that select a *differently trained backbone*.

Adversarial training (AdvT) is not an input transformation: a study row ``advt+feco-o-k`` runs on the backbone's
checkpoint trained adversarially (with FeCo in the loop), behind FeCo. A plugin declares such a defense by
subclassing :class:`ModelVariantDefense` and saying two things about the chain's *rest* (the other defenses of the
row, the ``X`` of AdvT+X):

* :meth:`~ModelVariantDefense.variant_tag` — the model-store tag of the backbone the row needs;
* :meth:`~ModelVariantDefense.training_options` — how the core trains that backbone when the tag is missing
  (:class:`TrainingOptions`: the attack crafting training examples, the in-loop defense chain, ratio, EOT, epochs).

The core (``sec4sr_core.study``) trains the variant with its own loop — it builds the in-loop defenses, asks the
registry for the attack by name and crafts each batch's adversarial share through an oracle — and stores the
checkpoint under exactly the tag the defense declared, so a study finds it again by that tag. A defense class that
sets ``model_variant = True`` without subclassing :class:`ModelVariantDefense` is refused with a
:class:`~sec4sr_core.base.errors.ParameterError` naming it.

:func:`variant_tag` is the tag format of the core's trainer (``sec4sr train --adversarial/--defense``):
``advt-<attack slug>[+<defense slug>]``, ``natural+<defense slug>``, or ``""`` for the natural backbone.
"""

from __future__ import annotations

import re
from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator

from sec4sr_core.base.params import Params, slug, validate
from sec4sr_core.sdk.interfaces import Defense

#: characters a variant tag may hold (it becomes part of a checkpoint file name)
TAG_PATTERN = re.compile(r"[A-Za-z0-9_.+~-]+")


def variant_tag(adversarial: str | None = None, defense: str | None = None) -> str:
    """The model-store tag of a training variant.

    ``adversarial``: the attack spec crafting training examples (None: natural training); ``defense``: the in-loop
    defense chain spec or its slug (None: none). ``("pgd:epsilon=0.002,steps=2", "qt:q=512")`` ->
    ``advt-pgd_epsilon0.002_steps2+qt_q512``; ``(None, "qt:q=512")`` -> ``natural+qt_q512``; ``()`` -> ``""``.
    """
    if adversarial:
        return f"advt-{slug(adversarial)}" + (f"+{slug(defense)}" if defense else "")
    if defense:
        return f"natural+{slug(defense)}"
    return ""


class TrainingOptions(Params):
    """How the core trains a backbone variant (the keyword arguments of ``sec4sr_core.study.training.train_variant``).

    The checkpoint tag encodes what the defense's ``variant_tag`` puts in it; options it leaves out (for ``advt``:
    ratio, EOT, epochs) train into the same tag.
    """

    adversarial: str | None = Field(None, description="attack spec crafting the adversarial share of each batch "
                                                       "(ε in [-1, 1] amplitude units); None: natural training")
    defense: str | None = Field(None, description="defense chain in the training forward path, through which the "
                                                  "training examples are also crafted (BPDA/EOT as needed)")
    ratio: float = Field(0.5, gt=0.0, le=1.0, description="fraction of each batch replaced by adversarial examples")
    eot: int = Field(1, ge=1, description="EOT draws when crafting through randomized in-loop defenses")
    epochs: int | None = Field(None, ge=1, description="training epochs (None: the backbone's own default)")

    @field_validator("adversarial", "defense")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v.strip() or None if isinstance(v, str) else v

    @classmethod
    def checked(cls, owner: str = "training options", **values: Any) -> TrainingOptions:
        """Validated options; a bad value becomes one :class:`ParameterError` line naming ``owner`` and the field."""
        return validate(cls, owner, values)  # type: ignore[return-value]

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``train_variant`` (``epochs`` only when set, so the backbone's default applies)."""
        out: dict[str, Any] = {"adversarial": self.adversarial, "defense": self.defense, "ratio": self.ratio,
                               "eot": self.eot}
        if self.epochs is not None:
            out["epochs"] = self.epochs
        return out


class ModelVariantDefense(Defense, metaclass=ABCMeta):
    """A defense realised by a differently trained backbone (adversarial training and the like).

    It stands in a defense chain like any defense (``advt+feco-o-k``), at most once per chain; the core splits it
    off, runs the row on the checkpoint tagged :meth:`variant_tag` behind the rest of the chain, and trains that
    checkpoint with :meth:`training_options` when it is missing. At test time it is the identity on (B, 1, T) waves.
    """

    #: the marker the core reads; declared by this class only (setting it elsewhere is refused)
    model_variant: ClassVar[bool] = True
    differentiable: ClassVar[bool] = True
    randomized: ClassVar[bool] = False
    acts_on: ClassVar[tuple[str, ...]] = ("wave",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @abstractmethod
    def variant_tag(self, rest: str = "") -> str:
        """The model-store tag of the backbone this row needs (non-empty, characters ``[A-Za-z0-9_.+~-]``).

        ``rest`` is the slug of the rest of the chain (:func:`slug`, e.g. ``feco-o-k`` or ``qt_q512``; ``""`` when
        the row is the variant alone). Different training must give different tags.
        """

    @abstractmethod
    def training_options(self, rest: str = "") -> TrainingOptions:
        """How to train the backbone :meth:`variant_tag` names; ``rest`` is the rest of the chain as a spec
        (``qt:q=512``; ``""`` for none), normally the in-loop ``defense`` of the options."""
