"""The study's tables, in the form of the SEC4SR paper, built from a finished (or partial) output folder.

* **Non-adaptive**: rows = defenses, columns = benign accuracy A_b, accuracy under each attack A_a, and R1 (the
  harmonic mean of A_b and the mean A_a over the attacks).
* **Adaptive**: rows = defenses, per attack A_a with the L2 distortion, SNR (dB) and PESQ of its examples.
* **Adversarially trained**: the AdvT / AdvT+X rows (and the undefended row for reference) in every setting.
* **Sweep** (``sec4sr sweep``): accuracy against the swept defense parameter, per attack.
* **Cells**: every (system, task, defense, attack, setting) with all aggregates (the CSV export).
* **Warnings**: the reliability warnings and how many result rows carry them.

Accuracies are percentages; a cell with a reliability warning is marked ``!``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sec4sr_core.base.errors import Sec4srError


@dataclass
class Table:
    """A titled table of strings (``rows`` are lists as long as ``headers``)."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""
    #: optional numeric matrix behind the table (used by plots); same shape as rows without the first column
    numbers: list[list[float | None]] = field(default_factory=list)


@dataclass
class StudyData:
    """Everything a report needs from an output folder."""

    out: Path
    config: Any  #: the StudyConfig
    summary: dict[str, Any]
    defense_rows: list[dict[str, Any]]
    sweep: dict[str, Any] | None
    study: str | None = None  #: the study's id in its store


def _open_store(out: str | Path):
    from sec4sr_core.study.store import ResultStore

    out = Path(out)
    db = out / "results.sqlite"
    if not out.is_dir():
        raise Sec4srError(f"no such output folder: {out}")
    if not db.exists():
        raise Sec4srError(f"{out} is not a study output folder (no results.sqlite); run `sec4sr run ... --out {out}`")
    return ResultStore(db)


def study_ids(out: str | Path) -> list[dict[str, Any]]:
    """The studies stored in ``out`` (oldest run first): id, name, configuration, row count, last run time."""
    with _open_store(out) as store:
        return store.studies()


def resolve_study(store: Any, out: str | Path, study: str | None) -> str | None:
    """The id of study ``study`` (an id or an unambiguous prefix of one) in ``store``; the latest study when None.
    A Sec4srError naming the folder's studies when there is no such study."""
    known = [s["id"] for s in store.studies()]
    if study is not None and study not in known:
        import difflib

        close = [k for k in known if k.startswith(study)] or difflib.get_close_matches(study, known, n=3)
        if len(close) == 1 and close[0].startswith(study):
            return close[0]
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise Sec4srError(f"{out} has no study {study!r}; {hint}its studies: {', '.join(known) or 'none'} "
                          f"(`sec4sr report {out} --list`)")
    return study or store.latest_study()


def load_study(out: str | Path, study: str | None = None) -> StudyData:
    """One study of ``<out>/results.sqlite`` (default: the study run last; a Sec4srError if ``out`` is not a study
    output folder or has no study ``study``)."""
    from sec4sr_core.study.config import StudyConfig
    from sec4sr_core.study.summary import summarize

    out = Path(out)
    with _open_store(out) as store:
        study = resolve_study(store, out, study)
        record = next((s for s in store.studies() if s["id"] == study), None)
        raw = record["config"] if record and record["config"] else store.get_meta("config")
        if raw is None:
            raise Sec4srError(f"{store.path} has no study configuration; was it written by `sec4sr run`?")
        try:
            config = StudyConfig.model_validate(raw)
        except Exception as exc:  # noqa: BLE001 - a config written by another version
            raise Sec4srError(f"{store.path}: cannot read its study configuration: {str(exc).splitlines()[0]}") from None
        summary = summarize(store, config, study=study)

        rows = store.study_value(study, "defense_rows") or [{"label": "none", "variant": False}] + [
            {"label": d, "variant": False} for d in config.defenses]
        sweep = store.study_value(study, "sweep")
    return StudyData(out, config, summary, rows, sweep, study)


def load_studies(out: str | Path) -> list[StudyData]:
    """Every study of ``out``, oldest run first."""
    return [load_study(out, s["id"]) for s in study_ids(out)]


