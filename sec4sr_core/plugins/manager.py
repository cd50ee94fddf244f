"""The plugin manager: one object that loads plugins, checks them and builds the component registry.

:class:`PluginManager` wraps a ``pluggy.PluginManager`` of the ``sec4sr`` project (as hatch and tox wrap theirs).
The module keeps one default instance, :data:`pm`; the functions below (:func:`get_registry`, :func:`statuses`,
:func:`versions`, :func:`register_plugin`, :func:`unregister_plugin`, ...) are thin accessors of it. Tests and
notebooks may build their own, isolated manager (``PluginManager(entry_points=False)``).

Loading, in this order (the *load order* that decides duplicate names):

1. the core's built-ins (:mod:`sec4sr_core.builtins`), registered in code: they are there even when the entry-point
   metadata is stale or missing. The ``builtins`` entry point the ``sec4sr`` distribution still declares is ignored,
   so a built-in is never registered twice;
2. every other entry point of the group ``sec4sr``, sorted by entry-point name;
3. inline plugins (:meth:`PluginManager.register`), in the order they are registered.

Rules:

* ``SEC4SR_PLUGINS`` (comma-separated entry-point or distribution names) restricts which entry points load; the
  built-ins always load and ``SEC4SR_PLUGINS=""`` loads no external plugin. Asking for a component a hidden plugin
  provides says so (``attack 'pgd' is provided by sec4sr-plugins-attacks, which SEC4SR_PLUGINS='defenses' does
  not load``) instead of "unknown attack".
* A plugin that fails to import, or whose registration hook raises, is recorded with its error (``sec4sr plugins``
  shows it, status ``error``); the rest keep working.
* :meth:`PluginManager.check_pending`: a hook implementation no hookspec knows (``register_defense`` for
  ``register_defenses``) is an error of its plugin naming the hook and the closest real hook; a function named
  exactly like a hook but not marked ``@hookimpl`` is one too (pluggy would silently never call either). The
  plugin's other hooks keep working.
* Two plugins registering one name in one kind: the plugin that loads **later is disabled as a whole** (status
  ``disabled``, a message naming both distributions and the name); the registry keeps the earlier plugin's
  component, so ``sec4sr list`` and ``sec4sr run`` keep working. Whole-plugin rather than dropping only the
  clashing component, because a distribution is one coherent unit: its presets and defaults refer to its own
  components by name, and half of a plugin silently resolving onto another distribution's component would run
  numbers nobody configured. A disabled plugin's lifecycle hooks are not called either. Fix a clash by removing
  one plugin or hiding it with ``SEC4SR_PLUGINS``.
* Every problem is also logged once, as one ``warning: ...`` line on the ``sec4sr.plugins`` logger (printed on
  stderr when logging is not configured).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy

from sec4sr_core.base import hookspecs
from sec4sr_core.base.errors import PluginError
from sec4sr_core.base.presets import Preset
from sec4sr_core.plugins.registry import HOOKS, Entry, Registry

GROUP = "sec4sr"
ENV_PLUGINS = "SEC4SR_PLUGINS"
CORE_DISTRIBUTION = "sec4sr"
BUILTINS = "builtins"
BUILTINS_MODULE = "sec4sr_core.builtins"

LOADED, SKIPPED, ERROR, DISABLED = "loaded", "skipped", "error", "disabled"

#: every hook the ``sec4sr`` project specifies
SPEC_NAMES = tuple(sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), f"{GROUP}_spec")))

log = logging.getLogger("sec4sr.plugins")

_FROM_ENV: Any = object()


@dataclass
class PluginStatus:
    """One plugin as ``sec4sr plugins`` shows it."""

    name: str  #: entry-point name (or the inline plugin's name)
    distribution: str
    version: str
    status: str  #: "loaded", "skipped" (SEC4SR_PLUGINS), "error" (see ``error``) or "disabled" (duplicate name)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass(frozen=True)
class PluginProblem:
    """A problem of one plugin found while loading or checking it."""

    plugin: str
    distribution: str
    message: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.distribution}): {self.message}"


@dataclass
class _Record:
    """What loading one plugin gave: the object registered with pluggy (None when skipped or not importable)."""

    name: str
    distribution: str
    version: str
    plugin: Any = None
    entry_point: md.EntryPoint | None = None
    status: str = LOADED
    error: str = ""


class PluginManager:
    """Loads the ``sec4sr`` plugins, checks them, and builds the :class:`Registry` of their components.

    ``entry_points=False`` loads no installed plugin, ``builtins=False`` leaves out the core's own metrics and
    datasets (both for isolated tests). ``only`` plays the part of ``SEC4SR_PLUGINS`` (default: read from the
    environment when loading). Nothing is imported before the first :meth:`load` (or any accessor calling it).
    """

    def __init__(self, *, entry_points: bool = True, builtins: bool = True, only: str | None = _FROM_ENV,
                 group: str = GROUP) -> None:
        self.pluggy = pluggy.PluginManager(GROUP)
        self.pluggy.add_hookspecs(hookspecs)
        self.group = group
        self._use_entry_points = entry_points
        self._use_builtins = builtins
        self._only_arg = only
        self._only: str | None = None
        self._records: dict[str, _Record] = {}  # in load order
        self._loaded = False
        self._registry: Registry | None = None
        self._status: dict[str, PluginStatus] = {}
        self._disabled: dict[str, list[Entry]] = {}  # plugin name -> the entries it would have registered
        self._hidden: list[tuple[_Record, list[Entry]]] | None = None  # what SEC4SR_PLUGINS hides (on demand)
        self._warnings: list[str] = []  # problems not tied to one plugin (e.g. SEC4SR_PLUGINS typos)
        self._warned: set[str] = set()

    # -- loading ------------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Register the built-ins and load the entry points (once; later calls do nothing)."""
        if self._loaded:
            return
        self._loaded = True
        self._only = os.environ.get(ENV_PLUGINS) if self._only_arg is _FROM_ENV else self._only_arg
        if self._use_builtins:
            module = importlib.import_module(BUILTINS_MODULE)
            self.pluggy.register(module, name=BUILTINS)
            self._records[BUILTINS] = _Record(BUILTINS, CORE_DISTRIBUTION, _version(CORE_DISTRIBUTION), module)
        if self._use_entry_points:
            self._load_entry_points()
        self._registry = None

    def _allowed(self) -> set[str] | None:
        if self._only is None:
            return None
        return {_normalize(p) for p in self._only.split(",") if p.strip()}

    def _load_entry_points(self) -> None:
        allowed = self._allowed()
        seen: set[str] = set()
        for ep in sorted(md.entry_points(group=self.group), key=lambda e: e.name):
            if ep.value.strip() == BUILTINS_MODULE:
                continue  # the core's built-ins are registered in code (or deliberately left out)
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            seen |= {_normalize(ep.name), _normalize(dist)}
            key = ep.name if ep.name not in self._records else f"{dist}:{ep.name}"
            if allowed is not None and _normalize(ep.name) not in allowed and _normalize(dist) not in allowed:
                self._records[key] = _Record(key, dist, version, None, ep, SKIPPED, f"not in {ENV_PLUGINS}")
                continue
            try:
                module = ep.load()
                if self.pluggy.is_registered(module):
                    continue  # the same plugin behind a second entry point
                self.pluggy.register(module, name=key)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the tool
                message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"  # one line (pluggy's are several)
                self._records[key] = _Record(key, dist, version, None, ep, ERROR, message)
                continue
            self._records[key] = _Record(key, dist, version, module, ep)
        for name in sorted((allowed or set()) - seen):
            close = difflib.get_close_matches(name, sorted(seen), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self._warnings.append(f"{ENV_PLUGINS} names {name!r}, which no installed plugin provides{hint}")

    def register(self, plugin: Any, name: str, distribution: str | None = None, version: str = "-") -> None:
        """Register an inline plugin object or module after the installed ones (invalidates the registry)."""
        self.load()
        if name in self._records:
            raise ValueError(f"a plugin named {name!r} is already known ({self._records[name].distribution})")
        self.pluggy.register(plugin, name=name)
        self._records[name] = _Record(name, distribution or f"<inline {name}>", version, plugin)
        self._registry = None

    def unregister(self, name: str) -> None:
        """Remove a plugin by name (no-op for an unknown name; invalidates the registry)."""
        self._records.pop(name, None)
        if self.pluggy.get_plugin(name) is not None:
            self.pluggy.unregister(name=name)
        self._registry = None

    # -- checks -------------------------------------------------------------------------------------------------
    def check_pending(self, strict: bool = False) -> list[PluginProblem]:
        """Hook implementations no hookspec knows, and hook-named functions pluggy ignores, per plugin.

        Unlike pluggy's ``check_pending`` this does not raise by default: each problem marks its plugin as failed
        (``sec4sr plugins``) and the rest keeps working. ``strict=True`` raises one :class:`PluginError` instead.
        """
        self.load()
        problems = [PluginProblem(r.name, r.distribution, m) for r in self._active() for m in self._pending(r)]
        if strict and problems:
            raise PluginError("; ".join(str(p) for p in problems))
        return problems

    def _pending(self, rec: _Record) -> list[str]:
        out = []
        for hook_name in sorted(self.pluggy.hook.__dict__):
            if hook_name.startswith("_"):
                continue
            caller = getattr(self.pluggy.hook, hook_name)
            if caller.has_spec():
                continue
            if any(i.plugin is rec.plugin and not i.optionalhook for i in caller.get_hookimpls()):
                close = difflib.get_close_matches(hook_name, SPEC_NAMES, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else f" (sec4sr hooks: {', '.join(SPEC_NAMES)})"
                out.append(f"unknown hook {hook_name!r}{hint}")
        for spec in SPEC_NAMES:
            try:
                fn = getattr(rec.plugin, spec, None)
            except Exception:  # noqa: BLE001 - an object with a raising property is its own problem
                continue
            if callable(fn) and self.pluggy.parse_hookimpl_opts(rec.plugin, spec) is None:
                out.append(f"{spec!r} is not marked @hookimpl, so it is never called")
        return out

    # -- the registry -------------------------------------------------------------------------------------------
    def registry(self) -> Registry:
        """The registry of every enabled plugin's components (built lazily, rebuilt after plugin changes)."""
        self.load()
        if self._registry is None:
            self._registry = self._build()
            self._warn()
        return self._registry

    def _active(self) -> list[_Record]:
        return [r for r in self._records.values() if r.plugin is not None]

    def _collect(self, rec: _Record) -> tuple[list[Entry], list[str]]:
        """Call ``rec``'s registration hooks with a staging ``register``: its entries, and its errors."""
        entries: list[Entry] = []
        errors: list[str] = []
        for kind, hook_name in HOOKS.items():
            impl = next((i for i in getattr(self.pluggy.hook, hook_name).get_hookimpls() if i.plugin is rec.plugin),
                        None)
            if impl is None:
                continue

            def register(target: Any, name: str | None = None, summary: str | None = None, _kind: str = kind) -> None:
                entry = Registry.make_entry(_kind, rec.distribution, target, name, summary)
                entry.plugin = rec.name
                entries.append(entry)

            try:
                impl.function(register=register)
            except PluginError as exc:
                errors.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the tool
                errors.append(f"{hook_name} raised {type(exc).__name__}: {exc}")
        return entries, errors

    def _build(self) -> Registry:
        reg = Registry(explain_unknown=self._explain_unknown)
        problems: dict[str, list[str]] = {}
        disabled: dict[str, list[Entry]] = {}
        for rec in self._active():
            entries, errors = self._collect(rec)
            errors += self._pending(rec)
            clashes = [(other, e) for e in entries if (other := reg.conflict(e)) is not None]
            if clashes:
                other, e = clashes[0]
                more = f" (and {len(clashes) - 1} more: {', '.join(repr(c.name) for _, c in clashes[1:4])})" \
                    if len(clashes) > 1 else ""
                clash = (f"duplicate {e.kind} name {e.name!r}: registered by both {other.distribution} and "
                         f"{e.distribution}{more}; {e.distribution} loads later, so it is disabled")
                problems[rec.name] = [clash, *errors]
                disabled[rec.name] = entries
                continue
            for e in entries:
                if reg.conflict(e) is not None:
                    errors.append(f"registers {e.kind} {e.name!r} twice; the first registration is kept")
                    continue
                reg.add(e)
            if errors:
                problems[rec.name] = errors
        self._disabled = disabled
        self._status = {}
        for rec in self._records.values():
            if rec.name in disabled:
                status, error = DISABLED, "; ".join(problems[rec.name])
            elif rec.name in problems:
                status, error = ERROR, "; ".join(problems[rec.name])
            else:
                status, error = rec.status, rec.error
            self._status[rec.name] = PluginStatus(rec.name, rec.distribution, rec.version, status, error)
        return reg

    def _warn(self) -> None:
        lines = list(self._warnings)
        for st in self._status.values():
            if st.status == ERROR:
                lines.append(f"plugin {st.name!r} ({st.distribution}) failed: {st.error}")
            elif st.status == DISABLED:
                lines.append(f"plugin {st.name!r} ({st.distribution}): {st.error}")
        for line in lines:
            if line not in self._warned:
                self._warned.add(line)
                log.warning("warning: %s (see `sec4sr plugins`)", " ".join(line.split()))

    def _explain_unknown(self, kind: str, name: str, message: str) -> str:
        """Say which plugin would provide an unknown name: a disabled one, or one ``SEC4SR_PLUGINS`` hides."""
        for plugin, entries in self._disabled.items():
            if any(_provides(e, kind, name) for e in entries):
                rec = self._records.get(plugin)
                dist = rec.distribution if rec else plugin
                return (f"{kind} {name!r} is provided by {dist} (plugin {plugin!r}), which is disabled because of a "
                        f"duplicate name; see `sec4sr plugins`")
        for rec, entries in self._hidden_entries():
            if any(_provides(e, kind, name) for e in entries):
                return (f"{kind} {name!r} is provided by {rec.distribution}, which {ENV_PLUGINS}={self._only!r} "
                        f"does not load (add {rec.name!r} to {ENV_PLUGINS}, or unset it)")
        failed = [r for r in self._records.values() if r.plugin is None and r.status == ERROR]
        if failed:
            names = ", ".join(f"{r.name!r} ({r.distribution})" for r in failed)
            message += f"; plugin {names} failed to load, see `sec4sr plugins`"
        return message

    def _hidden_entries(self) -> list[tuple[_Record, list[Entry]]]:
        """What each plugin hidden by ``SEC4SR_PLUGINS`` would register. Imports those plugins' top modules, but
        only on this error path (an unknown name), and never registers them."""
        if self._hidden is None:
            self._hidden = []
            for rec in self._records.values():
                if rec.status != SKIPPED or rec.entry_point is None:
                    continue
                entries: list[Entry] = []
                try:
                    plugin = rec.entry_point.load()
                    for kind, hook_name in HOOKS.items():
                        if self.pluggy.parse_hookimpl_opts(plugin, hook_name) is None:
                            continue

                        def register(target: Any, name: str | None = None, summary: str | None = None,
                                     _kind: str = kind, _dist: str = rec.distribution,
                                     _entries: list[Entry] = entries) -> None:
                            _entries.append(Registry.make_entry(_kind, _dist, target, name, summary))

                        getattr(plugin, hook_name)(register=register)
                except Exception:  # noqa: BLE001 - only a hint; keep what was collected
                    pass
                self._hidden.append((rec, entries))
        return self._hidden

    # -- what the tool shows ------------------------------------------------------------------------------------
    def statuses(self) -> list[PluginStatus]:
        """Every plugin in load order, with its status."""
        self.registry()
        return list(self._status.values())

    def versions(self) -> dict[str, str]:
        """Versions of sec4sr and of every plugin distribution whose components are in use (recorded with each
        result row). A plugin with a failed hook still counts (its other components are used); a disabled, skipped
        or unimportable one does not."""
        self.registry()
        out = {CORE_DISTRIBUTION: _version(CORE_DISTRIBUTION)}
        for rec in self._active():
            if rec.name not in self._disabled and rec.distribution not in out and not rec.distribution.startswith("<"):
                out[rec.distribution] = rec.version
        return out

    def mark_component_error(self, distribution: str, message: str) -> None:
        """Record that a component of ``distribution`` failed to load (shown by ``sec4sr plugins``)."""
        self.registry()
        for st in self._status.values():
            if st.distribution == distribution and st.status != DISABLED:
                st.status = ERROR
                st.error = message if not st.error or message in st.error else f"{st.error}; {message}"

    def blame(self, exc: BaseException) -> PluginStatus | None:
        """The plugin whose code raised ``exc``: the innermost traceback frame (following ``__cause__`` and
        ``__context__``) in a module of a plugin's package; None when only the core's code is involved.

        For messages such as ``internal error in plugin 'x' (dist 1.0): ...``; never raises itself.
        """
        try:
            owners = self._module_owners()
        except Exception:  # noqa: BLE001 - only a hint for an error message already being reported
            return None
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            frames = []
            tb = current.__traceback__
            while tb is not None:
                frames.append(tb.tb_frame)
                tb = tb.tb_next
            for frame in reversed(frames):
                module = str(frame.f_globals.get("__name__", ""))
                owner = owners.get(module.partition(".")[0])
                if owner is not None:
                    return self._status.get(owner)
            current = current.__cause__ or current.__context__
        return None

    def _module_owners(self) -> dict[str, str]:
        """Top-level package -> plugin name, for every enabled non-core plugin and its components' modules."""
        reg = self.registry()
        owners: dict[str, str] = {}
        core = {"sec4sr_core", "pluggy", "torch", "builtins"}

        def own(module: str | None, plugin: str) -> None:
            top = (module or "").partition(".")[0]
            if top and top not in core and top != "__main__":
                owners.setdefault(top, plugin)

        for rec in self._active():
            if rec.distribution == CORE_DISTRIBUTION:
                continue
            p = rec.plugin
            own(p.__name__ if isinstance(p, ModuleType) else type(p).__module__, rec.name)
        for table in reg.entries.values():
            for e in table.values():
                if e.distribution == CORE_DISTRIBUTION or isinstance(e.target, Preset):
                    continue
                own(e.target.partition(":")[0] if isinstance(e.target, str) else getattr(e.target, "__module__", None),
                    e.plugin)
        return owners

    @property
    def hook(self) -> Any:
        """pluggy's hook relay, leaving out disabled plugins (``pm.hook.sec4sr_result(row=...)``)."""
        self.registry()
        if not self._disabled:
            return self.pluggy.hook
        return _SubsetRelay(self.pluggy, [self._records[n].plugin for n in self._disabled if n in self._records])


class _SubsetRelay:
    """``pm.hook`` without some plugins: each attribute is pluggy's subset hook caller."""

    def __init__(self, manager: pluggy.PluginManager, removed: Iterable[Any]) -> None:
        self._manager = manager
        self._removed = list(removed)

    def __getattr__(self, name: str) -> Any:
        return self._manager.subset_hook_caller(name, self._removed)


def _provides(entry: Entry, kind: str, name: str) -> bool:
    if entry.name != name:
        return False
    return entry.kind == kind or (entry.kind == "preset" and isinstance(entry.target, Preset)
                                  and entry.target.kind == kind)


def _normalize(name: str) -> str:
    """PEP 503 normalisation, so ``sec4sr_plugins_attacks`` and ``sec4sr-plugins-attacks`` match."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "unknown"


# ----------------------------------------------------------------------------------------------------------------------
# The default instance and its accessors
# ----------------------------------------------------------------------------------------------------------------------

#: the plugin manager the tool uses
pm = PluginManager()


def get_manager() -> PluginManager:
    """The default :class:`PluginManager`."""
    return pm


def load_plugins() -> None:
    """Load the default manager's plugins (idempotent)."""
    pm.load()


def get_registry() -> Registry:
    """The default manager's registry."""
    return pm.registry()


def register_plugin(plugin: Any, name: str, distribution: str | None = None) -> None:
    """Register an inline plugin object or module with the default manager (invalidates the registry)."""
    pm.register(plugin, name, distribution)


def unregister_plugin(name: str) -> None:
    """Remove an inline plugin from the default manager."""
    pm.unregister(name)


def statuses() -> list[PluginStatus]:
    return pm.statuses()


def versions() -> dict[str, str]:
    return pm.versions()


def check_pending(strict: bool = False) -> list[PluginProblem]:
    return pm.check_pending(strict)


def mark_component_error(distribution: str, message: str) -> None:
    pm.mark_component_error(distribution, message)
