"""The plugin manager: loads plugins from the ``sec4sr`` entry-point group and builds the registry.

* ``SEC4SR_PLUGINS`` (comma-separated entry-point or distribution names) restricts which plugins load; the core's
  own ``builtins`` always load. ``SEC4SR_PLUGINS=""`` loads no external plugin.
* A plugin that fails to import, or whose registration hook raises, is recorded with its error
  (``sec4sr plugins`` shows it); the rest keep working.
* Inline plugins (tests, notebooks) are registered with :func:`register_plugin` / :func:`unregister_plugin`.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import HOOKS, Registry

GROUP = "sec4sr"
ENV_PLUGINS = "SEC4SR_PLUGINS"


@dataclass
class PluginStatus:
    name: str  #: entry-point name (or the inline plugin's name)
    distribution: str
    version: str
    status: str  #: "loaded", "skipped" or "error"
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)

_loaded = False
_status: dict[str, PluginStatus] = {}
_dist_of: dict[str, str] = {}
_registry: Registry | None = None


def _allowed() -> set[str] | None:
    raw = os.environ.get(ENV_PLUGINS)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def load_plugins() -> None:
    """Load every entry point of the ``sec4sr`` group once (idempotent)."""
    global _loaded, _registry
    if _loaded:
        return
    _loaded = True
    allowed = _allowed()
    for ep in sorted(md.entry_points(group=GROUP), key=lambda e: (e.name != "builtins", e.name)):
        dist = ep.dist.metadata["Name"] if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        key = ep.name
        if key in _status:
            continue
        if allowed is not None and ep.name != "builtins" and ep.name not in allowed and dist not in allowed:
            _status[key] = PluginStatus(key, dist, version, "skipped", f"not in {ENV_PLUGINS}")
            continue
        try:
            module = ep.load()
            pm.register(module, name=key)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the tool
            _status[key] = PluginStatus(key, dist, version, "error", f"{type(exc).__name__}: {exc}")
            continue
        _dist_of[key] = dist
        _status[key] = PluginStatus(key, dist, version, "loaded")
    _registry = None


def register_plugin(plugin: Any, name: str, distribution: str | None = None) -> None:
    """Register an inline plugin object or module (invalidates the registry)."""
    global _registry
    load_plugins()
    pm.register(plugin, name=name)
    _dist_of[name] = distribution or f"<inline {name}>"
    _status[name] = PluginStatus(name, _dist_of[name], "-", "loaded")
    _registry = None


def unregister_plugin(name: str) -> None:
    global _registry
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin, name=name)
    _status.pop(name, None)
    _dist_of.pop(name, None)
    _registry = None


def statuses() -> list[PluginStatus]:
    load_plugins()
    get_registry()
    return list(_status.values())


def get_registry() -> Registry:
    """The registry of every loaded plugin's components (built lazily, rebuilt after plugin changes)."""
    global _registry
    load_plugins()
    if _registry is not None:
        return _registry
    reg = Registry()
    duplicate_errors: list[str] = []
    for kind, hook_name in HOOKS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            dist = _dist_of.get(impl.plugin_name, impl.plugin_name)
            try:
                impl.function(register=reg.registrar(kind, dist))
            except PluginError as exc:
                if "duplicate" in str(exc):
                    duplicate_errors.append(str(exc))
                else:
                    _mark_error(impl.plugin_name, str(exc))
            except Exception as exc:  # noqa: BLE001
                _mark_error(impl.plugin_name, f"{hook_name} raised {type(exc).__name__}: {exc}")
    if duplicate_errors:
        raise PluginError("; ".join(duplicate_errors))
    _registry = reg
    return reg


def mark_component_error(distribution: str, message: str) -> None:
    """Record that a component of ``distribution`` failed to load (shown by ``sec4sr plugins``)."""
    for st in _status.values():
        if st.distribution == distribution:
            st.status = "error"
            st.error = message


def _mark_error(plugin_name: str, message: str) -> None:
    st = _status.get(plugin_name)
    if st is not None:
        st.status = "error"
        st.error = message


def versions() -> dict[str, str]:
    """Versions of sec4sr and every loaded plugin distribution (recorded with each result)."""
    load_plugins()
    out = {"sec4sr": _version("sec4sr")}
    for st in _status.values():
        if st.status == "loaded" and st.distribution not in out and not st.distribution.startswith("<"):
            out[st.distribution] = st.version
    return out


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "unknown"