def _worst_case_table(sysdoc: dict[str, Any], rows: list[str], settings: list[str], tag: str, name: str,
                      task: str) -> Table:
    """Per defense row: n, benign accuracy, robust accuracy (correct under every attack in every setting) and R1 per
    setting and on the worst case, each with its 95 % interval."""
    from sec4sr_core.study.summary import pct_ci

    label = {"non-adaptive": "NA", "adaptive": "A"}
    headers = ["Defense", "n", "A_b", "robust"] + [f"R1 {label.get(s, s)}" for s in settings] + ["R1 worst"]
    body, nums = [], []
    for d in rows:
        rob = (sysdoc.get("robust") or {}).get(d) or {}
        by = [((sysdoc.get("r1_by_setting") or {}).get(s) or {}).get(d) or {} for s in settings]
        worst = (sysdoc.get("r1_worst") or {}).get(d) or {}
        body.append([d, str(rob.get("n", "-")), pct_ci(sysdoc["benign"].get(d), (sysdoc.get("benign_ci") or {}).get(d)),
                     pct_ci(rob.get("accuracy"), rob.get("ci"))] + [pct_ci(x.get("value"), x.get("ci")) for x in by]
                    + [pct_ci(worst.get("value"), worst.get("ci"))])
        nums.append([sysdoc["benign"].get(d), rob.get("accuracy")] + [x.get("value") for x in by] + [worst.get("value")])
    return Table(f"worst-{name}-{task}", f"Worst case per utterance — {tag}", headers, body,
                 "robust (%): correct under every attack of the row in every setting (AutoAttack-style); R1 per setting "
                 "and on the worst case (harmonic mean of A_b and robust); [95 % intervals: Wilson for accuracies, "
                 "paired bootstrap over utterances for R1]", [])


def snr_table(results: list[dict[str, Any]], rows: list[str], attacks: list[str], settings: list[str], tag: str,
              name: str, task: str) -> Table:
    """Per defense row and attack/setting: the mean SNR (dB) of the saved adversarial audio with its bootstrap
    95 % interval (``numbers``: the means)."""
    from sec4sr_core.study.summary import db_ci

    cols = [(a, st) for a in attacks for st in settings]
    multi = len(settings) > 1
    headers = ["Defense"] + [f"{a} ({'A' if st == 'adaptive' else 'NA'})" if multi else a for a, st in cols]
    body, nums = [], []
    for d in rows:
        cells = [_cell(results, name, task, d, a, st) or {} for a, st in cols]
        body.append([d] + [db_ci(c.get("snr_db"), c.get("snr_db_ci")) for c in cells])
        nums.append([c.get("snr_db") for c in cells])
    return Table(f"snr-{name}-{task}", f"SNR of the adversarial audio — {tag}", headers, body,
                 "mean SNR (dB) = 10·log10(Σx² / Σ(x'−x)²) of the saved (16-bit) adversarial audio per cell, over the "
                 "utterances it changed, [95 % bootstrap interval]; non-adaptive audio is the same on every row", nums)


def study_title(data: StudyData) -> str:
    """The report's title: the study's ``name``, else ``sec4sr study — <folder name>``."""
    return data.config.name or f"sec4sr study — {data.out.name}"


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def num(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.3g}"


def _cell(results: list[dict[str, Any]], system: str, task: str, d: str, a: str, s: str) -> dict[str, Any] | None:
    for r in results:
        if (r["system"], r["task"], r["defense"], r["attack"], r["setting"]) == (system, task, d, a, s):
            return r
    return None


def _has_rows(results, system, task, setting) -> bool:
    return any(r["n"] for r in results if r["system"] == system and r["task"] == task and r["setting"] == setting)


def _acc(cell: dict[str, Any] | None) -> str:
    if cell is None or not cell["n"]:
        return "-"
    return pct(cell["adversarial_accuracy"]) + ("!" if cell.get("warnings") else "")


