"""Reports of a study output folder: Markdown, CSV, and one self-contained HTML file.

``sec4sr report OUT --format md|html|csv`` renders them; from Python, :func:`render` returns the text and
:func:`write_report` writes it. The HTML report embeds its plots as base64 PNG data URIs and a few benign /
adversarial / defended examples as base64 WAV data URIs in ``<audio controls>``, so it is one file to send around.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import Sec4srError
from .tables import StudyData, Table, load_study, study_tables

FORMATS = ("md", "html", "csv")

__all__ = ["FORMATS", "StudyData", "Table", "heatmaps", "load_study", "render", "study_tables", "write_report"]


def heatmaps(data: StudyData) -> list[tuple[str, bytes]]:
    """(title, PNG) heat maps of A_a over defenses × attacks, one per system (both settings side by side)."""
    from .plots import heatmap
    from .tables import _cell

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
    if not data.sweep:
        return None
    from .plots import sweep_plot
    from .tables import sweep_series

    xs, series = sweep_series(data)
    sw = data.sweep
    return sweep_plot(xs, series, f"{sw.get('defense')} {sw.get('param')}",
                      f"accuracy vs {sw.get('defense')} {sw.get('param')}")


def _title(data: StudyData) -> str:
    return data.config.name or f"sec4sr study — {data.out.name}"


def render_md(data: StudyData) -> str:
    lines = [f"# {_title(data)}", ""]
    s = data.summary
    lines.append(f"dataset `{s['dataset']}` · seed {s['seed']}" + (" · targeted" if s.get("targeted") else "")
                 + " · versions " + ", ".join(f"{k} {v}" for k, v in (s.get("versions") or {}).items()))
    lines.append("")
    for t in study_tables(data):
        lines += [f"## {t.title}", ""]
        if t.note:
            lines += [f"_{t.note}_", ""]
        lines.append("| " + " | ".join(t.headers) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(t.headers))) + "|")
        for row in t.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        lines.append("")
    return "\n".join(lines)


def render_csv(data: StudyData) -> str:
    from .tables import cells_table

    t = cells_table(data)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t.headers)
    w.writerows(t.rows)
    return buf.getvalue()


def render(out: str | Path, fmt: str = "md") -> str:
    """The report of output folder ``out`` as text in ``fmt`` (md, html or csv)."""
    if fmt not in FORMATS:
        raise Sec4srError(f"unknown report format {fmt!r} (choose {', '.join(FORMATS)})")
    data = load_study(out)
    if fmt == "md":
        return render_md(data)
    if fmt == "csv":
        return render_csv(data)
    from .html import render_html

    return render_html(data)


def write_report(out: str | Path, fmt: str = "html", output: str | Path | None = None) -> Path:
    """Write the report of ``out`` (default file: ``<out>/report.<fmt>``) and return its path."""
    text = render(out, fmt)
    path = Path(output) if output else Path(out) / f"report.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
