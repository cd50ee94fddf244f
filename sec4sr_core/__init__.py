"""sec4sr: evaluate adversarial attacks and defenses on speaker-recognition systems.

From Python, as easily as torchattacks::

    import sec4sr_core as sec4sr
    system = sec4sr.load_system("ge2e", task="csi-e")        # enrolled on the embedded corpus
    x, y, _ = sec4sr.load_trials("embedded", task="csi-e", limit=8)   # x (B, 1, T) in [-1, 1], y (B,)
    pgd = sec4sr.attack("pgd", epsilon=0.002, steps=10)
    adv = pgd(system, x, y)
    defended = sec4sr.defend(system, "qt:q=512")
    mine = sec4sr.load_system(sec4sr.wrap(my_net), task="sv")  # any torch (B, T) -> (B, D) embedding network

The package is layered (``docs/architecture.md``): ``base`` → ``sdk`` (what plugins import) → ``builtins`` (the
core's own plugin) → ``plugins`` (manager, registry) → ``compose`` (systems from specs, enrollment) → ``study``
(config, runs, rows, store) → ``report`` → ``cli``. This module is the public façade over them; its names load lazily, so ``import sec4sr_core``
costs no torch import until a torch-backed name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_NAMES = {
    "REJECT": "sec4sr_core.base.types", "SAMPLE_RATE": "sec4sr_core.base.types", "Knowledge": "sec4sr_core.base.types",
    "Task": "sec4sr_core.base.types", "Utterance": "sec4sr_core.base.types",
    "Sec4srError": "sec4sr_core.base.errors", "Params": "sec4sr_core.base.params", "Preset": "sec4sr_core.base.presets",
    "hookimpl": "sec4sr_core.base.hookspecs",
    "Attack": "sec4sr_core.sdk.attack", "AttackResult": "sec4sr_core.sdk.attack",
    "Dataset": "sec4sr_core.sdk.interfaces", "Defense": "sec4sr_core.sdk.interfaces",
    "Metric": "sec4sr_core.sdk.interfaces", "SpeakerModel": "sec4sr_core.sdk.interfaces",
    "registry": "sec4sr_core.api", "attack": "sec4sr_core.api", "defense": "sec4sr_core.api",
    "defend": "sec4sr_core.api", "load_system": "sec4sr_core.api", "load_trials": "sec4sr_core.api",
    "wrap": "sec4sr_core.api", "Trials": "sec4sr_core.api", "WrappedModel": "sec4sr_core.api",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'sec4sr_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
