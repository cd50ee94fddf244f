"""The component registry: every attack, defense, model, metric, dataset and preset, keyed by name.

Built by :class:`~sec4sr_core.plugins.manager.PluginManager` from the registration hooks. Each entry records the
distribution that registered it. :meth:`Registry.add` refuses a second registration of one name in one kind (an
error naming both distributions); the manager resolves such clashes between plugins before adding (the later
plugin is disabled), so a registry it hands out is always consistent. Entries registered as a ``"module:attr"``
path are imported only when used (listing names needs no torch-heavy import; a parameter schema does).

Errors a component raises while loading or being built name its distribution (:class:`PluginError`), so a broken
plugin is never an anonymous traceback.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sec4sr_core.base.errors import PluginError, Sec4srError, UnknownComponentError
from sec4sr_core.base.params import Params, parse_spec, validate
from sec4sr_core.base.kinds import HOOKS, KINDS  # noqa: F401 - re-exported
from sec4sr_core.base.presets import Preset

@dataclass
class Entry:
    name: str
    kind: str
    distribution: str
    target: Any  #: a class, a Preset, or a "module:attr" path
    summary_hint: str | None = None
    plugin: str = ""  #: name of the plugin (entry point or inline name) that registered it

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
        from sec4sr_core.base.params import schema

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


#: ``explain_unknown(kind, name, message) -> message``: lets the plugin manager say why a name is unknown
#: (provided by a plugin that ``SEC4SR_PLUGINS`` hides, or by a disabled one)
ExplainUnknown = Callable[[str, str, str], str]


class Registry:
    """Components of one kind are keyed by name: ``entries[kind][name] -> Entry``."""

    def __init__(self, explain_unknown: ExplainUnknown | None = None) -> None:
        self.entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self.explain_unknown = explain_unknown

    # -- building ---------------------------------------------------------------------------------------------
    @staticmethod
    def make_entry(kind: str, distribution: str, target: Any, name: str | None = None,
                   summary: str | None = None) -> Entry:
        """The entry a ``register(target, name=None, summary=None)`` call describes (validated, not yet added)."""
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
        return Entry(key, kind, distribution, target, summary)

    def registrar(self, kind: str, distribution: str) -> Callable[..., None]:
        """The ``register`` callback a registration hook receives, adding straight to this registry."""

        def register(target: Any, name: str | None = None, summary: str | None = None) -> None:
            self.add(self.make_entry(kind, distribution, target, name, summary))

        return register

    def add(self, entry: Entry) -> None:
        table = self.entries[entry.kind]
        if entry.name in table:
            other = table[entry.name]
            raise PluginError(
                f"duplicate {entry.kind} name {entry.name!r}: registered by both {other.distribution} "
                f"and {entry.distribution}"
            )
        # presets and components live in separate namespaces; components win on lookup
        table[entry.name] = entry

    def conflict(self, entry: Entry) -> Entry | None:
        """The entry already registered under ``entry``'s kind and name, if any."""
        return self.entries[entry.kind].get(entry.name)

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
        candidates = sorted(set(self.names(kind)) | {
            n for n, e in self.entries["preset"].items() if isinstance(e.target, Preset) and e.target.kind == kind
        })
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = "" if close else f" (known: {', '.join(sorted(candidates)) or 'none'})"
        message = f"unknown {kind} {name!r}{hint}{known}"
        if self.explain_unknown is not None:
            message = self.explain_unknown(kind, name, message)
        raise UnknownComponentError(message)

    def resolve(self, kind: str, spec: str | tuple[str, dict[str, Any]]) -> tuple[type, Params, str]:
        """``spec`` -> (component class, validated params, display name). Presets merge their parameters."""
        cls, params, name, _ = self._resolve(kind, spec)
        return cls, params, name

    def _resolve(self, kind: str, spec: str | tuple[str, dict[str, Any]]) -> tuple[type, Params, str, Entry]:
        name, user = parse_spec(spec) if isinstance(spec, str) else spec
        entry = self.get(kind, name)
        obj = entry.load()
        values: dict[str, Any] = {}
        if isinstance(obj, Preset):
            values.update(obj.params)
            entry = self.get(kind, obj.component)
            obj = entry.load()
        values.update(user)
        return obj, validate(obj.Params, name, values), name, entry

    def build(self, kind: str, spec: str | tuple[str, dict[str, Any]], **extra: Any) -> Any:
        """Instantiate the component named by ``spec`` (``name`` or ``name:k=v,...``).

        A constructor that fails with anything but a :class:`Sec4srError` (a bug or a missing dependency of the
        plugin, not the user's input) is re-raised as one :class:`PluginError` line naming the component and its
        distribution; the original exception is kept as ``__cause__``.
        """
        cls, params, name, entry = self._resolve(kind, spec)
        if extra:
            params = cls.make_params(params, **extra)
        try:
            return cls(params)
        except Sec4srError:
            raise
        except Exception as exc:
            shown = name if name == entry.name else f"{name} ({entry.name})"
            detail = " ".join(str(exc).split())
            raise PluginError(
                f"{kind} {shown!r} from {entry.distribution} failed to build: {type(exc).__name__}: {detail}"
            ) from exc
