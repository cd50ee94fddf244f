"""The sdk: everything a plugin distribution may import from sec4sr, in one namespace.

``from sec4sr_core.sdk import Attack, AttackResult, Knowledge, Params, hookimpl, success`` — interfaces, parameters,
errors, losses, BPDA/EOT/NES, audio I/O, the model store, systems and oracles. Names resolve lazily (PEP 562), so a
plugin's entry module that imports only ``hookimpl``, ``Params`` or ``Preset`` loads no torch; the torch-backed
modules load on first use of one of their names. The contract kit for plugin tests is :mod:`sec4sr_core.testing`.
"""

from __future__ import annotations

import importlib
from typing import Any

#: modules searched for a name, torch-free ones first
_MODULES = (
    "sec4sr_core.base.types", "sec4sr_core.base.errors", "sec4sr_core.base.params", "sec4sr_core.base.hookspecs",
    "sec4sr_core.base.presets", "sec4sr_core.sdk.attack_params",
    "sec4sr_core.sdk.interfaces", "sec4sr_core.sdk.attack", "sec4sr_core.sdk.losses", "sec4sr_core.sdk.adaptive",
    "sec4sr_core.sdk.audio", "sec4sr_core.sdk.modelstore", "sec4sr_core.sdk.system", "sec4sr_core.sdk.oracle",
    "sec4sr_core.sdk.variants", "sec4sr_core.sdk.checks", "sec4sr_core.sdk.waveguard",
)


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    for mod in _MODULES:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:  # a module of the list this version does not have
            if exc.name == mod:
                continue
            raise
        if name in getattr(module, "__dict__", {}) and not name.startswith("_"):
            value = module.__dict__[name]
            globals()[name] = value
            return value
    raise AttributeError(f"module 'sec4sr_core.sdk' has no attribute {name!r}")