def study_tables(data: StudyData) -> list[Table]:
    """Every table of the report, in reading order."""
    s = data.summary
    cfg = data.config
    results = s["results"]
    rows = [r["label"] for r in data.defense_rows]
    variant = {r["label"]: bool(r.get("variant")) for r in data.defense_rows}
    tables: list[Table] = []
    for sysdoc in s["systems"]:
        name, task = sysdoc["system"], sysdoc["task"]
        tag = f"{name} · {task}"
        if _has_rows(results, name, task, "non-adaptive") or "non-adaptive" in cfg.settings:
            headers = ["Defense", "A_b"] + list(cfg.attacks) + ["R1"]
            body, nums = [], []
            for d in rows:
                cells = [_cell(results, name, task, d, a, "non-adaptive") for a in cfg.attacks]
                body.append([d, pct(sysdoc["benign"].get(d))] + [_acc(c) for c in cells] + [pct(sysdoc["r1"].get(d))])
                nums.append([sysdoc["benign"].get(d)] + [c["adversarial_accuracy"] if c else None for c in cells]
                            + [sysdoc["r1"].get(d)])
            if "non-adaptive" in cfg.settings:
                tables.append(Table(f"non-adaptive-{name}-{task}", f"Non-adaptive attacks — {tag}", headers, body,
                                    "accuracy (%): A_b benign, then A_a under each attack crafted on the undefended "
                                    "system; R1 = harmonic mean of A_b and the mean A_a", nums))
        if "adaptive" in cfg.settings:
            headers = ["Defense", "A_b"]
            for a in cfg.attacks:
                headers += [f"{a} A_a", f"{a} L2", f"{a} SNR", f"{a} PESQ"]
            body, nums = [], []
            for d in rows:
                line, nline = [d, pct(sysdoc["benign"].get(d))], [sysdoc["benign"].get(d)]
                for a in cfg.attacks:
                    c = _cell(results, name, task, d, a, "adaptive")
                    m = (c or {}).get("metrics", {})
                    line += [_acc(c), num(m.get("l2"), 3), num(m.get("snr"), 1), num(m.get("pesq"), 2)]
                    nline += [c["adversarial_accuracy"] if c else None, m.get("l2"), m.get("snr"), m.get("pesq")]
                body.append(line)
                nums.append(nline)
            tables.append(Table(f"adaptive-{name}-{task}", f"Adaptive attacks — {tag}", headers, body,
                                "A_a (%) under attacks crafted on the defended system (BPDA / EOT), with the mean L2 "
                                "distortion ([-1, 1] units), SNR (dB) and wide-band PESQ of the adversarial audio", nums))
        if sysdoc.get("robust"):
            tables.append(_worst_case_table(sysdoc, rows, list(sysdoc.get("r1_by_setting") or {}), tag, name, task))
        if cfg.attacks:
            tables.append(snr_table(results, rows, cfg.attacks, cfg.settings, tag, name, task))
        advt = [d for d in rows if variant.get(d)]
        if advt:
            cols = [(a, st) for a in cfg.attacks for st in cfg.settings]
            headers = ["Defense", "A_b"] + [f"{a} ({'A' if st == 'adaptive' else 'NA'})" for a, st in cols]
            body = []
            for d in ["none"] + advt:
                body.append([d, pct(sysdoc["benign"].get(d))]
                            + [_acc(_cell(results, name, task, d, a, st)) for a, st in cols])
            tables.append(Table(f"advt-{name}-{task}", f"Adversarially trained systems — {tag}", headers, body,
                                "AdvT rows run on the adversarially trained backbone, AdvT+X behind defense X too"))
    if data.sweep:
        tables.append(sweep_table(data))
    tables.append(cells_table(data))
    w = warnings_table(data)
    if w.rows:
        tables.append(w)
    return tables


@dataclass
class SweepLine:
    """One curve of a sweep: its value, Wilson interval and cell (system, task, defense, attack, setting, study) at
    each x (None where not run)."""

    name: str
    values: list[float | None]
    cis: list[Any]
    cells: list[dict[str, Any] | None]
    benign: bool = False


@dataclass
class SweepData:
    """The numbers of a sweep: x values (ascending), the curves, the undefended reference (name -> (value, ci)) of
    defense sweeps, the mean SNR (dB) of the undefended row at each x for attack sweeps, and the labels."""

    kind: str
    param: str
    xs: list[float]
    lines: list[SweepLine]
    reference: dict[str, tuple[float | None, Any]]
    snr: list[float | None]
    xlabel: str
    title: str


def _point(summary: dict[str, Any], sysdoc: dict[str, Any], d: str, a: str, st: str, study: str | None
           ) -> tuple[float | None, Any, dict[str, Any] | None]:
    """(value, ci, cell key) of one cell: benign accuracy, or accuracy (success rate when targeted) under attack."""
    name, task = sysdoc["system"], sysdoc["task"]
    if st == "benign":
        return sysdoc["benign"].get(d), (sysdoc.get("benign_ci") or {}).get(d), None
    c = _cell(summary["results"], name, task, d, a, st)
    if c is None or not c["n"]:
        return None, None, None
    key = {"system": name, "task": task, "defense": d, "attack": a, "setting": st, "study": study}
    if summary.get("targeted"):
        return c["success_rate"], c.get("success_rate_ci"), key
    return c["adversarial_accuracy"], c.get("accuracy_ci"), key


