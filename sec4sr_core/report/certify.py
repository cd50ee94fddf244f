"""The certification report: certified accuracy against L2 radius (and the same radius as SNR in dB) as a Markdown
table, a PNG curve (matplotlib, Agg) and a self-contained HTML fragment; from a
:class:`~sec4sr_core.study.certify.CertifyResult` or from ``<out>/results.sqlite``.

Hook for the main HTML report: ``html_fragment(load(out))`` returns one ``<section>`` (or ``""`` when the folder
holds no certification run)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Sequence

from sec4sr_core.report.plots import _png, _pyplot
from sec4sr_core.study.certify import (
    CertifyResult, TrialRecord, accuracy_at_snr, certified_accuracy, default_radii, stored_records,
)


def load(out: str | Path, radii: Sequence[float] | None = None) -> CertifyResult | None:
    """The latest certification run stored in ``out`` (None when there is none)."""
    path = Path(out) / "results.sqlite"
    if not path.exists():
        return None
    config, records = stored_records(out)
    if config is None or not records:
        return None
    radii = list(radii) if radii is not None else default_radii(config["sigma"], config["n"], config["alpha"])
    return CertifyResult("", config, records, 0, 0.0, radii)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _snr(v: float | None) -> str:
    if v is None:
        return "-"
    return "∞" if math.isinf(v) else f"{v:.1f}"


def table_rows(result: CertifyResult, confidence: float = 0.95) -> list[list[str]]:
    """Header + one row per radius: radius (L2), median SNR (dB), certified accuracy % [CP lo, hi], abstentions."""
    rows = [["radius (L2)", "SNR (dB, median)", "certified acc. (%)", f"{int(100 * confidence)}% CP interval",
             "abstained"]]
    for r in certified_accuracy(result.records, result.radii, confidence):
        rows.append([f"{r['radius']:.4g}", _snr(r["snr_db"]), f"{_pct(r['accuracy'])} ({r['certified']}/{r['trials']})",
                     f"[{_pct(r['lo'])}, {_pct(r['hi'])}]", f"{r['abstained']}/{r['trials']}"])
    return rows


def _heading(result: CertifyResult) -> str:
    c = result.config
    med = result.median_snr_db()
    return (f"{c['model']} · {c['task']} · {c['defense']} · σ = {c['sigma']:g} · n0 = {c['n0']}, n = {c['n']}, "
            f"α = {c['alpha']:g} · {len(result.records)} trials · median certified radius "
            f"{_snr(med)} dB SNR")


def markdown(result: CertifyResult, confidence: float = 0.95) -> str:
    """The certification table in Markdown, with a heading line."""
    rows = table_rows(result, confidence)
    lines = ["## Certified accuracy", "", _heading(result), "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def text(result: CertifyResult, confidence: float = 0.95) -> str:
    """The table as aligned plain text (what ``sec4sr certify`` prints)."""
    rows = table_rows(result, confidence)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [_heading(result)]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in rows]
    return "\n".join(lines) + "\n"


def curve_png(records: Sequence[TrialRecord], title: str = "") -> bytes:
    """Two panels: certified accuracy (%) against L2 radius, and against the radius as SNR (dB) per utterance."""
    import numpy as np

    plt = _pyplot()
    radii = sorted(r.radius for r in records if not r.abstained and r.correct)
    top = max(radii) if radii else 1.0
    xs = np.linspace(0.0, top * 1.05 if top > 0 else 1.0, 200)
    acc = [row["accuracy"] * 100 for row in certified_accuracy(records, xs.tolist())]
    snrs = [r.snr_db for r in records if r.snr_db is not None]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    a1.step(xs, acc, where="post", color="#1f77b4")
    a1.set_xlabel("L2 radius (amplitude units)")
    a1.set_ylabel("certified accuracy (%)")
    a1.set_ylim(0, 100)
    a1.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    a1.grid(alpha=0.3)
    if snrs:
        grid = np.linspace(min(snrs) - 1.0, max(snrs) + 5.0, 200)
        a2.step(grid, [100 * v for v in accuracy_at_snr(records, grid.tolist())], where="post", color="#d62728")
    a2.set_xlabel("certified radius as SNR (dB); right = weaker perturbation")
    a2.set_ylim(0, 100)
    a2.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    return _png(fig)


def html_fragment(result: CertifyResult | None, confidence: float = 0.95) -> str:
    """A self-contained ``<section>``: heading, table and the inlined curve ("" when ``result`` is None)."""
    if result is None:
        return ""
    rows = table_rows(result, confidence)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    png = base64.b64encode(curve_png(result.records)).decode()
    return (f'<section id="certify"><h2>Certified accuracy (randomized smoothing)</h2>'
            f"<p>{html.escape(_heading(result))}</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            f'</table><img alt="certified accuracy against L2 radius and SNR" src="data:image/png;base64,{png}">'
            f"</section>")


def write(out: str | Path, result: CertifyResult, confidence: float = 0.95) -> dict[str, Path]:
    """Write ``certify.md``, ``certify.png`` and ``certify.html`` (the fragment) into ``out``; their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "certify.md", "png": out / "certify.png", "html": out / "certify.html"}
    paths["markdown"].write_text(markdown(result, confidence), encoding="utf-8")
    paths["png"].write_bytes(curve_png(result.records, _heading(result)))
    paths["html"].write_text(html_fragment(result, confidence), encoding="utf-8")
    return paths


def summary(result: CertifyResult, confidence: float = 0.95) -> dict[str, Any]:
    """A JSON-able document of the run: config, the table rows and the median certified SNR (an infinite SNR, at
    radius 0, is null)."""
    table = [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in row.items()}
             for row in certified_accuracy(result.records, result.radii, confidence)]
    return {"run": result.run, "config": result.config, "trials": len(result.records), "computed": result.computed,
            "seconds": result.seconds, "median_snr_db": result.median_snr_db(), "table": table}
