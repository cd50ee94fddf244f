"""Per-utterance export of a study: one record per (utterance, cell) — every identity field of the result row, its
outcome and every metric — as CSV or Parquet (pyarrow). Torch-free.

Missing numbers are NaN (CSV ``nan``; Parquet NaN for float columns, null for integer ones), never ``-``; an SNR of
an unchanged utterance is ``inf``. Each metric becomes a column ``metric_<name>``; warnings become the ``warnings``
column (codes joined by ``;``); scores and versions are JSON text.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.report.tables import _open_store, resolve_study

FORMATS = ("csv", "parquet")

#: text identity columns, then integer and float outcome columns (in this order in the file)
TEXT_COLUMNS = ["study", "system", "task", "defense", "attack", "setting", "utterance", "speaker", "cell", "unit"]
INT_COLUMNS = ["label", "target", "claim", "seed", "decision", "correct", "success", "queries"]
FLOAT_COLUMNS = ["time_s"]
TAIL_COLUMNS = ["warnings", "audio_path", "scores", "versions"]


def _float(v: Any) -> float:
    """A number as float; NaN for missing or non-numbers; the store's "inf" strings as ±inf."""
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def export_records(out: str | Path, study: str | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, records) of study ``study`` (default: the latest) of output folder ``out``: one record per stored
    result row of the study, benign rows included (``attack`` empty, ``setting`` benign)."""
    with _open_store(out) as store:
        sid = resolve_study(store, out, study)
        if sid is None:
            raise Sec4srError(f"{out} holds no study yet; run `sec4sr run ... --out {out}` first")
        rows = store.rows(study=sid)
    names = sorted({k for r in rows for k in (r.get("metrics") or {})})
    metric_cols = [f"metric_{n}" for n in names]
    columns = TEXT_COLUMNS + INT_COLUMNS + FLOAT_COLUMNS + metric_cols + TAIL_COLUMNS
    records = []
    for r in rows:
        rec: dict[str, Any] = {"study": sid}
        for c in TEXT_COLUMNS[1:]:
            rec[c] = "" if r.get(c) is None else str(r[c])
        for c in INT_COLUMNS:
            rec[c] = None if r.get(c) is None else int(r[c])
        rec["time_s"] = _float(r.get("time_s"))
        m = r.get("metrics") or {}
        for n, col in zip(names, metric_cols):
            rec[col] = _float(m.get(n))
        rec["warnings"] = ";".join(sorted({w.get("code", "") for w in (r.get("warnings") or []) if isinstance(w, dict)}))
        rec["audio_path"] = r.get("audio_path") or ""
        rec["scores"] = json.dumps(r.get("scores") or [])
        rec["versions"] = json.dumps(r.get("versions") or {}, sort_keys=True)
        records.append(rec)
    return columns, records


def to_csv(columns: list[str], records: list[dict[str, Any]]) -> str:
    """CSV text: a header line, then one line per record; missing numbers as ``nan``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for rec in records:
        w.writerow(["nan" if rec[c] is None else (repr(rec[c]) if isinstance(rec[c], float) else rec[c])
                    for c in columns])
    return buf.getvalue()


def write_parquet(columns: list[str], records: list[dict[str, Any]], path: Path) -> None:
    """A Parquet file with typed columns (strings, nullable int64, float64)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise Sec4srError("--format parquet needs pyarrow: pip install pyarrow (or use --format csv)") from None
    arrays, fields = [], []
    for c in columns:
        values = [rec[c] for rec in records]
        kind = pa.int64() if c in INT_COLUMNS else pa.string() if c in TEXT_COLUMNS or c in TAIL_COLUMNS \
            else pa.float64()
        arrays.append(pa.array(values, type=kind))
        fields.append(pa.field(c, kind))
    pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), str(path))


def export(out: str | Path, fmt: str = "csv", output: str | Path | None = None, study: str | None = None) -> Path:
    """Write the per-utterance export of ``out`` (default file ``<out>/results.<fmt>``) and return its path."""
    if fmt not in FORMATS:
        raise Sec4srError(f"unknown export format {fmt!r} (choose {', '.join(FORMATS)})")
    columns, records = export_records(out, study)
    path = Path(output) if output else Path(out) / f"results.{fmt}"
    if path.is_dir():
        raise Sec4srError(f"{path} is a folder; give a file name for the export (e.g. {path / ('results.' + fmt)})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        if fmt == "csv":
            tmp.write_text(to_csv(columns, records), encoding="utf-8")
        else:
            write_parquet(columns, records, tmp)
        tmp.replace(path)
    except OSError as exc:
        raise Sec4srError(f"cannot write the export {path}: {exc.strerror or exc}") from None
    return path
