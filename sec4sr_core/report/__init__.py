"""Reports of a study output folder: Markdown, CSV, and one self-contained HTML file.

``sec4sr report OUT --format md|html|csv`` renders them; from Python, :func:`render` returns the text and
:func:`write_report` writes it. The HTML report embeds its plots as base64 PNG data URIs and a few benign /
adversarial / defended examples as base64 WAV data URIs in ``<audio controls>``, so it is one file to send around.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.report.figures import heatmaps, sweep_png
from sec4sr_core.report.html import CSS, render_html
from sec4sr_core.report.tables import (StudyData, Table, cells_table, load_studies, load_study, study_ids,
                                       study_tables, study_title)

FORMATS = ("md", "html", "csv")

__all__ = ["FORMATS", "StudyData", "Table", "heatmaps", "load_studies", "load_study", "render", "study_ids",
           "study_tables", "study_title", "sweep_png", "write_report"]


def render_md(data: StudyData, level: int = 1) -> str:
    h = "#" * level
    lines = [f"{h} {study_title(data)}", ""]
    s = data.summary
    lines.append(f"dataset `{s['dataset']}` · seed {s['seed']}" + (" · targeted" if s.get("targeted") else "")
                 + (f" · study `{data.study}`" if data.study else "")
                 + " · versions " + ", ".join(f"{k} {v}" for k, v in (s.get("versions") or {}).items()))
    lines.append("")
    for t in study_tables(data):
        lines += [f"{h}# {t.title}", ""]
        if t.note:
            lines += [f"_{t.note}_", ""]
        lines.append("| " + " | ".join(t.headers) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(t.headers))) + "|")
        for row in t.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        lines.append("")
    return "\n".join(lines)


def render_csv(datas: list[StudyData]) -> str:
    """One CSV of every cell of every study (a ``study`` column first when there are several)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    several = len(datas) > 1
    for i, data in enumerate(datas):
        t = cells_table(data)
        if i == 0:
            w.writerow((["study"] if several else []) + t.headers)
        w.writerows([([data.study] if several else []) + row for row in t.rows])
    return buf.getvalue()


def render(out: str | Path, fmt: str = "md", study: str | None = None) -> str:
    """The report of output folder ``out`` as text in ``fmt`` (md, html or csv): every study stored there (each with
    its configuration), or the one ``study`` names (an id or its prefix)."""
    if fmt not in FORMATS:
        raise Sec4srError(f"unknown report format {fmt!r} (choose {', '.join(FORMATS)})")
    datas = [load_study(out, study)] if study else load_studies(out)
    if not datas and fmt != "csv" and _has_certification(out):  # a folder of `sec4sr certify` alone
        from sec4sr_core.report import certify

        certified = certify.load(out)
        if fmt == "md":
            return certify.markdown(certified)
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Certified accuracy</title>"
                f"<style>{CSS}</style></head><body>\n{certify.html_fragment(certified)}\n</body></html>\n")
    if not datas:
        datas = [load_study(out)]
    if fmt == "csv":
        return render_csv(datas)
    certified = None
    if _has_certification(out):  # the folder's `sec4sr certify` run (its module imports torch: only then)
        from sec4sr_core.report import certify

        certified = certify.load(out)
    if fmt == "html":
        text = render_html(datas)
        if certified is None:
            return text
        from sec4sr_core.report import certify

        fragment = certify.html_fragment(certified)
        return text.replace("\n</body></html>", "\n" + fragment + "\n</body></html>") if fragment else text
    if len(datas) == 1:
        text = render_md(datas[0])
    else:
        head = [f"# {len(datas)} studies in {Path(out)}", "",
                *(f"- `{d.study}` — {study_title(d)}: {_config_line(d)}" for d in datas), ""]
        text = "\n".join(head) + "\n" + "\n\n".join(render_md(d, level=2) for d in datas)
    if certified is None:
        return text
    from sec4sr_core.report import certify

    return text + "\n\n" + certify.markdown(certified)


def _has_certification(out: str | Path) -> bool:
    """Whether ``out/results.sqlite`` holds a certification run (tables of ``sec4sr certify``), read without torch."""
    import sqlite3

    path = Path(out) / "results.sqlite"
    if not path.is_file():
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        try:
            return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'certify_runs'"
                                ).fetchone() is not None
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def _config_line(data: StudyData) -> str:
    """The configuration of a study in one line (what tells studies of one folder apart)."""
    c = data.config
    parts = [f"seed {c.seed}", f"dataset {c.dataset}", f"limit {c.limit}", f"length {c.length_s} s",
             f"eot {c.eot}", f"order {c.defense_order}", "attacks " + ", ".join(c.attacks or ["-"]),
             "defenses " + ", ".join(c.defenses or ["-"]), "settings " + ", ".join(c.settings)]
    return " · ".join(parts)


def write_report(out: str | Path, fmt: str = "html", output: str | Path | None = None,
                 study: str | None = None) -> Path:
    """Write the report of ``out`` (default file: ``<out>/report.<fmt>``) and return its path: every study, or
    ``study`` alone."""
    text = render(out, fmt, study)
    path = Path(output) if output else Path(out) / f"report.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
