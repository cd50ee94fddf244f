"""pluggy hook specifications of the ``sec4sr`` project.

A plugin is a module (or object) with ``@hookimpl`` functions, found through the entry-point group ``sec4sr``::

    # pyproject.toml
    [project.entry-points.sec4sr]
    my_defense = "my_package"

    # my_package/__init__.py
    from sec4sr_core import hookimpl

    @hookimpl
    def register_defenses(register):
        register(MyDefense)                       # a class ...
        register("my_package.heavy:Other", name="other", summary="...")   # ... or a lazy "module:attr" path

Registration hooks get a ``register(target, name=None, summary=None)`` callback. Lifecycle hooks let a plugin
observe a run (a result sink, a logger).
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("sec4sr")
hookimpl = pluggy.HookimplMarker("sec4sr")

Register = Callable[..., None]


@hookspec
def register_attacks(register: Register) -> None:
    """Register :class:`~sec4sr_core.sdk.interfaces.Attack` subclasses."""


@hookspec
def register_defenses(register: Register) -> None:
    """Register :class:`~sec4sr_core.sdk.interfaces.Defense` subclasses."""


@hookspec
def register_models(register: Register) -> None:
    """Register :class:`~sec4sr_core.sdk.interfaces.SpeakerModel` subclasses (backbones)."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register :class:`~sec4sr_core.sdk.interfaces.Metric` subclasses."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register :class:`~sec4sr_core.sdk.interfaces.Dataset` subclasses."""


@hookspec
def register_presets(register: Register) -> None:
    """Register :class:`~sec4sr_core.plugins.registry.Preset` objects: a name -> component + parameters."""


@hookspec
def sec4sr_result(row: dict[str, Any]) -> None:
    """Called for every per-utterance result row as it is stored (a result sink)."""


@hookspec
def sec4sr_run_finished(summary: dict[str, Any]) -> None:
    """Called once when ``sec4sr run`` finishes, with the JSON summary it prints."""
