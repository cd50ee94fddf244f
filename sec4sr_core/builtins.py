"""The core's own plugin: built-in datasets and metrics, registered through the same hooks as any plugin."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    register("sec4sr_core.datasets:EmbeddedDataset", name="embedded",
             summary="The small multi-speaker TTS corpus shipped with sec4sr (FLAC, 16 kHz); the default everywhere.")
    register("sec4sr_core.datasets:FolderDataset", name="folder",
             summary="Audio on disk as root/<speaker>/<utt>.wav|flac (Spk10/Spk251 layout) or root/<split>/<speaker>/.")
    register("sec4sr_core.datasets:LibriSpeechDataset", name="librispeech",
             summary="LibriSpeech in its own layout <root>/<subset>/<speaker>/<chapter>/*.flac, MD5-verified archive.")


@hookimpl
def register_metrics(register):
    from . import metrics

    for cls in metrics.ALL:
        register(cls)