def _short(setting: str) -> str:
    return "A" if setting == "adaptive" else "NA"


def sweep_points(data: StudyData) -> SweepData:
    """The sweep's curves for the first system: per attack (defense sweeps), per defense row (attack sweeps) or per
    defense row and attack (EOT sweeps), each setting its own curve, with Wilson intervals."""
    sweep = data.sweep or {}
    kind = sweep.get("kind", "defense")
    s = data.summary
    sysdoc = s["systems"][0]
    cfg = data.config
    multi = len(cfg.settings) > 1
    lines: list[SweepLine] = []
    reference: dict[str, tuple[float | None, Any]] = {}
    snr: list[float | None] = []
    param = str(sweep.get("param", "?"))

    def line(name: str, pts: list[tuple[float | None, Any, dict[str, Any] | None]], benign: bool = False) -> None:
        lines.append(SweepLine(name, [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts], benign))

    if kind == "attack":
        order = sorted(sweep.get("columns", {}).items(), key=lambda kv: float(kv[1]))
        xs = [float(v) for _, v in order]
        rows = [r["label"] for r in data.defense_rows]
        for d in rows:
            for st in cfg.settings:
                line(f"{d} ({_short(st)})" if multi else d,
                     [_point(s, sysdoc, d, col, st, data.study) for col, _ in order])
        reference["benign (none)"] = (sysdoc["benign"].get("none"), (sysdoc.get("benign_ci") or {}).get("none"))
        st0 = cfg.settings[0]
        snr = [(_cell(s["results"], sysdoc["system"], sysdoc["task"], "none", col, st0) or {}).get("snr_db")
               for col, _ in order]
        xlabel, title = f"{sweep.get('attack')} {param}", f"accuracy vs {sweep.get('attack')} {param}"
    elif kind == "study":
        order = sorted(((float(v), sid) for v, sid in (sweep.get("studies") or {}).items()), key=lambda t: t[0])
        xs = [v for v, _ in order]
        docs = []
        for _, sid in order:
            other = data if sid == data.study else load_study(data.out, sid)
            docs.append((other.summary, other.summary["systems"][0], sid))
        rows = [r["label"] for r in data.defense_rows]
        for a in cfg.attacks:
            for d in rows:
                for st in cfg.settings:
                    line(f"{a} on {d}" + (f" ({_short(st)})" if multi else ""),
                         [_point(sm, sd, d, a, st, sid) for sm, sd, sid in docs])
        xlabel, title = "EOT draws", "accuracy vs EOT draws"
    else:
        order = sorted(sweep.get("rows", {}).items(), key=lambda kv: float(kv[1]))
        xs = [float(v) for _, v in order]
        line("benign", [_point(s, sysdoc, lbl, "", "benign", data.study) for lbl, _ in order], benign=True)
        reference["benign"] = (sysdoc["benign"].get("none"), (sysdoc.get("benign_ci") or {}).get("none"))
        for a in cfg.attacks:
            for st in cfg.settings:
                name = f"{a} ({_short(st)})" if multi else a
                line(name, [_point(s, sysdoc, lbl, a, st, data.study) for lbl, _ in order])
                v, ci, _ = _point(s, sysdoc, "none", a, st, data.study)
                reference[name] = (v, ci)
        xlabel = f"{sweep.get('defense')} {param}"
        title = f"accuracy vs {sweep.get('defense')} {param}"
    return SweepData(kind, param, xs, lines, reference, snr, xlabel, title)


def sweep_series(data: StudyData) -> tuple[list[float], dict[str, list[float | None]]]:
    """x values and accuracy series (name -> one value per x) of a sweep, for the first system."""
    sd = sweep_points(data)
    return sd.xs, {ln.name: ln.values for ln in sd.lines}


def _x_text(x: float) -> str:
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else f"{x:.6g}"


