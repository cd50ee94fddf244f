"""The core's own plugin: built-in datasets and metrics, registered through the same hooks as any plugin.

The plugin manager registers this module in code (:mod:`sec4sr_core.plugins.manager`), first in load order.
Everything is registered by ``"module:attr"`` path with its summary, so listing names imports neither torch nor
the metric and dataset modules (``tests/core/test_plugin_manager.py`` checks that each summary matches the class).
"""

from __future__ import annotations

from sec4sr_core.base.hookspecs import hookimpl

#: (name, "module:attr", summary) of the built-in datasets
DATASETS = (
    ("embedded", "sec4sr_core.builtins.datasets:EmbeddedDataset",
     "The small multi-speaker TTS corpus shipped with sec4sr (FLAC, 16 kHz); the default everywhere."),
    ("folder", "sec4sr_core.builtins.datasets:FolderDataset",
     "Audio on disk as root/<speaker>/<utt>.wav|flac (Spk10/Spk251 layout) or root/<split>/<speaker>/."),
    ("librispeech", "sec4sr_core.builtins.datasets:LibriSpeechDataset",
     "LibriSpeech in its own layout <root>/<subset>/<speaker>/<chapter>/*.flac, MD5-verified archive."),
    ("prompts", "sec4sr_core.builtins.prompts:PromptsDataset",
     "Real recorded speech: seven voices of the Debian Asterisk prompt packages (16 kHz, CC-BY-SA 3.0)."),
    ("voxceleb", "sec4sr_core.builtins.voxceleb:VoxCelebDataset",
     "VoxCeleb1 layout wav/<speaker>/<video>/<utt>.wav with a 'label enroll test' trial list (veri_test2.txt)."),
)

#: (name, "module:attr", summary) of the built-in per-utterance metrics (summary = the class' describe())
METRICS = (
    ("l0", "sec4sr_core.builtins.metrics:L0", "Number of samples changed (L0 distortion)."),
    ("l1", "sec4sr_core.builtins.metrics:L1", "L1 distortion in [-1, 1] amplitude units."),
    ("l2", "sec4sr_core.builtins.metrics:L2", "L2 distortion in [-1, 1] amplitude units."),
    ("linf", "sec4sr_core.builtins.metrics:Linf",
     "L∞ distortion (largest sample change) in [-1, 1] amplitude units."),
    ("snr", "sec4sr_core.builtins.metrics:SNR",
     "Signal-to-noise ratio of the perturbation, 10·log10(Σx² / Σ(x'−x)²) in dB (+inf when unchanged)."),
    ("pesq", "sec4sr_core.builtins.metrics:PESQ",
     "Wide-band PESQ (ITU-T P.862.2, MOS-LQO) of the adversarial against the benign audio, via ``pesq``."),
    ("stoi", "sec4sr_core.builtins.metrics:STOI",
     "Short-time objective intelligibility (0–1) of the adversarial against the benign audio, via ``pystoi``."),
)


@hookimpl
def register_datasets(register):
    for name, path, summary in DATASETS:
        register(path, name=name, summary=summary)


@hookimpl
def register_metrics(register):
    for name, path, summary in METRICS:
        register(path, name=name, summary=summary)
