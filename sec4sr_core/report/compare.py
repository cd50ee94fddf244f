"""Side-by-side comparison of studies from several output folders: the cells they share, matched by their
(defense, attack, setting) labels (and the system label where a study has several systems), each with n and its
95 % Wilson interval, and a flag where two studies' intervals do not overlap. Torch-free.

A folder may be given as ``OUT`` (its latest study) or ``OUT@STUDY`` (an id or prefix).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.report.tables import StudyData, Table, load_study


@dataclass
class Compared:
    """The matched cells: ``keys`` in order; ``values[key][i]`` is (value, ci, n) of study i, or None."""

    labels: list[str]
    keys: list[tuple[str, ...]]
    values: dict[tuple[str, ...], list[tuple[float | None, Any, int] | None]]
    targeted: bool


def parse_source(text: str) -> tuple[Path, str | None]:
    """``OUT`` or ``OUT@STUDY``."""
    out, at, study = text.rpartition("@") if "@" in text and not Path(text).exists() else (text, "", "")
    return Path(out if at else text), (study or None)


def overlaps(a: Any, b: Any) -> bool:
    """Whether two intervals (lo, hi) overlap (True when either is missing: no evidence of a difference)."""
    if not a or not b:
        return True
    return not (a[1] < b[0] or b[1] < a[0])


def _cells(data: StudyData, targeted: bool) -> dict[tuple[str, ...], tuple[float | None, Any, int]]:
    s = data.summary
    several = len(s["systems"]) > 1
    out: dict[tuple[str, ...], tuple[float | None, Any, int]] = {}
    for sysdoc in s["systems"]:
        pre = (f"{sysdoc['system']}·{sysdoc['task']}",) if several else ()
        for d, acc in sysdoc["benign"].items():
            n = int((sysdoc.get("benign_n") or {}).get(d) or 0)
            if n:
                out[pre + (d, "", "benign")] = (acc, (sysdoc.get("benign_ci") or {}).get(d), n)
        for r in s["results"]:
            if r["system"] != sysdoc["system"] or r["task"] != sysdoc["task"] or not r["n"]:
                continue
            v, ci = ((r["success_rate"], r.get("success_rate_ci")) if targeted
                     else (r["adversarial_accuracy"], r.get("accuracy_ci")))
            out[pre + (r["defense"], r["attack"], r["setting"])] = (v, ci, int(r["n"]))
        # the worst case depends on the attack set: matched only between studies with the same attack columns
        worst = "robust:" + "+".join(sorted(data.config.attacks))
        for d, rob in (sysdoc.get("robust") or {}).items():
            if rob.get("n"):
                out[pre + (d, worst, "worst case")] = (rob.get("accuracy"), rob.get("ci"), int(rob["n"]))
    return out


def compare(sources: list[str]) -> Compared:
    """Load the study of each source and match their cells."""
    if len(sources) < 2:
        raise Sec4srError("compare needs at least two output folders (sec4sr compare OUT1 OUT2 ...)")
    datas = []
    for src in sources:
        out, study = parse_source(src)
        datas.append(load_study(out, study))
    targeted = {bool(d.summary.get("targeted")) for d in datas}
    if len(targeted) > 1:
        raise Sec4srError("cannot compare a targeted study with an untargeted one (success rate vs accuracy)")
    tg = targeted.pop()
    cells = [_cells(d, tg) for d in datas]
    keys: list[tuple[str, ...]] = []
    for c in cells:
        keys += [k for k in c if k not in keys]
    # the cells present in at least two studies
    keys = [k for k in keys if sum(k in c for c in cells) >= 2]
    if not keys:
        raise Sec4srError("the studies share no cell (no defense/attack/setting in common): " + ", ".join(sources))
    labels = [f"{d.out}@{d.study}" for d in datas]
    return Compared(labels, keys, {k: [c.get(k) for c in cells] for k in keys}, tg)


def compare_table(c: Compared) -> Table:
    """The side-by-side table: per matched cell the value [95 % interval] (n) of each study, then ``differs`` ("*"
    where two studies' intervals do not overlap)."""
    from sec4sr_core.study.summary import pct_ci

    width = len(c.keys[0])
    key_headers = (["system"] if width == 4 else []) + ["defense", "attack", "setting"]
    headers = key_headers + [f"[{i + 1}] {lbl}" for i, lbl in enumerate(c.labels)] + ["differs"]
    body = []
    for k in c.keys:
        vals = c.values[k]
        cells = [pct_ci(v[0], v[1]) + f" (n={v[2]})" if v else "-" for v in vals]
        present = [v for v in vals if v]
        differs = any(not overlaps(a[1], b[1]) for i, a in enumerate(present) for b in present[i + 1:])
        body.append([str(x) if x else "-" for x in k] + cells + ["*" if differs else ""])
    what = "success rate" if c.targeted else "accuracy"
    return Table("compare", "Comparison of studies", headers, body,
                 f"{what} (%) [95 % Wilson interval] (n trials) of each cell shared by at least two studies; "
                 "'robust:A+B worst case' = correct under every attack (A, B) of the row in every setting, matched "
                 "only between studies with the same attacks; * = two intervals do not overlap")


def format_compare(c: Compared) -> str:
    """The comparison as plain text: the note, the legend of studies ``[i]``, the table."""
    t = compare_table(c)
    headers = [h.split(" ")[0] if h.startswith("[") else h for h in t.headers]
    widths = [max(len(h), *(len(r[i]) for r in t.rows)) for i, h in enumerate(headers)]
    nkey = len(c.keys[0])
    fmt = "  ".join(("{:<%d}" if i < nkey else "{:>%d}") % w for i, w in enumerate(widths))
    lines = [t.note, ""] + [f"[{i + 1}] {lbl}" for i, lbl in enumerate(c.labels)] + [""]
    lines += [fmt.format(*headers), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in t.rows]
    return "\n".join(line.rstrip() for line in lines)