def sweep_table(data: StudyData) -> Table:
    """One line per swept value (and, for defense sweeps, the undefended row last): each curve's value with its
    95 % Wilson interval; attack sweeps add the mean SNR (dB) of the undefended row's adversarial audio."""
    from sec4sr_core.study.summary import pct_ci

    sweep = data.sweep or {}
    sd = sweep_points(data)
    kind = sd.kind
    what = {"attack": f"{sweep.get('attack')} {sd.param}", "study": "eot"}.get(kind, f"{sweep.get('defense')} {sd.param}")
    headers = [what] + [ln.name for ln in sd.lines] + (["SNR dB (none)"] if kind == "attack" else [])
    body, nums = [], []
    for i, x in enumerate(sd.xs):
        body.append([_x_text(x)] + [pct_ci(ln.values[i], ln.cis[i]) for ln in sd.lines]
                    + ([num(sd.snr[i], 1)] if kind == "attack" else []))
        nums.append([ln.values[i] for ln in sd.lines])
    if kind == "defense":  # the undefended row, always present
        body.append(["none"] + [pct_ci(*sd.reference.get(ln.name, (None, None))) for ln in sd.lines])
    title = {"attack": f"Sweep of {sweep.get('attack')} over {sd.param}", "study": "Sweep over EOT draws"}.get(
        kind, f"Sweep of {sweep.get('defense')} over {sd.param}")
    note = {"attack": "accuracy (%) [95 % Wilson interval] under the attack at each value, per defense row ('none' "
                      "is the undefended system); SNR of the undefended row's adversarial audio",
            "study": "accuracy (%) [95 % Wilson interval] per attack and defense row against the number of EOT draws "
                     "(one study per value)"}.get(
        kind, "accuracy (%) [95 % Wilson interval] against the defense parameter (the paper's tuning curves); the "
              f"last line 'none' is the undefended system: A_b {pct(data.summary['systems'][0]['benign'].get('none'))}")
    return Table("sweep", title, headers, body, note, nums)


CELL_HEADERS = ["system", "task", "defense", "attack", "setting", "knowledge", "n", "A_b", "A_a", "R1",
                "success_rate", "queries", "time_s", "l2", "linf", "snr", "snr_lo", "snr_hi", "pesq", "stoi",
                "warnings"]


def cells_table(data: StudyData) -> Table:
    s = data.summary
    r1 = {(d["system"], d["task"]): d["r1"] for d in s["systems"]}
    body = []
    for r in s["results"]:
        m = r.get("metrics", {})
        row_r1 = r1.get((r["system"], r["task"]), {}).get(r["defense"]) if r["setting"] == "non-adaptive" else None
        body.append([
            r["system"], r["task"], r["defense"], r["attack"], r["setting"], r.get("knowledge") or "", str(r["n"]),
            pct(r["benign_accuracy"]), pct(r["adversarial_accuracy"]), pct(row_r1), pct(r["success_rate"]),
            num(r["mean_queries"], 1), num(r["mean_time_s"], 3), num(m.get("l2"), 4), num(m.get("linf"), 5),
            num(r.get("snr_db", m.get("snr")), 2), num((r.get("snr_db_ci") or (None, None))[0], 2),
            num((r.get("snr_db_ci") or (None, None))[1], 2), num(m.get("pesq"), 3), num(m.get("stoi"), 3),
            ";".join(f"{k}={v}" for k, v in sorted((r.get("warnings") or {}).items())),
        ])
    return Table("cells", "All cells", CELL_HEADERS, body,
                 "per (system, task, defense, attack, setting): accuracies (%), success rate (%), mean queries and "
                 "seconds per example, mean distortion metrics, warning counts")


def warnings_table(data: StudyData) -> Table:
    body = []
    for sysdoc in data.summary["systems"]:
        for w in sysdoc.get("benign_warnings") or []:
            code = next((c for c in _codes() if w["message"].startswith(_code_message(c))), "")
            body.append([f"{sysdoc['system']} · {sysdoc['task']}", w["defense"], "", "benign", code, "", w["message"]])
    for r in data.summary["results"]:
        for msg in r.get("warning_messages") or []:
            code = next((c for c in (r.get("warnings") or {}) if msg.startswith(_code_message(c))), "")
            body.append([f"{r['system']} · {r['task']}", r["defense"], r["attack"], r["setting"], code,
                         str((r.get("warnings") or {}).get(code, "")), msg])
    return Table("warnings", "Reliability warnings", ["system", "defense", "attack", "setting", "code", "rows",
                                                      "message"], body,
                 "automatic checks of the evaluation's reliability (see docs/studies.md)")


def _codes() -> list[str]:
    from sec4sr_core.study.reliability import CODES

    return list(CODES)


def _code_message(code: str) -> str:
    from sec4sr_core.study.reliability import CODES

    return CODES.get(code, "\0")
