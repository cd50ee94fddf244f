"""sec4sr core: interfaces, plugin manager, composition (defense chains, BPDA, EOT, NES), runner, store and CLI.

From Python, as easily as torchattacks::

    import sec4sr_core as sec4sr
    system = sec4sr.load_system("ge2e", task="csi-e")        # enrolled on the embedded corpus
    pgd = sec4sr.attack("pgd", epsilon=0.002, steps=10)
    adv = pgd(system, x, y)                                 # x (B, 1, T) in [-1, 1]
    defended = sec4sr.defend(system, "qt:q=512")
"""

from __future__ import annotations

from typing import Any

from .errors import Sec4srError
from .hookspecs import hookimpl
from .interfaces import REJECT, SAMPLE_RATE, Attack, AttackResult, Dataset, Defense, Knowledge, Metric, SpeakerModel, Task
from .params import Params
from .registry import Preset

__version__ = "0.1.0"

__all__ = [
    "REJECT", "SAMPLE_RATE", "Attack", "AttackResult", "Dataset", "Defense", "Knowledge", "Metric", "Params",
    "Preset", "Sec4srError", "SpeakerModel", "Task", "attack", "defend", "defense", "hookimpl", "load_system",
    "registry",
]


def registry():
    """The registry of every loaded plugin's components."""
    from .plugins import get_registry

    return get_registry()


def attack(spec: str, **params: Any) -> Attack:
    """An attack by name or preset, e.g. ``attack("pgd", epsilon=0.002)`` or ``attack("pgd-10")``."""
    return registry().build("attack", spec, **params)


def defense(spec: str, **params: Any) -> Defense:
    """A defense by name or preset, e.g. ``defense("qt", q=512)``."""
    return registry().build("defense", spec, **params)


def defend(system: Any, chain: str, order: str = "sequential"):
    """``system`` behind a defense chain spec such as ``"qt:q=512+at:snr=30"``."""
    from .runner import build_defenses
    from .system import DefendedSystem, SpeakerSystem

    base = system.system if isinstance(system, DefendedSystem) else system
    if not isinstance(base, SpeakerSystem):
        raise TypeError("defend() needs a SpeakerSystem")
    return DefendedSystem(base, build_defenses(chain), order)


def load_system(model: str = "ge2e", task: str = "csi-e", dataset: str = "embedded", device: str = "cpu",
                threshold: float | None = None):
    """An enrolled system ready to attack (enrollment and thresholds come from the model store)."""
    from .enroll import build_system
    from .runner import load_model, resolve_dataset

    m = load_model(model, device)
    system, _ = build_system(m, task, resolve_dataset(dataset), threshold=threshold)
    return system
