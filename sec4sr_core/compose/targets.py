"""Target selection for targeted attacks, reproducible under the seed.

Modes (``choose_targets(..., mode=...)``):

* ``random`` (default): a target ≠ the true label, drawn per utterance from a generator seeded by (seed, utterance
  id), so it does not depend on the batch or on the order; −1 (reject) is a legal target for OSI; SV's target is the
  opposite decision (accept 0 ↔ reject −1).
* ``hardest`` / ``simplest``: from the benign scores (B, S): the candidates are the enrolled speakers other than
  the true label and the current decision (if that leaves none, other than the decision only); ``hardest`` takes
  the lowest-scoring candidate, ``simplest`` the highest. −1 has no score and is never chosen; SV has a single
  possible target, so both modes give the opposite decision (the predecessor's ``specify_target_label.py``).
* a **file path**: a TSV (``utterance<TAB>target`` per line, ``#`` comments) or a JSON object
  ``{utterance: target}``; keys are utterance ids or their last path component (file stem). Every utterance
  needs a target. A target is a label index (−1 = reject) or, when the enrolled ``speakers`` are given, a speaker
  name. Each target is checked against the utterance's true label: a target equal to it (a targeted attack that
  has already succeeded) or an unknown speaker raises :class:`ParameterError` naming the file and the line (JSON:
  the key), and so does a key given twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from sec4sr_core.base.errors import ParameterError, Sec4srError
from sec4sr_core.sdk.interfaces import REJECT, Task

MODES = ("random", "hardest", "simplest")


def batch_seed(*parts) -> int:
    import hashlib

    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def choose_targets(
    labels: torch.Tensor,
    utt_ids: Sequence[str],
    task: Task,
    n_speakers: int,
    seed: int,
    mode: str = "random",
    scores: torch.Tensor | None = None,
    decisions: torch.Tensor | None = None,
    speakers: Sequence[str] | None = None,
) -> torch.Tensor:
    """Targets (B,) int64 for ``mode`` (see module docstring). ``scores`` (B, S) and optionally ``decisions`` (B,)
    are the benign ones, needed by ``hardest`` and ``simplest``; ``speakers`` (the enrolled names) lets a target
    file name speakers instead of indices."""
    task = Task(task)
    labels = labels.detach().cpu().long()
    if mode == "random":
        return _random(labels, utt_ids, task, n_speakers, seed)
    if mode in ("hardest", "simplest"):
        if scores is None:
            raise Sec4srError(f"target mode {mode!r} needs the benign scores of the utterances")
        return targets_from_scores(labels, scores, task, mode, decisions)
    return targets_from_file(mode, utt_ids, task, n_speakers, labels=labels, speakers=speakers)


def _random(labels: torch.Tensor, utt_ids: Sequence[str], task: Task, n_speakers: int, seed: int) -> torch.Tensor:
    out = []
    for lab, uid in zip(labels.tolist(), utt_ids):
        if task == Task.SV:
            out.append(REJECT if lab == 0 else 0)
            continue
        choices = [c for c in range(n_speakers) if c != lab]
        if task == Task.OSI and lab != REJECT:
            choices.append(REJECT)
        g = torch.Generator().manual_seed(batch_seed(seed, "target", uid))
        out.append(choices[int(torch.randint(len(choices), (1,), generator=g))])
    return torch.tensor(out, dtype=torch.int64)


def targets_from_scores(
    labels: torch.Tensor, scores: torch.Tensor, task: Task | str, mode: str, decisions: torch.Tensor | None = None
) -> torch.Tensor:
    """``hardest`` (lowest-scoring) or ``simplest`` (highest-scoring) target per utterance, vectorised.

    ``scores`` (B, S) benign scores; ``decisions`` (B,) benign decisions (default: argmax of the scores).
    """
    task = Task(task)
    if mode not in ("hardest", "simplest"):
        raise Sec4srError(f"target mode must be 'hardest' or 'simplest', got {mode!r}")
    labels = labels.detach().cpu().long()
    if task == Task.SV:
        return torch.where(labels == 0, REJECT, 0).to(torch.int64)
    scores = scores.detach().cpu().double()
    if scores.dim() != 2 or scores.shape[0] != labels.shape[0]:
        raise Sec4srError(f"scores must be (B, S) with B = {labels.shape[0]}, got {tuple(scores.shape)}")
    b, s = scores.shape
    if s < 2:
        raise Sec4srError("hardest/simplest targets need at least two enrolled speakers")
    dec = scores.argmax(dim=1) if decisions is None else decisions.detach().cpu().long()
    cols = torch.arange(s).view(1, -1)
    not_dec = cols != dec.view(-1, 1)
    allowed = not_dec & (cols != labels.view(-1, 1))
    allowed = torch.where(allowed.any(dim=1, keepdim=True), allowed, not_dec)
    fill = float("inf") if mode == "hardest" else float("-inf")
    masked = scores.masked_fill(~allowed, fill)
    pick = masked.argmin(dim=1) if mode == "hardest" else masked.argmax(dim=1)
    return pick.to(torch.int64)


def targets_from_file(path: str | Path, utt_ids: Sequence[str], task: Task | str, n_speakers: int,
                      labels: torch.Tensor | None = None, speakers: Sequence[str] | None = None) -> torch.Tensor:
    """Targets read from a TSV or JSON file mapping utterance ids (or their file stems) to target labels (or
    speaker names, with ``speakers``), checked against the true ``labels`` (B,) when given (module docstring)."""
    task = Task(task)
    p = Path(path).expanduser()
    if not p.is_file():
        raise Sec4srError(f"target mode {str(path)!r} is neither random, hardest, simplest nor an existing file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(f"target file {p}: cannot read it as UTF-8 text ({type(exc).__name__})") from None
    names = {name: i for i, name in enumerate(speakers or ())}
    lo = 0 if task.closed_set else REJECT
    hi = 1 if task == Task.SV else n_speakers

    def parse_target(raw, where: str) -> int:
        if isinstance(raw, bool):
            raise ParameterError(f"target file {p} {where}: target {raw!r} is not a speaker")
        if isinstance(raw, str) and raw.strip() in names:
            return names[raw.strip()]
        try:
            t = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
        except (TypeError, ValueError):
            t = None
        if t is None:
            known = f"; enrolled speakers: {', '.join(list(names)[:8])}{' ...' if len(names) > 8 else ''}" \
                if names else ""
            raise ParameterError(f"target file {p} {where}: unknown speaker {raw!r} (give a label index in "
                                 f"[{lo}, {hi - 1}]{' or a speaker name' if names else ''}){known}")
        if not lo <= t < hi:
            raise ParameterError(f"target file {p} {where}: unknown speaker {t}: outside [{lo}, {hi - 1}], "
                                 f"the targets of {task.value}")
        return t

    table: dict[str, tuple[int, str]] = {}  # key -> (target, where)
    try:
        if p.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            def pairs(items):
                seen = {}
                for k, v in items:
                    if k in seen:
                        raise ParameterError(f"target file {p}: key {k!r} is given twice")
                    seen[k] = v
                return seen

            raw = json.loads(text, object_pairs_hook=pairs)
            if not isinstance(raw, dict):
                raise ValueError("expected a JSON object {utterance: target}")
            for k, v in raw.items():
                where = f"key {str(k)!r}"
                table[str(k)] = (parse_target(v, where), where)
        else:
            for n, line in enumerate(text.splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.split("\t") if "\t" in line else line.split()
                if len(parts) != 2:
                    raise ValueError(f"line {n}: expected 'utterance<TAB>target'")
                key, where = parts[0].strip(), f"line {n}"
                if key in table:
                    raise ParameterError(f"target file {p} line {n}: utterance {key!r} is given twice "
                                         f"(first at {table[key][1]})")
                table[key] = (parse_target(parts[1].strip(), where), where)
    except (ValueError, TypeError) as exc:
        raise ParameterError(f"target file {p}: {exc}") from None
    out, missing = [], []
    truth = None if labels is None else labels.detach().cpu().long().tolist()
    for j, uid in enumerate(utt_ids):
        # ids as they are (``spk/u05.wav``), without the extension (target files written before ids kept it),
        # then the file name and its stem
        entry = table.get(uid, table.get(Path(uid).with_suffix("").as_posix(),
                                         table.get(Path(uid).name, table.get(Path(uid).stem))))
        if entry is None:
            missing.append(uid)
            continue
        t, where = entry
        if truth is not None and t == truth[j]:
            what = "reject (−1)" if t == REJECT else ("accept (0)" if task == Task.SV else f"speaker {t}")
            raise ParameterError(f"target file {p} {where}: the target of {uid!r} is {what}, its true label; a "
                                 f"targeted attack needs a different target")
        out.append(t)
    if missing:
        raise Sec4srError(f"target file {p} has no target for {len(missing)} utterance(s), e.g. {missing[0]!r}")
    return torch.tensor(out, dtype=torch.int64)
