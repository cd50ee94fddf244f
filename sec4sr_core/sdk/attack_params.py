"""Parameter mixins shared by attacks: the L∞ budget ε, iterations, step size, the confidence κ, the loss choice
and the per-utterance query budget — declared once, with their units, instead of once per attack.

**Budgets in dB SNR.** :class:`LinfBall` and :class:`NormBall` also take ``snr_db``, a budget relative to each
utterance's own loudness (amplitude units depend on loudness: ε = 0.002 is SNR 36 dB on speech at −18 dBFS RMS but
22 dB at −32 dBFS). For utterance i (x_i of T samples):

* L∞: ``ε_i = rms(x_i)·10^(−snr_db/20)``, so ``‖δ‖₂ ≤ √T·ε_i = ‖x_i‖₂·10^(−snr_db/20)``;
* L2: ``radius_i = ‖x_i‖₂·10^(−snr_db/20)``;

either way ``SNR_i = 20·log10(‖x_i‖₂/‖δ_i‖₂) ≥ snr_db``. ``snr_db`` replaces ε: an explicit ε other than the
default together with ``snr_db`` is refused (the field's default, which presets and re-validated parameters
carry, gives way to ``snr_db``). An attack reads its bound with ``self.budget(x)``, never ``params.epsilon``
(None under ``snr_db``). :meth:`Budget.budget` gives the per-utterance bound (B,) for a batch, and
:meth:`Budget.steps_for` the per-utterance step: with a per-utterance budget (``snr_db``) or an L2 ball the step
keeps its ratio to the reference ε = 0.002 (``α_i = step_size·b_i/0.002``: PGD's α = 0.0004 is 0.2·b_i); with a
fixed L∞ ε it is ``step_size`` itself.

**L2 defaults.** ``norm='l2'`` without an explicit radius or ``snr_db`` means ``snr_db = 30``
(:data:`L2_DEFAULT_SNR_DB`):
for 3 s of 16 kHz speech at −32 dBFS RMS (the embedded corpus) that is a radius ≈ 0.17, for −18 dBFS ≈ 0.87 —
whereas the L∞ default ε = 0.002 read as an L2 radius over 48 000 samples is below one 16-bit step per sample.

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
import math
from typing import Any, Literal

from pydantic import Field, create_model, model_validator

from sec4sr_core.base.params import Params

__all__ = ["DEFAULT_EPSILON", "L2_DEFAULT_SNR_DB", "Budget", "Kappa", "LinfBall", "LossChoice", "NormBall",
           "ParamMixin", "QueryBudget", "StepSize", "Steps", "snr_scale"]

#: the default (and reference) L∞ ε in [-1, 1] amplitude units (the SEC4SR study's ε)
DEFAULT_EPSILON = 0.002
#: the L2 budget ``norm='l2'`` takes when neither a radius nor ``snr_db`` is given
L2_DEFAULT_SNR_DB = 30.0

_SNR_HELP = ("budget in dB SNR relative to each utterance (replaces epsilon): L∞ ε_i = rms(x_i)·10^(-snr_db/20), "
             "L2 radius_i = ‖x_i‖₂·10^(-snr_db/20); SNR ≥ snr_db is guaranteed")


def snr_scale(snr_db: float) -> float:
    """The amplitude ratio ``10^(−snr_db/20)`` of a perturbation at ``snr_db`` dB below the signal."""
    return math.pow(10.0, -float(snr_db) / 20.0)

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


class Budget(ParamMixin):
    """What :class:`LinfBall` and :class:`NormBall` share: a fixed ε or a per-utterance ``snr_db`` budget."""

    @property
    def ball(self) -> str:
        """``"linf"`` or ``"l2"``."""
        return getattr(self, "norm", "linf")

    @property
    def relative(self) -> bool:
        """True when the bound depends on the utterance (``snr_db``)."""
        return getattr(self, "snr_db", None) is not None

    def budget(self, x: Any) -> Any:
        """The per-utterance bound (B,) on the device and in the dtype of ``x`` (B, 1, T): ε (L∞) or the radius
        (L2) in [-1, 1] amplitude units."""
        import torch

        flat = x.detach().flatten(1).to(torch.float64)
        if self.relative:
            scale = snr_scale(self.snr_db)
            level = flat.pow(2).mean(dim=1).sqrt() if self.ball == "linf" else flat.norm(dim=1)
            b = level * scale
        else:
            b = torch.full((x.shape[0],), float(self.epsilon), dtype=torch.float64, device=x.device)
        return b.to(x.dtype)

    def steps_for(self, bound: Any, step_size: float | None = None) -> Any:
        """The per-utterance step (B,) for the bounds ``bound`` (B,) from :meth:`budget` (see the module docstring);
        ``step_size`` defaults to the parameters' own."""
        step = float(step_size if step_size is not None else self.step_size)  # type: ignore[attr-defined]
        if self.relative or self.ball == "l2":
            return bound * (step / DEFAULT_EPSILON)
        return bound.new_full(bound.shape, step)

    def describe_budget(self) -> str:
        """The budget in words, e.g. ``L∞ ε = 0.002`` or ``L2 SNR ≥ 30 dB``."""
        ball = "L∞" if self.ball == "linf" else "L2"
        return f"{ball} SNR ≥ {self.snr_db:g} dB" if self.relative else f"{ball} ε = {self.epsilon:g}"

    @model_validator(mode="after")
    def _one_budget(self):
        snr = getattr(self, "snr_db", None)
        eps = getattr(self, "epsilon", None)
        field = type(self).model_fields.get("epsilon")
        default = field.default if field is not None else DEFAULT_EPSILON
        if snr is not None and eps is not None:
            if eps != default:
                raise ValueError(f"give either epsilon ({eps:g}) or snr_db ({snr:g}), not both: snr_db sets a "
                                 "per-utterance epsilon")
            object.__setattr__(self, "epsilon", None)
        elif snr is None and eps is None:
            object.__setattr__(self, "epsilon", default if default is not None else DEFAULT_EPSILON)
        return self


