"""A study's results as documents: the JSON summary of ``sec4sr run --json`` and the readable table. Torch-free, so
``sec4sr report`` and other readers of a store start quickly."""

from __future__ import annotations

from typing import Any

from sec4sr_core.base.types import Task
from sec4sr_core.study import reliability
from sec4sr_core.study.config import StudyConfig, _default_label
from sec4sr_core.study.stats import aggregate, bootstrap_ci, finite, mean, proportion, r1
from sec4sr_core.study.store import ResultStore


def summarize(
    store: ResultStore, config: StudyConfig, system_label: str | None = None, enrollment: Any = None,
    study: str | None = None,
) -> dict[str, Any]:
    """The JSON document of ``sec4sr run --json``: one entry per (system, defense, attack, setting) cell, counting
    only the rows of ``study`` (default: the study run last into the store).

    ``benign`` (defense -> A_b), ``system`` and ``task`` describe the first system (or ``system_label``);
    ``systems`` lists every system with its benign accuracies and R1 per defense row."""
    study = study or store.latest_study()
    defenses = ["none"] + list(config.defenses)

    knowledge = store.study_value(study, "attacks", {})
    enrollments = store.study_value(study, "enrollment", {})
    specs = config.system_specs()
    labelled = [(s.label or _default_label(s, config.dataset), Task(s.task).value) for s in specs]
    if system_label is not None:
        labelled = [x for x in labelled if x[0] == system_label] or [(system_label, Task(config.task).value)]
    results: list[dict[str, Any]] = []
    systems_doc = []
    for label, task in labelled:
        benign: dict[str, float | None] = {}
        benign_ci: dict[str, Any] = {}
        benign_n: dict[str, int] = {}
        benign_warnings: list[dict[str, str]] = []  # system-level checks stored on benign rows (benchmark-too-easy)
        correct: dict[tuple[str, str, str], dict[str, int]] = {}  # cell -> utterance -> correct
        for d in defenses:
            rows = store.rows("WHERE system=? AND task=? AND defense=? AND setting='benign'", (label, task, d),
                              study=study)
            benign[d] = mean(r["correct"] for r in rows)
            pr = proportion(r["correct"] for r in rows)
            benign_ci[d], benign_n[d] = pr["ci"], pr["n"]
            correct[(d, "", "benign")] = _per_utterance(rows)
            benign_warnings += [{"defense": d, "message": m} for m in sorted(
                {w["message"] for r in rows for w in (r["warnings"] or []) if isinstance(w, dict)})]
        r1s: dict[str, float | None] = {}
        for d in defenses:
            accs = []
            for a in config.attacks:
                for s in config.settings:
                    rows = store.rows(
                        "WHERE system=? AND task=? AND defense=? AND attack=? AND setting=?", (label, task, d, a, s),
                        study=study,
                    )
                    agg = aggregate(rows)
                    correct[(d, a, s)] = _per_utterance(rows)
                    warn_counts = reliability.count(rows)
                    messages = sorted({w["message"] for r in rows for w in (r["warnings"] or []) if isinstance(w, dict)})
                    results.append({
                        "system": label, "task": task, "defense": d, "attack": a, "setting": s,
                        "knowledge": knowledge.get(a),
                        "n": agg["n"],
                        "benign_accuracy": benign[d],
                        "adversarial_accuracy": agg["accuracy"],
                        "accuracy_ci": proportion(r["correct"] for r in rows)["ci"],
                        "success_rate": agg["success_rate"],
                        "success_rate_ci": proportion(r["success"] for r in rows)["ci"],
                        "mean_queries": agg["mean_queries"],
                        "mean_time_s": agg["mean_time_s"],
                        "metrics": {k: v for k, v in agg["metrics"].items() if k != "attack_success"},
                        **_snr(rows, config.seed),
                        "warnings": warn_counts,
                        "warning_messages": messages,
                    })
                    if s == "non-adaptive":
                        accs.append(agg["accuracy"])
            r1s[d] = r1(benign[d], accs) if accs else None
        entry = {"system": label, "task": task, "benign": benign, "benign_ci": benign_ci, "benign_n": benign_n,
                 "r1": r1s,
                 "benign_warnings": benign_warnings,
                 **_robustness(defenses, config.attacks, config.settings, correct, config.seed)}
        checks = [c for c in (store.study_value(study, "benchmark_check", {}) or {}).values()
                  if c.get("system") == label and c.get("task") == task]
        if checks:
            entry["benchmark_check"] = {k: checks[-1][k] for k in ("model", "n", "accuracy", "random_accuracy")}
        if f"{label}|{task}" in enrollments:
            entry.update(enrollments[f"{label}|{task}"])
        systems_doc.append(entry)
    first = systems_doc[0]
    doc: dict[str, Any] = {
        "name": config.name,
        "system": first["system"], "task": first["task"], "dataset": config.dataset, "seed": config.seed,
        "targeted": config.targeted, "out": str(config.out), "benign": first["benign"], "r1": first["r1"],
        "systems": systems_doc, "results": results, "versions": store.study_value(study, "versions", {}),
        "failures": len(store.failures(study)), "study": study,
    }
    if enrollment is not None:
        doc["thresholds"] = enrollment.thresholds
        doc["eer"] = enrollment.eer
    elif "thresholds" in first:
        doc["thresholds"] = first["thresholds"]
        doc["eer"] = first["eer"]
    return doc


