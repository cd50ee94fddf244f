"""Adversarially trained rows: a defense row whose chain holds a model-variant defense (``advt``; any
:class:`~sec4sr_core.sdk.variants.ModelVariantDefense`) runs on the backbone's variant checkpoint — the tag the
defense declares, trained from its :class:`~sec4sr_core.sdk.variants.TrainingOptions` when missing — behind the rest
of the chain (AdvT+X)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


from sec4sr_core.base.errors import NotTrainedError, ParameterError
from sec4sr_core.compose.enroll import Enrollment, load_or_enroll
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk.audio import notice
from sec4sr_core.sdk.interfaces import Dataset, Defense, SpeakerModel
from sec4sr_core.sdk.modelstore import home, params_hash
from sec4sr_core.sdk.variants import TAG_PATTERN, ModelVariantDefense, TrainingOptions, slug


@dataclass
class RowSpec:
    """One defense row of a system: its label, the defenses in front of the model, and the model variant tag."""

    label: str
    defenses: list[Defense]
    variant: str | None = None  #: checkpoint tag of an adversarially trained backbone (None = the natural one)
    variant_defense: ModelVariantDefense | None = None
    rest: str = ""  #: the chain without the model-variant part (the "X" of AdvT+X)
    options: TrainingOptions | None = None  #: how the variant is trained (the defense's ``training_options(rest)``)


def is_variant_class(cls: Any) -> bool:
    """Whether the defense class ``cls`` is a model-variant defense (a :class:`ModelVariantDefense` subclass).

    A class that sets ``model_variant = True`` without subclassing the interface is refused with a
    :class:`ParameterError` naming it (the core reads the variant only through the declared interface)."""
    if isinstance(cls, type) and issubclass(cls, ModelVariantDefense):
        return True
    if getattr(cls, "model_variant", False):
        name = getattr(cls, "name", "") or getattr(cls, "__name__", repr(cls))
        where = f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', '?')}"
        raise ParameterError(
            f"defense {name!r} ({where}) sets model_variant but does not subclass "
            f"sec4sr_core.sdk.ModelVariantDefense; subclass it and implement variant_tag(rest) and "
            f"training_options(rest)")
    return False


def _declared_tag(defense: ModelVariantDefense, rest_slug: str) -> str:
    tag = defense.variant_tag(rest_slug)
    if not isinstance(tag, str) or not TAG_PATTERN.fullmatch(tag):
        raise ParameterError(f"defense {defense.name!r}: variant_tag({rest_slug!r}) returned {tag!r}; a variant tag "
                             f"is a non-empty string of [A-Za-z0-9_.+~-] (it names a checkpoint file)")
    return tag


def _declared_options(defense: ModelVariantDefense, rest: str) -> TrainingOptions:
    options = defense.training_options(rest)
    if not isinstance(options, TrainingOptions):
        raise ParameterError(f"defense {defense.name!r}: training_options({rest!r}) returned "
                             f"{type(options).__name__}, not sec4sr_core.sdk.TrainingOptions")
    return options


def build_row(chain: str) -> RowSpec:
    """Split a defense chain into its input defenses and (at most one) model-variant part such as ``advt``."""
    reg = get_registry()
    texts = [t.strip() for t in chain.split("+")]
    defenses: list[Defense] = []
    variant_def: ModelVariantDefense | None = None
    rest: list[str] = []
    for text in texts:
        d = reg.build("defense", text)
        if is_variant_class(type(d)):
            if variant_def is not None:
                raise ParameterError(f"defense row {chain!r} has two model-variant parts (e.g. two 'advt')")
            variant_def = d  # type: ignore[assignment]
        else:
            defenses.append(d)
            rest.append(text)
    if variant_def is None:
        return RowSpec(chain, defenses)
    rest_text = "+".join(rest)
    tag = _declared_tag(variant_def, slug(rest_text) if rest_text else "")
    return RowSpec(chain, defenses, tag, variant_def, rest_text, _declared_options(variant_def, rest_text))


def train_variant_for(row: RowSpec, model_spec: str, dataset_spec: str, device: str, seed: int) -> None:
    """Train the missing variant checkpoint of ``row`` and store it under ``row.variant`` (the defense's tag):
    ``sec4sr_core.study.training.train_variant(model_spec, dataset_spec, seed=..., device=..., tag=row.variant,
    **defense.training_options(rest).as_kwargs())``."""
    if row.variant_defense is None or not row.variant:
        raise ParameterError(f"defense row {row.label!r} has no model-variant part to train")
    options = row.options or _declared_options(row.variant_defense, row.rest)
    try:  # through sys.modules (not the package attribute), so a replaced or absent module is honoured
        training = importlib.import_module("sec4sr_core.study.training")
    except ImportError:
        training = None
    fn = getattr(training, "train_variant", None)
    if fn is None:
        raise NotTrainedError(
            f"defense row {row.label!r} needs the adversarially trained variant {row.variant!r} of {model_spec!r}, "
            f"which is not in the model store, and this sec4sr has no sec4sr_core.study.training.train_variant to train it"
        )
    notice(f"training the {row.variant!r} variant of {model_spec!r} for defense row {row.label!r} "
           f"(stored in the model store; later studies reuse it)")
    fn(model_spec, dataset_spec, seed=seed, device=device, tag=row.variant, **options.as_kwargs())


def variant_enrollment(model: SpeakerModel, dataset: Dataset, length_s: float, tag: str) -> Enrollment:
    """The enrollment of a variant backbone, cached under its own name (never the natural model's)."""
    path = home() / "systems" / f"{model.name}-{params_hash(model.params)}-{tag}-{dataset.name}-{dataset.fingerprint()}.pt"
    return load_or_enroll(model, dataset, length_s, path=path)
