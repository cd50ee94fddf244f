"""Adversarial training (AdvT, Madry et al.): the defense a study names ``advt`` or ``advt+<defense chain>``.

:class:`AdvT` is a :class:`~sec4sr_core.sdk.ModelVariantDefense`: at test time the identity on (B, 1, T) waves, it
tells the core that the row runs on a differently *trained backbone* — the checkpoint tagged
:meth:`AdvT.variant_tag`, which the core trains when missing from :meth:`AdvT.training_options` (the attack crafting
the training examples, the rest of the chain as the in-loop defense, ratio, EOT, epochs). ``advt`` alone is vanilla
AdvT; ``advt+feco-o-k`` is AdvT+FeCo: the backbone is trained with FeCo in its forward path *and* the adversarial
examples are crafted through FeCo (BPDA for non-differentiable defenses, EOT for randomized ones). The crafting —
the registry's attack through an oracle on the model being trained, in eval mode — is the core's
(``sec4sr_core.study.training.adversarial_hook``), the same as ``sec4sr train --adversarial`` uses.

Note: the checkpoint tag encodes the attack and the in-loop chain only; ``ratio``, ``eot`` and ``epochs`` other
than the defaults train into the same tag (keep them at their defaults within one model store, or use another
``$SEC4SR_HOME``).

FGSM adversarial training is ``attack="pgd:steps=1,step_size=0.002"`` (one signed step of size ε) or ``fgsm`` when
an FGSM attack is registered.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from sec4sr_core.sdk import ModelVariantDefense, Params, TrainingOptions, format_spec, parse_spec, variant_tag

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


class AdvT(ModelVariantDefense):
    """Adversarial training (FGSM/PGD AdvT): selects an adversarially trained backbone; identity at test time."""

    name = "advt"
    Params = AdvTParams

    def variant_tag(self, rest: str = "") -> str:
        """``advt-<attack slug>[+<rest slug>]`` — the tag of ``sec4sr train --adversarial A --defense REST``.

        ``rest``: the rest of the defense chain (the in-loop defenses, e.g. ``feco-o-k``), a spec or its slug."""
        return variant_tag(self.params.attack, rest or None)

    def training_options(self, rest: str = "") -> TrainingOptions:
        """Adversarial training with ``params.attack``, ``rest`` (a chain spec) in the loop, ratio, EOT, epochs."""
        p = self.params
        return TrainingOptions(adversarial=p.attack, defense=rest or None, ratio=p.ratio, eot=p.eot, epochs=p.epochs)
