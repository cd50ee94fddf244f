"""Presets: named configurations of a component (data, registered like components)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """A named configuration of a component, e.g. ``pgd-10`` = ``pgd`` with ``steps=10``."""

    name: str
    kind: str  #: kind of the component it configures ("attack", "defense", ...)
    component: str
    params: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
