"""The Python API: components by name, systems behind defense chains, enrolled systems ready to attack."""

from __future__ import annotations

from typing import Any

from sec4sr_core.compose.factories import build_defenses, load_model, resolve_dataset
from sec4sr_core.compose.enroll import build_system
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk.attack import Attack
from sec4sr_core.sdk.checks import check_system_options
from sec4sr_core.sdk.interfaces import Defense
from sec4sr_core.sdk.system import DefendedSystem, SpeakerSystem


def registry():
    """The registry of every loaded plugin's components."""
    return get_registry()


def attack(spec: str, **params: Any) -> Attack:
    """An attack by name or preset, e.g. ``attack("pgd", epsilon=0.002)`` or ``attack("pgd-10")``."""
    return registry().build("attack", spec, **params)


def defense(spec: str, **params: Any) -> Defense:
    """A defense by name or preset, e.g. ``defense("qt", q=512)``."""
    return registry().build("defense", spec, **params)


def defend(system: Any, chain: str, order: str = "sequential"):
    """``system`` behind a defense chain spec such as ``"qt:q=512+at:snr=30"``."""
    base = system.system if isinstance(system, DefendedSystem) else system
    if not isinstance(base, SpeakerSystem):
        raise TypeError("defend() needs a SpeakerSystem")
    return DefendedSystem(base, build_defenses(chain), order)


def load_system(model: str = "ge2e", task: str = "csi-e", dataset: str = "embedded", device: str = "cpu",
                threshold: float | None = None):
    """An enrolled system ready to attack (enrollment and thresholds come from the model store)."""
    task = check_system_options(task, device, threshold)  # ParameterError for a bad task, device or threshold
    m = load_model(model, device)
    system, _ = build_system(m, task, resolve_dataset(dataset), threshold=threshold)
    return system
