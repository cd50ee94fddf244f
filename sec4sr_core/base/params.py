"""Component parameters and the ``name:key=value,...`` spec syntax.

Every component declares a pydantic model ``Params``; validation, defaults and the schema that ``sec4sr list``
shows all come from it. A *spec* names a component (or a preset) with parameters::

    pgd                       -> ("pgd", {})
    pgd:epsilon=0.004,steps=20 -> ("pgd", {"epsilon": "0.004", "steps": "20"})
    qt:q=512+at:snr=30        -> a chain of two defenses (``parse_chain``)

Parsing is strict, so a typo never runs a different experiment silently: a key given twice, an empty chain part
(``+qt``, ``qt++at``) and a boolean given to a numeric parameter (``steps=true``) are refused, and so are NaN and
infinite floats (``epsilon=nan``) and integers with a fractional part (``steps=2.5``).
"""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from sec4sr_core.base.errors import ParameterError


class Params(BaseModel):
    """Base class of every component's parameters: unknown keys are refused, values are validated strictly
    (floats must be finite; a boolean is accepted only by a parameter that is declared boolean)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads True as 1 and 1.0; ``pgd:steps=true`` would then run one step
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            annotation = cls.model_fields[info.field_name].annotation
            if not accepts_bool(annotation):
                raise PydanticCustomError("bool_not_accepted", "expects {expected}, not a boolean",
                                          {"expected": _type_name(annotation)})
        return value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def accepts_bool(annotation: Any) -> bool:
    """Whether a field annotation admits a boolean value (``bool``, ``Any``, a union or literal holding one)."""
    if annotation in (bool, Any, object) or annotation is None:
        return annotation is not None
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return accepts_bool(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(accepts_bool(a) for a in typing.get_args(annotation))
    return False


def _coerce(value: str) -> Any:
    """Turn a command-line value into JSON-ish Python (``"10"`` -> 10, ``"true"`` -> True); strings stay strings."""
    text = value.strip()
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``name:key=value,key=value`` into the name and a dict of coerced values."""
    spec = spec.strip()
    if not spec:
        raise ParameterError("empty component spec")
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ParameterError(f"spec {spec!r} has no component name")
    params: dict[str, Any] = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ParameterError(f"spec {spec!r}: expected key=value, got {item!r}")
            key = key.strip()
            if key in params:
                raise ParameterError(f"spec {spec!r}: parameter {key!r} is given twice; give it once")
            params[key] = _coerce(value)
    return name, params


#: a ``+`` that joins chain parts: not the sign of a float's exponent (``1e+3``)
_CHAIN_SEP = re.compile(r"(?<![0-9.][eE])\+|(?<=[0-9.][eE])\+(?![0-9])")


def parse_chain(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """Split a chain ``a:k=v+b+c:k=v`` into its parts (each as :func:`parse_spec`); an empty part is refused."""
    parts = _CHAIN_SEP.split(spec)
    if len(parts) == 1:
        return [parse_spec(spec)]
    for i, part in enumerate(parts):
        if not part.strip():
            where = "first" if i == 0 else "last" if i == len(parts) - 1 else f"#{i + 1}"
            raise ParameterError(f"chain {spec!r}: its {where} part is empty; join components with a single '+', "
                                 f"e.g. qt:q=512+at:snr=30")
    return [parse_spec(part) for part in parts]


def format_spec(name: str, params: dict[str, Any]) -> str:
    """Inverse of :func:`parse_spec` for the keys given (used for readable labels and paths)."""
    if not params:
        return name
    return name + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def validate(params_cls: type[Params], component: str, values: dict[str, Any]) -> Params:
    """Validate ``values`` against ``params_cls``; a failure becomes one readable :class:`ParameterError` line."""
    try:
        return params_cls(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err.get("loc", ())) or "(parameters)"
            msg = err.get("msg", "invalid")
            if err.get("type") == "extra_forbidden":
                allowed = ", ".join(params_cls.model_fields) or "none"
                msg = f"unknown parameter (allowed: {allowed})"
            got = err.get("input")
            suffix = f" (got {got!r})" if got is not None and err.get("type") != "extra_forbidden" else ""
            problems.append(f"{field}: {msg}{suffix}")
        raise ParameterError(f"{component}: invalid parameter " + "; ".join(problems)) from None


def schema(params_cls: type[Params]) -> dict[str, Any]:
    """A compact schema: field -> {type, default, description, constraints}."""
    out: dict[str, Any] = {}
    full = params_cls.model_json_schema()
    props = full.get("properties", {})
    for field, info in params_cls.model_fields.items():
        prop = dict(props.get(field, {}))
        prop.pop("title", None)
        entry: dict[str, Any] = {k: v for k, v in prop.items() if k != "default"}
        entry["default"] = None if info.is_required() else _jsonable(info.default)
        entry["required"] = info.is_required()
        if info.description:
            entry["description"] = info.description
        out[field] = entry
    return out


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def slug(text: str) -> str:
    """A readable, filesystem-safe form of a spec: ``qt:q=512+at:snr=30`` -> ``qt_q512+at_snr30`` (idempotent)."""
    import re

    text = text.replace(":", "_").replace("=", "").replace(",", "_").replace("/", "-").replace("|", "~")
    return re.sub(r"[^A-Za-z0-9_.+~-]", "", text) or "x"
