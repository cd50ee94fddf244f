"""sec4sr's attacks and their presets, registered lazily by path."""

from __future__ import annotations

from sec4sr_core import Preset, hookimpl


@hookimpl
def register_attacks(register):
    register("sec4sr_plugins_attacks.pgd:PGD", name="pgd",
             summary="Projected gradient descent in an L∞ ball (white-box), best example kept per utterance.")


@hookimpl
def register_presets(register):
    for steps in (10, 20, 30, 40, 50, 100):
        register(Preset(f"pgd-{steps}", "attack", "pgd", {"steps": steps}, f"PGD with {steps} steps, ε = 0.002"))