def _snr(rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Mean SNR (dB) of a cell's saved adversarial audio with its bootstrap 95 % interval, over the utterances the
    attack changed (SNR = +inf where it left the audio unchanged; ``snr_unchanged`` counts those)."""
    values = [(r.get("metrics") or {}).get("snr") for r in rows]
    vals = finite(values)
    unchanged = sum(1 for v in values if v is not None and _is_pos_inf(v))
    return {"snr_db": mean(vals), "snr_db_ci": bootstrap_ci(lambda v: mean(v), [vals], seed=seed) if vals else None,
            "snr_n": len(vals), "snr_unchanged": unchanged}


def _is_pos_inf(v: Any) -> bool:
    try:
        return float(v) == float("inf")
    except (TypeError, ValueError):
        return False


def _per_utterance(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {r["utterance"]: int(r["correct"]) for r in rows if r.get("correct") is not None}


def _robustness(defenses: list[str], attacks: list[str], settings: list[str],
                correct: dict[tuple[str, str, str], dict[str, int]], seed: int) -> dict[str, Any]:
    """Worst case per utterance (AutoAttack-style) and R1 with intervals, per defense row.

    ``robust``: an utterance counts only when it is correct benign and under every attack of its row in every
    setting (over the utterances that have all those rows), with its Wilson interval. ``r1_by_setting``: R1 from
    the attack columns of each setting alone; ``r1_worst``: the harmonic mean of benign and robust accuracy. R1
    intervals are paired bootstraps over utterances (seeded by the study seed)."""
    robust: dict[str, Any] = {}
    r1_by_setting: dict[str, dict[str, Any]] = {s: {} for s in settings}
    r1_worst: dict[str, Any] = {}
    for d in defenses:
        ben = correct.get((d, "", "benign"), {})
        cells = {(a, s): correct.get((d, a, s), {}) for a in attacks for s in settings}
        if not attacks:
            continue
        utts = [u for u in ben if all(u in c for c in cells.values())]
        worst = [int(ben[u] and all(c[u] for c in cells.values())) for u in utts]
        pr = proportion(worst)
        robust[d] = {"n": pr["n"], "accuracy": pr["value"], "ci": pr["ci"]}
        b = [ben[u] for u in utts]
        r1_worst[d] = {"value": r1(mean(b), [pr["value"]]) if utts else None,
                       "ci": bootstrap_ci(lambda bb, ww: r1(mean(bb), [mean(ww)]), [b, worst], seed=seed)}
        for s in settings:
            cols = [[cells[(a, s)][u] for u in utts] for a in attacks]
            value = r1(mean(b), [mean(c) for c in cols]) if utts else None
            ci = bootstrap_ci(lambda bb, *cc: r1(mean(bb), [mean(c) for c in cc]), [b, *cols], seed=seed)
            r1_by_setting[s][d] = {"value": value, "ci": ci}
    return {"robust": robust, "r1_by_setting": r1_by_setting, "r1_worst": r1_worst}


def format_table(summary: dict[str, Any]) -> str:
    """The readable results table per system: rows = defenses; columns = benign accuracy, accuracy (success rate
    for targeted studies) under each attack (NA = non-adaptive, A = adaptive), ``robust`` (correct under every
    attack of the row in every setting), R1 per setting and on the worst case; each with its 95 % interval
    (Wilson for accuracies, paired bootstrap for R1) and the number of trials; then the reliability warnings."""
    out: list[str] = []
    systems = summary.get("systems") or [{"system": summary["system"], "task": summary["task"],
                                          "benign": summary["benign"], "r1": summary.get("r1", {})}]
    targeted = bool(summary.get("targeted"))
    for sysdoc in systems:
        res = [r for r in summary["results"] if r.get("system", sysdoc["system"]) == sysdoc["system"]
               and r.get("task", sysdoc["task"]) == sysdoc["task"]]
        cols: list[tuple[str, str]] = []
        for r in res:
            key = (r["attack"], r["setting"])
            if key not in cols:
                cols.append(key)
        settings = list(dict.fromkeys(s for _, s in cols))
        multi = len(settings) > 1
        robust = sysdoc.get("robust") or {}
        by_setting = sysdoc.get("r1_by_setting") or {}
        worst = sysdoc.get("r1_worst") or {}
        has_r1 = bool(cols) and not targeted
        headers = ["defense", "benign"] + [f"{a} ({'A' if s == 'adaptive' else 'NA'})" if multi else a
                                           for a, s in cols]
        if cols:
            headers.append("robust")
        if has_r1:
            headers += [f"R1 {'A' if s == 'adaptive' else 'NA'}" if multi else "R1" for s in settings] + ["R1 worst"]
        lines = []
        ns: set[int] = set()
        for d, acc in sysdoc["benign"].items():
            cells = [d, pct_ci(acc, (sysdoc.get("benign_ci") or {}).get(d))]
            for a, s in cols:
                hit = next((r for r in res if r["defense"] == d and r["attack"] == a and r["setting"] == s), None)
                mark = "!" if hit and hit.get("warnings") else ""
                if hit is None:
                    cells.append("-")
                    continue
                ns.add(int(hit.get("n") or 0))
                value, ci = ((hit["success_rate"], hit.get("success_rate_ci")) if targeted
                             else (hit["adversarial_accuracy"], hit.get("accuracy_ci")))
                cells.append(pct_ci(value, ci) + mark)
            if cols:
                rob = robust.get(d) or {}
                cells.append(pct_ci(rob.get("accuracy"), rob.get("ci")))
            if has_r1:
                for s in settings:
                    r1d = (by_setting.get(s) or {}).get(d) or {}
                    cells.append(pct_ci(r1d.get("value"), r1d.get("ci")))
                w = worst.get(d) or {}
                cells.append(pct_ci(w.get("value"), w.get("ci")))
            lines.append(cells)
        widths = [max(len(str(row[i])) for row in [headers] + lines) for i in range(len(headers))]
        fmt = "  ".join("{:<%d}" % widths[0] if i == 0 else "{:>%d}" % w for i, w in enumerate(widths))
        if out:
            out.append("")
        n_text = ("  n " + "/".join(str(n) for n in sorted(ns)) + " trials per cell") if ns else ""
        what = "success rate (%) of each targeted attack" if targeted else "accuracy (%) — benign, under each attack"
        out += [f"system {sysdoc['system']}  task {sysdoc['task']}  dataset {summary['dataset']}  seed {summary['seed']}"
                + ("  targeted" if targeted else "") + n_text,
                f"{what}, robust (correct under every attack of its row) and R1, with [95 % intervals]:",
                fmt.format(*headers), fmt.format(*["-" * w for w in widths])]
        out += [fmt.format(*row) for row in lines]
        bc = sysdoc.get("benchmark_check")
        if bc:
            out.append(f"benchmark check: {bc['model']} with random weights {_pct(bc['random_accuracy'])} % benign "
                       f"on the same {bc['n']} trials (trained {_pct(bc['accuracy'])} %)")
        if cols:
            out += [""] + snr_lines(res, list(sysdoc["benign"]), cols, multi)
    flagged = [r for r in summary["results"] if r.get("warnings")]
    system_flags = [(s, w) for s in systems for w in s.get("benign_warnings") or []]
    if flagged or system_flags:
        out.append("")
        out.append("! reliability warnings:")
        for s, w in system_flags:
            out.append(f"  {s['system']} · {s['task']} / {w['defense']} (benign): {w['message']}")
        for r in flagged:
            for msg in r.get("warning_messages") or sorted(r["warnings"]):
                out.append(f"  {r['defense']} / {r['attack']} ({r['setting']}): {msg}")
    return "\n".join(out)


def snr_lines(results: list[dict[str, Any]], defenses: list[str], cols: list[tuple[str, str]], multi: bool) -> list[str]:
    """The mean SNR (dB) of each cell's saved adversarial audio, with its bootstrap 95 % interval, as table lines."""
    headers = ["defense"] + [f"{a} ({'A' if s == 'adaptive' else 'NA'})" if multi else a for a, s in cols]
    lines = []
    for d in defenses:
        cells = [d]
        for a, s in cols:
            hit = next((r for r in results if r["defense"] == d and r["attack"] == a and r["setting"] == s), None)
            cells.append(db_ci((hit or {}).get("snr_db"), (hit or {}).get("snr_db_ci")))
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [headers] + lines) for i in range(len(headers))]
    fmt = "  ".join("{:<%d}" % widths[0] if i == 0 else "{:>%d}" % w for i, w in enumerate(widths))
    return (["mean SNR (dB) of the saved adversarial audio, with [95 % bootstrap intervals]:", fmt.format(*headers),
             fmt.format(*["-" * w for w in widths])] + [fmt.format(*row) for row in lines])


def db_ci(v: float | None, ci: Any) -> str:
    """``31.2 [29.8-32.5]``: a value in dB with its interval (the value alone without one)."""
    if v is None:
        return "-"
    if not ci:
        return f"{v:.1f}"
    return f"{v:.1f} [{ci[0]:.1f}-{ci[1]:.1f}]"


def pct_ci(v: float | None, ci: Any) -> str:
    """``62.5 [31-86]``: a percentage with its interval in whole percent (the value alone without one)."""
    if v is None:
        return "-"
    if not ci:
        return _pct(v)
    lo, hi = ci
    return f"{100 * v:.1f} [{100 * lo:.0f}-{100 * hi:.0f}]"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"
