"""Typed result rows and their identity.

A row's identity is a fingerprint of everything that changes its value:

* the **cell** — the system (model spec with every parameter, weights digest, task, dataset fingerprint, enrollment
  digest and threshold, variant tag), the defense row (each part's name and every parameter) and defense order, the
  attack (name and every parameter) and setting, targeting, the EOT draws actually used, the trial length, the metric
  set, the gradient check and the seed — hashed into :attr:`ResultRow.cell`;
* the **batch** the row was computed in — its index, and each trial's utterance, label, claim and target, since a
  batch's random streams and batch-level attacks depend on them — hashed with the cell into :attr:`ResultRow.unit`.

The store keys rows on ``(unit, utterance)``: an identical re-run finds every row and adds none; any change computes
new rows under new keys, and a row computed under one configuration is never counted under another. Which rows belong
to a study is recorded separately (``study_units``), so a study's tables count exactly its own trials.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence


def digest(value: Any, n: int = 16) -> str:
    """A short, stable sha256 of a JSON-able value (keys sorted; floats by repr)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:n]


def canonical(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A component's identity: its registry name and every parameter, defaults included."""
    return {"name": name, "params": dict(sorted(params.items()))}


def batch_identity(index: int, trials: Sequence[tuple[str, int, int | None, int | None]]) -> dict[str, Any]:
    """The identity of one batch: its index and each trial as (utterance, label, claim, target)."""
    return {"batch": index, "trials": [list(t) for t in trials]}


def unit_key(cell: str, batch: Mapping[str, Any]) -> str:
    return digest({"cell": cell, "batch": batch})


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested identity dicts (sorted)."""
    out: list[str] = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        name = f"{prefix}{k}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += changed_keys(a, b, name + ".")
        elif a != b:
            out.append(name)
    return out


@dataclass
class ResultRow:
    """One per-utterance result: a benign evaluation (``attack == ""``, ``setting == "benign"``) or an adversarial
    example of ``attack`` evaluated on the ``defense`` row.

    ``label`` is the true class (−1 for an imposter), ``claim`` the claimed speaker (SV), ``target`` the goal of a
    targeted attack; ``decision`` the system's decision (−1 = reject); ``correct`` 1 when it equals ``label``;
    ``success`` 1 when the attack reached its goal (None for benign rows); ``scores`` (S,) the system's scores;
    ``metrics`` per-utterance measurements (``linf``, ``snr`` ...); ``queries`` system queries spent; ``time_s``
    crafting seconds per example; ``warnings`` reliability warnings ``{code, message}``; ``cell``/``unit`` the
    identity fingerprints described in the module docstring."""

    system: str
    task: str
    defense: str
    attack: str
    setting: str
    utterance: str
    speaker: str
    label: int
    cell: str
    unit: str
    target: int | None = None
    claim: int | None = None
    decision: int | None = None
    correct: int | None = None
    success: int | None = None
    scores: list[float] = field(default_factory=list)
    queries: int = 0
    time_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[dict[str, str]] = field(default_factory=list)
    audio_path: str | None = None
    seed: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    created: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "ResultRow":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
