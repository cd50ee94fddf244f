"""sec4sr's backbones. Registered lazily by path, so listing them imports no network code."""

from __future__ import annotations

from sec4sr_core import hookimpl


@hookimpl
def register_models(register):
    register("sec4sr_plugins_models.ge2e:GE2E", name="ge2e",
             summary="GE2E LSTM speaker encoder (resemblyzer's trained weights), cosine scoring; CSI-E/SV/OSI.")
