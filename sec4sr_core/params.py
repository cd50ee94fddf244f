"""Component parameters and the ``name:key=value,...`` spec syntax.

Every component declares a pydantic model ``Params``; validation, defaults and the schema that ``sec4sr list``
shows all come from it. A *spec* names a component (or a preset) with parameters::

    pgd                       -> ("pgd", {})
    pgd:epsilon=0.004,steps=20 -> ("pgd", {"epsilon": "0.004", "steps": "20"})
    qt:q=512+at:snr=30        -> a chain of two defenses (``parse_chain``)
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ParameterError


class Params(BaseModel):
    """Base class of every component's parameters: unknown keys are refused, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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
            params[key.strip()] = _coerce(value)
    return name, params


def parse_chain(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """Split a chain ``a:k=v+b+c:k=v`` into its parts (each as :func:`parse_spec`)."""
    return [parse_spec(part) for part in spec.split("+")]


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
