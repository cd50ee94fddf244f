"""The component kinds and the registration hook of each (torch- and pydantic-free, for the CLI's parser)."""

from __future__ import annotations

KINDS = ("attack", "defense", "model", "metric", "dataset", "preset")
HOOKS = {
    "attack": "register_attacks",
    "defense": "register_defenses",
    "model": "register_models",
    "metric": "register_metrics",
    "dataset": "register_datasets",
    "preset": "register_presets",
}
