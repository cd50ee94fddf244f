"""sec4sr's defenses and their presets, registered lazily by path."""

from __future__ import annotations

from sec4sr_core import Preset, hookimpl


@hookimpl
def register_defenses(register):
    register("sec4sr_plugins_defenses.time_domain:QT", name="qt",
             summary="Quantisation: round samples to multiples of q (16-bit units); BPDA identity backward.")


@hookimpl
def register_presets(register):
    register(Preset("qt-512", "defense", "qt", {"q": 512}, "QT with q = 512 (the SEC4SR paper's setting)"))
