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


def _options(kind: str, name: str, corpus: Path | None) -> dict:
    options = dict(OPTIONS.get((kind, name), {}))
    params = dict(options.pop("params", {}) or {})
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
    options = _options(kind, name, corpus)
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