class LinfBall(Budget):
    """The L∞ budget: every sample of ``adv − x`` lies in [−ε, ε] (and ``adv`` in [−1, 1]); ε fixed or per
    utterance from ``snr_db``."""

    epsilon: float | None = Field(DEFAULT_EPSILON, gt=0, le=1,
                                  description="L∞ bound in [-1, 1] amplitude units (None when snr_db is given)")
    snr_db: float | None = Field(None, ge=-20, le=140, description=_SNR_HELP)


class NormBall(Budget):
    """An L∞ or L2 budget, chosen by ``norm``: ε fixed or per utterance from ``snr_db`` (L2 default: 30 dB)."""

    epsilon: float | None = Field(DEFAULT_EPSILON, gt=0,
                                  description="perturbation bound in [-1, 1] amplitude units: per sample (L∞) or for "
                                              "the whole waveform (L2 radius); with norm='l2' and no explicit "
                                              "epsilon the budget is snr_db=30 instead")
    snr_db: float | None = Field(None, ge=-20, le=140, description=_SNR_HELP)
    norm: Literal["linf", "l2"] = Field("linf", description="the ball: 'linf' or 'l2'")

    @model_validator(mode="after")
    def _l2_default(self):
        # ε = 0.002 as an L2 radius over seconds of audio is below one 16-bit step per sample: a meaningless
        # default, so L2 without a radius of its own takes the SNR default
        if self.norm == "l2" and self.snr_db is None and "epsilon" not in self.model_fields_set:
            object.__setattr__(self, "snr_db", L2_DEFAULT_SNR_DB)
            object.__setattr__(self, "epsilon", None)
        return self


class Steps(ParamMixin):
    """Iterations of an attack's main loop."""

    steps: int = Field(10, ge=1, description="iterations (one gradient or gradient estimate each)")


class StepSize(ParamMixin):
    """The step α of each iteration."""

    step_size: float = Field(0.0004, gt=0, description="step α per iteration in [-1, 1] amplitude units per sample "
                                                       "for a fixed L∞ ε; with snr_db or an L2 ball read relative "
                                                       "to ε = 0.002 (α_i = step_size·budget_i/0.002)")


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
