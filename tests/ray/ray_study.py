"""The small study the Ray executor tests run (GE2E on CSI-E, 4 utterances of 0.5 s, weak 2-step PGD, one defense
row, both settings) and a reader of its stored rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

N = 4
BASE: dict[str, Any] = dict(
    name="ray test study", attacks=["pgd:steps=2"], defenses=["qt:q=512"], settings=["non-adaptive", "adaptive"],
    limit=N, batch_size=2, length_s=0.5, enroll_length_s=1.0, metrics=["l2", "snr"], examples=1,
    gradient_check=True,
)
# rows: benign (2 rows × N) + non-adaptive (2 × N) + adaptive (2 × N)
EXPECTED = 6 * N
VOLATILE = ("time_s", "created")  # wall time and insertion time differ between any two runs


def config(out, **kw):
    from sec4sr_core.study.runner import StudyConfig

    return StudyConfig(**{**BASE, "out": out, **kw})


def stored(out) -> dict[tuple, dict[str, Any]]:
    """The stored rows keyed on (system, task, defense, attack, setting, utterance) (one study per folder here), without the volatile columns; audio paths relative to ``out``."""
    from sec4sr_core.study.store import CELL, ResultStore

    with ResultStore(Path(out) / "results.sqlite") as store:
        rows = store.rows()
    keyed = {}
    for r in rows:
        k = tuple(r[c] for c in (*CELL, "utterance"))
        assert k not in keyed, f"duplicated row {k}"
        if r["audio_path"]:
            r["audio_path"] = str(Path(r["audio_path"]).relative_to(out))
        keyed[k] = {c: v for c, v in r.items() if c not in VOLATILE}
    return keyed
