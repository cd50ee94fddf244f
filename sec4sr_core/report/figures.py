"""The report's figures as PNG bytes, from a loaded study: the A_a heat maps and the sweep's tuning curves.

Shared by the Markdown/HTML renderers (:mod:`sec4sr_core.report.html`) and ``sec4sr sweep``; it depends only on
:mod:`~sec4sr_core.report.tables` (the numbers) and :mod:`~sec4sr_core.report.plots` (matplotlib, imported when a
figure is drawn), so the package ``__init__`` and ``html`` import it without importing each other.
"""

from __future__ import annotations

from sec4sr_core.report.tables import StudyData, _cell, sweep_points


def heatmaps(data: StudyData) -> list[tuple[str, bytes]]:
    """(title, PNG) heat maps of A_a (%) over defenses × attacks, one per system (both settings side by side)."""
    from sec4sr_core.report.plots import heatmap

    out = []
    cfg = data.config
    rows = [r["label"] for r in data.defense_rows]
    multi = len(cfg.settings) > 1
    for sysdoc in data.summary["systems"]:
        cols, values = [], []
        for a in cfg.attacks:
            for st in cfg.settings:
                cols.append(f"{a} ({'A' if st == 'adaptive' else 'NA'})" if multi else a)
        for d in rows:
            line = []
            for a in cfg.attacks:
                for st in cfg.settings:
                    c = _cell(data.summary["results"], sysdoc["system"], sysdoc["task"], d, a, st)
                    line.append(c["adversarial_accuracy"] if c and c["n"] else None)
            values.append(line)
        if not cols:
            continue
        title = f"A_a (%) — {sysdoc['system']} · {sysdoc['task']}"
        out.append((title, heatmap(values, rows, cols, title)))
    return out


def sweep_png(data: StudyData) -> bytes | None:
    """The sweep's accuracy-against-parameter plot as PNG bytes, with 95 % Wilson bands and the undefended
    reference (None when the study is not a sweep)."""
    if not data.sweep:
        return None
    from sec4sr_core.report.plots import sweep_plot

    sd = sweep_points(data)
    return sweep_plot(sd.xs, {ln.name: ln.values for ln in sd.lines}, sd.xlabel, sd.title,
                      bands={ln.name: ln.cis for ln in sd.lines}, reference=sd.reference)
