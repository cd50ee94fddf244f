"""Every component registered in this environment passes the contract kit.

Parametrised over the live registry, so components other areas add later are checked automatically. Attacks run
with their iteration-like parameters shrunk (see ``shrink``) so the whole module stays fast; a component that needs
more than that gets an entry in ``OPTIONS``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.testing import check_registered, registered

#: (kind, name) -> keyword arguments for the check (``params=`` among them)
OPTIONS: dict[tuple[str, str], dict] = {}

#: integer parameters that scale an attack's (or defense's) cost; set to their lower bound, at most 2
COST_PARAMS = {
    "steps", "max_iter", "iterations", "iters", "max_epoch", "epochs", "n_particles", "particles",
    "samples_per_draw", "samples", "binary_search_steps", "trials", "restarts", "max_queries", "queries",
    "stop_early_iter", "num_random_init", "eot", "eot_size", "n_iter", "kmeans_iter",
}


def shrink(kind: str, name: str) -> dict:
    entry = get_registry().get(kind, name)
    cls = entry.load()
    out = {}
    for field, info in cls.Params.model_fields.items():
        if field not in COST_PARAMS or not isinstance(info.default, int) or isinstance(info.default, bool):
            continue
        low = 0
        for m in info.metadata:
            low = max(low, getattr(m, "ge", None) or 0, (getattr(m, "gt", None) or -1) + 1)
        out[field] = max(low, min(info.default, 2))
    return out


@pytest.fixture(scope="module")
def folder_corpus(tmp_path_factory) -> Path:
    """6 speakers × 7 short utterances in the ``root/<speaker>/<utt>.wav`` layout (and a LibriSpeech-style copy)."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for s in range(6):
        for u in range(7):
            audio = (0.1 * rng.standard_normal(4000)).astype(np.float32)
            (root / "folder" / f"spk{s}").mkdir(parents=True, exist_ok=True)
            sf.write(root / "folder" / f"spk{s}" / f"u{u}.wav", audio, 16000, subtype="PCM_16")
            chapter = root / "libri" / "train-clean-100" / str(100 + s) / "2000"
            chapter.mkdir(parents=True, exist_ok=True)
            sf.write(chapter / f"{100 + s}-2000-{u:04d}.flac", audio, 16000)
    return root


def _fixture_module(name: str):
    """A fixture-building test module of tests/models, loaded from its file (tests/ is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "models" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_contract_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _onnx_graph(tmp: Path) -> dict:
    path = tmp / "wave.onnx"
    _fixture_module("test_onnx").wave_graph(path)
    return {"path": str(path)}


def _speechbrain_folder(tmp: Path) -> dict:
    folder = tmp / "speechbrain"
    _fixture_module("test_speechbrain").make_folder(folder)
    return {"path": str(folder)}


def _voxceleb_layout(tmp: Path) -> dict:
    """A tiny VoxCeleb1 layout (wav/<speaker>/<video>/<utt>.wav, 6 speakers × 2 videos × 2 utterances) and a
    trial list of every cross-video pair of the first four speakers."""
    rng = np.random.default_rng(1)
    speakers = [f"id1000{s}" for s in range(6)]
    utts = []
    for spk in speakers:
        for video in ("vidA", "vidB"):
            for u in range(2):
                p = tmp / "vox1" / "wav" / spk / video / f"0000{u + 1}.wav"
                p.parent.mkdir(parents=True, exist_ok=True)
                sf.write(p, (0.1 * rng.standard_normal(4000)).astype(np.float32), 16000, subtype="PCM_16")
                utts.append(f"{spk}/{video}/0000{u + 1}.wav")
    trial_utts = [u for u in utts if u.split("/")[0] in speakers[:4]]
    lines = [f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}" for a in trial_utts for b in trial_utts
             if "vidA" in a and "vidB" in b]
    (tmp / "veri_test2.txt").write_text("\n".join(lines) + "\n")
    return {"root": str(tmp / "vox1"), "trials": str(tmp / "veri_test2.txt")}


#: (kind, name) -> a function of a temporary folder giving the component's parameters: backbones whose published
#: format has no default file (ONNX) or whose default architecture is too large to check quickly (SpeechBrain's
#: 20.8 M-parameter ECAPA) get the small fixture checkpoints their own tests build; VoxCeleb gets a tiny layout
FIXTURES = {("model", "onnx"): _onnx_graph, ("model", "speechbrain"): _speechbrain_folder,
            ("dataset", "voxceleb"): _voxceleb_layout}


def _options(kind: str, name: str, corpus: Path | None, tmp: Path | None = None) -> dict:
    options = dict(OPTIONS.get((kind, name), {}))
    params = dict(options.pop("params", {}) or {})
    if (kind, name) in FIXTURES and tmp is not None:
        params = {**FIXTURES[(kind, name)](tmp), **params}
    if kind == "attack":
        params = {**shrink(kind, name), **params}
    if kind == "dataset" and corpus is not None:
        cls = get_registry().get(kind, name).load()
        fields = cls.Params.model_fields
        if "root" in fields and fields["root"].is_required() and "root" not in params:
            params["root"] = str(corpus / ("libri" if "subset" in fields else "folder"))
        if "imposters" in fields and "imposters" not in params:
            params["imposters"] = 2
    return {"params": params or None, **options}


@pytest.mark.parametrize("kind,name", registered(), ids=lambda v: v)
def test_registered_component_passes_the_contract(kind, name, request):
    corpus = request.getfixturevalue("folder_corpus") if kind == "dataset" else None
    tmp = request.getfixturevalue("tmp_path") if (kind, name) in FIXTURES else None
    options = _options(kind, name, corpus, tmp)
    params = options.pop("params")
    if kind == "preset":
        check_registered(kind, name)
    else:
        check_registered(kind, name, params, **options)


@pytest.mark.parametrize("task,targeted", [("sv", False), ("osi", True)])
@pytest.mark.parametrize("name", [n for k, n in registered("attack")])
def test_attacks_keep_the_contract_on_threshold_tasks(name, task, targeted):
    options = _options("attack", name, None)
    check_registered("attack", name, options.pop("params"), task=task, targeted=targeted, **options)


def test_every_registered_component_has_a_summary():
    reg = get_registry()
    missing = [f"{k} {n} ({reg.entries[k][n].distribution})" for k, n in registered()
               if not reg.entries[k][n].summary.strip()]
    assert not missing, f"components without a summary: {missing}"
