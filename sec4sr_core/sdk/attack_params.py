"""Parameter mixins shared by attacks: the L∞ budget ε, iterations, step size, the confidence κ, the loss choice
and the per-utterance query budget — declared once, with their units, instead of once per attack.

An attack's ``Params`` subclasses the mixins it needs (pydantic merges their fields)::

    class UAPParams(Kappa, StepSize.with_defaults(step_size=0.0002), Steps.with_defaults(steps=40), LinfBall):
        period: int = Field(1600, ge=0, description="...")

Pydantic orders the fields from the *last* base to the first, then the class' own: the bases above list ε,
steps, step size, κ, period (the order ``sec4sr list`` shows), so name the mixins most general last.

:meth:`ParamMixin.with_defaults` changes a mixin's defaults (and, optionally, descriptions) while keeping its
constraints, so an attack tunes ``steps = 40`` without re-declaring the field. Torch-free.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field, create_model

from sec4sr_core.base.params import Params

__all__ = ["Kappa", "LinfBall", "LossChoice", "NormBall", "ParamMixin", "QueryBudget", "StepSize", "Steps"]

_VARIANTS: dict[tuple, type] = {}


class ParamMixin(Params):
    """A group of attack parameters meant to be mixed into an attack's ``Params``."""

    @classmethod
    def with_defaults(cls, descriptions: dict[str, str] | None = None, **defaults: Any) -> type[ParamMixin]:
        """This mixin with other defaults (constraints kept), e.g. ``Steps.with_defaults(steps=100)``;
        ``descriptions`` replaces the help text of named fields. Equal calls return the same class."""
        descriptions = dict(descriptions or {})
        unknown = sorted((set(defaults) | set(descriptions)) - set(cls.model_fields))
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {', '.join(unknown)} "
                            f"(fields: {', '.join(cls.model_fields)})")
        key = (cls, tuple(sorted(defaults.items(), key=lambda kv: kv[0])), tuple(sorted(descriptions.items())))
        if key in _VARIANTS:
            return _VARIANTS[key]
        fields: dict[str, Any] = {}
        for name in set(defaults) | set(descriptions):
            info = copy.copy(cls.model_fields[name])
            if name in defaults:
                info.default = defaults[name]
            if name in descriptions:
                info.description = descriptions[name]
            fields[name] = (info.annotation, info)
        label = ",".join(f"{k}={v!r}" for k, v in sorted(defaults.items()))
        variant = create_model(f"{cls.__name__}[{label}]", __base__=cls, __module__=cls.__module__, **fields)
        variant.__doc__ = cls.__doc__
        _VARIANTS[key] = variant
        return variant


class LinfBall(ParamMixin):
    """The L∞ budget: every sample of ``adv − x`` lies in [−ε, ε] (and ``adv`` in [−1, 1])."""

    epsilon: float = Field(0.002, gt=0, le=1, description="L∞ bound in [-1, 1] amplitude units")


class NormBall(ParamMixin):
    """An L∞ or L2 budget ε, chosen by ``norm``."""

    epsilon: float = Field(0.002, gt=0, description="perturbation bound in [-1, 1] amplitude units: per sample (L∞) "
                                                    "or for the whole waveform (L2)")
    norm: Literal["linf", "l2"] = Field("linf", description="the ball: 'linf' or 'l2'")


class Steps(ParamMixin):
    """Iterations of an attack's main loop."""

    steps: int = Field(10, ge=1, description="iterations (one gradient or gradient estimate each)")


class StepSize(ParamMixin):
    """The step α of each iteration."""

    step_size: float = Field(0.0004, gt=0, description="step α per iteration in [-1, 1] amplitude units "
                                                       "(L∞: per sample; L2: length of the step)")


class Kappa(ParamMixin):
    """The confidence κ of the SEC4SR margin loss (:mod:`sec4sr_core.sdk.losses`)."""

    kappa: float = Field(0.0, ge=0, description="confidence κ of the margin loss (score units)")


class LossChoice(ParamMixin):
    """Which loss the attack minimises (SV/OSI always use the margin loss)."""

    loss: Literal["ce", "margin"] = Field("ce", description="objective; SV/OSI always use the margin loss")


class QueryBudget(ParamMixin):
    """A per-utterance query budget, EOT draws included; :meth:`Attack.affordable` reads it."""

    max_queries: int | None = Field(None, ge=1, description="query budget per utterance, EOT draws included "
                                                            "(None = bounded by the iteration caps only)")
