"""The HTML report: one self-contained file (inline CSS, plots as base64 PNG data URIs, audio examples as base64 WAV
data URIs in ``<audio controls>``), no script and no external resource."""

from __future__ import annotations

import base64
import html
import sys
from pathlib import Path

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.base.params import slug
from sec4sr_core.report.figures import heatmaps, sweep_png
from sec4sr_core.report.tables import StudyData, Table, study_tables, study_title

#: at most this many audio players in one report (keeps the file a few MB)
MAX_CLIPS = 24

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}td.warn{background:#fff3cd}
p.note{color:#555;font-size:.85em;margin:.2em 0}.meta{color:#555;font-size:.85em}
figure{display:inline-block;margin:.5em 1em .5em 0}figcaption{font-size:.8em;color:#555}
audio{width:210px;height:32px}.clip{font-size:.75em;color:#555}
.scroll{overflow-x:auto}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(t: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in t.headers)
    body = []
    for row in t.rows:
        cells = []
        for c in row:
            cls = ' class="warn"' if isinstance(c, str) and c.endswith("!") else ""
            cells.append(f"<td{cls}>{_e(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{_e(t.note)}</p>' if t.note else ""
    return (f'<h2 id="{_e(t.key)}">{_e(t.title)}</h2>{note}<div class="scroll"><table class="results" '
            f'data-table="{_e(t.key)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"><figcaption>{_e(alt)}</figcaption></figure>'


def _audio(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<div><audio controls preload="metadata" src="data:audio/wav;base64,{data}"></audio>'
            f'<div class="clip">{_e(caption)}</div></div>')


def audio_prefix(data: StudyData, system: str, task: str) -> Path:
    """The audio folder of one system, as the runner lays it out."""
    base = data.out / "audio"
    if len(data.summary["systems"]) > 1:
        base = base / slug(f"{system}-{task}")
    return base


def examples_html(data: StudyData, max_clips: int = MAX_CLIPS) -> str:
    """Players for the saved examples: per utterance, the benign audio, then per attack the adversarial audio and
    what each defense row's wave-level defenses make of it."""
    cfg = data.config
    sysdoc = data.summary["systems"][0]
    prefix = audio_prefix(data, sysdoc["system"], sysdoc["task"])
    benign = sorted((prefix / "benign").rglob("*.wav"))[: max(cfg.examples, 0)]
    defenses = [r["label"] for r in data.defense_rows if r["label"] != "none"]
    parts, clips = [], 0
    for b in benign:
        rel = b.relative_to(prefix / "benign")  # <speaker>/<id>.wav, as the runner saves it
        spk, name = rel.parts[0], str(Path(*rel.parts[1:]))
        if clips >= max_clips:
            break
        parts.append(f"<h3>{_e(spk)} / {_e(name[:-4])}</h3>")
        parts.append(_audio(b, "benign"))
        clips += 1
        rows = []
        for a in cfg.attacks:
            for st in cfg.settings:
                if st == "non-adaptive":
                    adv = prefix / st / slug(a) / spk / name
                else:
                    adv = prefix / st / slug(a) / "none" / spk / name
                if not adv.exists() or clips >= max_clips:
                    continue
                cells = [f"<td>{_e(a)} ({'A' if st == 'adaptive' else 'NA'})</td>",
                         f"<td>{_audio(adv, 'adversarial')}</td>"]
                clips += 1
                for d in defenses:
                    p = prefix / "defended" / st / slug(a) / slug(d) / spk / name
                    if p.exists() and clips < max_clips:
                        cells.append(f"<td>{_audio(p, 'defended by ' + d)}</td>")
                        clips += 1
                    else:
                        cells.append("<td>-</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
        if rows:
            head = "<th>attack</th><th>adversarial</th>" + "".join(f"<th>{_e(d)}</th>" for d in defenses)
            parts.append(f'<div class="scroll"><table class="examples"><thead><tr>{head}</tr></thead>'
                         f'<tbody>{"".join(rows)}</tbody></table></div>')
    if not parts:
        return ""
    return ('<h2 id="examples">Audio examples</h2><p class="note">as saved (16-bit WAV). "adversarial" is crafted on the '
            'undefended system; "defended" is adversarial audio after the row\'s waveform-level defenses (in adaptive '
            'rows, the audio crafted against that defense)</p>' + "".join(parts))


def render_html(datas: StudyData | list[StudyData]) -> str:
    """One self-contained HTML document of one study or of several (one section each, with its configuration)."""
    datas = [datas] if isinstance(datas, StudyData) else list(datas)
    if len(datas) == 1:
        title = study_title(datas[0])
        body = _study_body(datas[0], "h1")
    else:
        title = f"{len(datas)} studies in {datas[0].out}"
        body = [f"<h1>{_e(title)}</h1>", "<ul>" + "".join(
            f'<li><a href="#study-{_e(d.study)}">{_e(study_title(d))}</a> <code>{_e(d.study)}</code></li>'
            for d in datas) + "</ul>"]
        for d in datas:
            body.append(f'<section id="study-{_e(d.study)}">')
            body += _study_body(d, "h2")
            body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _study_body(data: StudyData, heading: str) -> list[str]:
    s = data.summary
    title = study_title(data)
    c = data.config
    meta = (f"dataset {s['dataset']} · seed {s['seed']}" + (" · targeted" if s.get("targeted") else "")
            + (f" · study {data.study}" if data.study else "")
            + f" · limit {c.limit} · length {c.length_s} s · eot {c.eot} · order {c.defense_order}"
            + " · " + ", ".join(f"{k} {v}" for k, v in (s.get("versions") or {}).items()))
    body = [f"<{heading}>{_e(title)}</{heading}>", f'<p class="meta">{_e(meta)}</p>']
    tables = study_tables(data)
    try:
        figures = [_img(png, t) for t, png in heatmaps(data)]
        sw = sweep_png(data)
        if sw is not None:
            figures.append(_img(sw, "accuracy against the swept parameter"))
    except Sec4srError as exc:  # no matplotlib: the tables and audio still make a report
        # the notice format of sec4sr_core.sdk.audio.notice, without importing the (torch) audio module
        print(f"notice: report without plots: {exc}", file=sys.stderr)
        figures = [f'<p class="note">plots unavailable: {_e(exc)}</p>']
    main = [t for t in tables if t.key not in ("cells", "warnings")]
    for t in main:
        body.append(_table(t))
    if figures:
        body.append('<h2 id="plots">Plots</h2>' + "".join(figures))
    for t in tables:
        if t.key == "warnings":
            body.append(_table(t))
    body.append(examples_html(data))
    for t in tables:
        if t.key == "cells":
            body.append(_table(t))
    return body
