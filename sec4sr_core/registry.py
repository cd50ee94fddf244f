"""The component registry: every attack, defense, model, metric, dataset and preset, keyed by name.

Built from the plugin manager's registration hooks. Each entry records the distribution that registered it.
Two registrations of one name in one kind are an error naming both distributions. Entries registered as a
``"module:attr"`` path are imported only when used (listing needs no torch-heavy import of them... until their
parameter schema is asked for).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import PluginError, UnknownComponentError
from .params import Params, parse_spec, validate

KINDS = ("attack", "defense", "model", "metric", "dataset", "preset")
HOOKS = {
    "attack": "register_attacks",
    "defense": "register_defenses",
    "model": "register_models",
    "metric": "register_metrics",
    "dataset": "register_datasets",
    "preset": "register_presets",
}


@dataclass(frozen=True)
class Preset:
    """A named configuration of a component, e.g. ``pgd-10`` = ``pgd`` with ``steps=10``."""

    name: str
    kind: str  #: kind of the component it configures ("attack", "defense", ...)
    component: str
    params: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


@dataclass
class Entry:
    name: str
    kind: str
    distribution: str
    target: Any  #: a class, a Preset, or a "module:attr" path
    summary_hint: str | None = None

    def load(self) -> Any:
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            try:
                obj = importlib.import_module(module)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as exc:  # noqa: BLE001 - reported to the user
                raise PluginError(
                    f"{self.kind} {self.name!r} from {self.distribution} failed to load ({self.target}): "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            self.target = obj
        return self.target

    @property
    def summary(self) -> str:
        if self.summary_hint:
            return self.summary_hint
        obj = self.load()
        if isinstance(obj, Preset):
            return obj.summary or f"{obj.component} with {obj.params}"
        return obj.describe() if hasattr(obj, "describe") else (obj.__doc__ or "").strip().split("\n")[0]

    def params_schema(self) -> dict[str, Any]:
        from .params import schema

        obj = self.load()
        if isinstance(obj, Preset):
            return dict(obj.params)
        return schema(getattr(obj, "Params", Params))

    def as_dict(self) -> dict[str, Any]:
        obj = self.load()
        d = {
            "name": self.name,
            "kind": self.kind,
            "distribution": self.distribution,
            "summary": self.summary,
            "params": self.params_schema(),
        }
        if isinstance(obj, Preset):
            d["component"] = obj.component
            d["component_kind"] = obj.kind
        else:
            for attr in ("knowledge", "level", "differentiable", "randomized", "levels", "output", "tasks"):
                if hasattr(obj, attr) and not callable(getattr(obj, attr)):
                    v = getattr(obj, attr)
                    if isinstance(v, (tuple, list)):
                        v = [getattr(i, "value", i) for i in v]
                    d[attr] = getattr(v, "value", v)
        return d


class Registry:
    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        #: registration failures: (distribution, message)
        self.errors: list[tuple[str, str]] = []

    # -- building ---------------------------------------------------------------------------------------------
    def registrar(self, kind: str, distribution: str) -> Callable[..., None]:
        def register(target: Any, name: str | None = None, summary: str | None = None) -> None:
            if isinstance(target, Preset):
                key = name or target.name
            elif isinstance(target, str):
                if not name:
                    raise PluginError(f"{distribution}: registering {target!r} by path needs name=")
                key = name
            else:
                key = name or getattr(target, "name", "") or ""
                if not key:
                    raise PluginError(f"{distribution}: {target!r} has no name")
            self.add(Entry(key, kind, distribution, target, summary))

        return register

    def add(self, entry: Entry) -> None:
        table = self.entries[entry.kind]
        if entry.name in table:
            other = table[entry.name]
            raise PluginError(
                f"duplicate {entry.kind} name {entry.name!r}: registered by both {other.distribution} "
                f"and {entry.distribution}"
            )
        if entry.kind != "preset" and entry.name in self.entries["preset"]:
            pass  # presets and components live in separate namespaces; components win on lookup
        table[entry.name] = entry

    # -- lookup -----------------------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        """The entry of a component (or of a preset configuring a component of ``kind``)."""
        if name in self.entries[kind]:
            return self.entries[kind][name]
        preset = self.entries["preset"].get(name)
        if preset is not None and preset.load().kind == kind:
            return preset
        candidates = self.names(kind) + [
            n for n, e in self.entries["preset"].items() if isinstance(e.target, Preset) and e.target.kind == kind
        ]
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = "" if close else f" (known: {', '.join(sorted(candidates)) or 'none'})"
        raise UnknownComponentError(f"unknown {kind} {name!r}{hint}{known}")

    def resolve(self, kind: str, spec: str | tuple[str, dict[str, Any]]) -> tuple[type, Params, str]:
        """``spec`` -> (component class, validated params, display name). Presets merge their parameters."""
        name, user = parse_spec(spec) if isinstance(spec, str) else spec
        entry = self.get(kind, name)
        obj = entry.load()
        values: dict[str, Any] = {}
        if isinstance(obj, Preset):
            values.update(obj.params)
            obj = self.get(kind, obj.component).load()
        values.update(user)
        return obj, validate(obj.Params, name, values), name

    def build(self, kind: str, spec: str | tuple[str, dict[str, Any]], **extra: Any) -> Any:
        """Instantiate the component named by ``spec`` (``name`` or ``name:k=v,...``)."""
        cls, params, _ = self.resolve(kind, spec)
        if extra:
            params = cls.make_params(params, **extra)
        return cls(params)
