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


def load_study(out: str | Path, study: str | None = None) -> StudyData:
    """One study of ``<out>/results.sqlite`` (default: the study run last; a Sec4srError if ``out`` is not a study
    output folder or has no study ``study``)."""
    from sec4sr_core.study.config import StudyConfig
    from sec4sr_core.study.summary import summarize

    out = Path(out)
    with _open_store(out) as store:
        known = [s["id"] for s in store.studies()]
        if study is not None and study not in known:
            import difflib

            close = [k for k in known if k.startswith(study)] or difflib.get_close_matches(study, known, n=3)
            if len(close) == 1 and close[0].startswith(study):
                study = close[0]
            else:
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise Sec4srError(f"{out} has no study {study!r}; {hint}its studies: {', '.join(known) or 'none'} "
                                  f"(`sec4sr report {out} --list`)")
        study = study or store.latest_study()
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


def sweep_series(data: StudyData) -> tuple[list[float], dict[str, list[float | None]]]:
    """x values and accuracy series (``benign`` and one per attack/setting) of a sweep, for the first system."""
    sweep = data.sweep or {}
    s = data.summary
    sysdoc = s["systems"][0]
    name, task = sysdoc["system"], sysdoc["task"]
    order = sorted(sweep.get("rows", {}).items(), key=lambda kv: float(kv[1]))
    xs = [float(v) for _, v in order]
    series: dict[str, list[float | None]] = {"benign": [sysdoc["benign"].get(lbl) for lbl, _ in order]}
    multi = len(data.config.settings) > 1
    for a in data.config.attacks:
        for st in data.config.settings:
            key = f"{a} ({'A' if st == 'adaptive' else 'NA'})" if multi else a
            series[key] = [(_cell(s["results"], name, task, lbl, a, st) or {}).get("adversarial_accuracy")
                           for lbl, _ in order]
    return xs, series


def sweep_table(data: StudyData) -> Table:
    sweep = data.sweep or {}
    xs, series = sweep_series(data)
    headers = [f"{sweep.get('defense', '?')} {sweep.get('param', '?')}"] + list(series)
    body = []
    for i, x in enumerate(xs):
        body.append([num(x, 6).rstrip("0").rstrip(".") if x != int(x) else str(int(x))]
                    + [pct(v[i]) for v in series.values()])
    return Table("sweep", f"Sweep of {sweep.get('defense')} over {sweep.get('param')}", headers, body,
                 "accuracy (%) against the defense parameter (the paper's tuning curves); 'none' is the undefended "
                 f"system: A_b {pct(data.summary['systems'][0]['benign'].get('none'))}")


CELL_HEADERS = ["system", "task", "defense", "attack", "setting", "knowledge", "n", "A_b", "A_a", "R1",
                "success_rate", "queries", "time_s", "l2", "linf", "snr", "pesq", "stoi", "warnings"]


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
            num(m.get("snr"), 2), num(m.get("pesq"), 3), num(m.get("stoi"), 3),
            ";".join(f"{k}={v}" for k, v in sorted((r.get("warnings") or {}).items())),
        ])
    return Table("cells", "All cells", CELL_HEADERS, body,
                 "per (system, task, defense, attack, setting): accuracies (%), success rate (%), mean queries and "
                 "seconds per example, mean distortion metrics, warning counts")


def warnings_table(data: StudyData) -> Table:
    body = []
    for r in data.summary["results"]:
        for msg in r.get("warning_messages") or []:
            code = next((c for c in (r.get("warnings") or {}) if msg.startswith(_code_message(c))), "")
            body.append([f"{r['system']} · {r['task']}", r["defense"], r["attack"], r["setting"], code,
                         str((r.get("warnings") or {}).get(code, "")), msg])
    return Table("warnings", "Reliability warnings", ["system", "defense", "attack", "setting", "code", "rows",
                                                      "message"], body,
                 "automatic checks of the evaluation's reliability (see docs/studies.md)")


def _code_message(code: str) -> str:
    from sec4sr_core.study.reliability import CODES

    return CODES.get(code, "\0")
