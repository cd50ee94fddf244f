"""The plugin layer: :mod:`~sec4sr_core.plugins.manager` (the :class:`PluginManager` and its default instance
``pm``) and :mod:`~sec4sr_core.plugins.registry` (components by kind and name). Imports only ``sec4sr_core.base``
and never torch."""

from sec4sr_core.plugins.manager import (
    PluginManager,
    PluginProblem,
    PluginStatus,
    check_pending,
    get_manager,
    get_registry,
    pm,
    register_plugin,
    statuses,
    unregister_plugin,
    versions,
)
from sec4sr_core.plugins.registry import KINDS, Entry, Registry

__all__ = [
    "KINDS", "Entry", "PluginManager", "PluginProblem", "PluginStatus", "Registry", "check_pending", "get_manager",
    "get_registry", "pm", "register_plugin", "statuses", "unregister_plugin", "versions",
]
