"""`sec4sr export` (one line per utterance and cell, CSV or Parquet) and `sec4sr compare` (side-by-side cells with
intervals), end to end through the CLI on the shared small study."""

from __future__ import annotations

import csv
import io
import math
import shutil
import sqlite3
import sys

import pytest

from sec4sr_core.cli import main
from sec4sr_core.report.compare import overlaps
from sec4sr_core.study.stats import wilson
from sec4sr_core.study.store import ResultStore

from .conftest import WEAK_PGD


def _study_rows(out):
    with ResultStore(out / "results.sqlite") as store:
        sid = store.latest_study()
        return sid, store.rows(study=sid)


def test_export_csv_has_one_line_per_utterance_and_cell(small_study, tmp_path, capsys):
    out, summary = small_study
    target = tmp_path / "rows.csv"
    assert main(["export", str(out), "-o", str(target)]) == 0
    assert capsys.readouterr().out.strip() == f"export: {target}"
    recs = list(csv.DictReader(io.StringIO(target.read_text())))
    sid, rows = _study_rows(out)
    assert len(recs) == len(rows) == sum(r["n"] for r in summary["results"]) + 5 * 4  # + benign rows, 5 defense rows
    assert {"study", "system", "task", "defense", "attack", "setting", "utterance", "cell", "unit", "label",
            "correct", "success", "metric_linf", "metric_snr", "warnings"} <= set(recs[0])
    assert {r["study"] for r in recs} == {sid}
    # identity: (unit, utterance) is unique, as in the store
    assert len({(r["unit"], r["utterance"]) for r in recs}) == len(recs)
    benign = [r for r in recs if r["setting"] == "benign"]
    assert benign and all(r["metric_linf"] == "nan" and r["success"] == "nan" and r["target"] == "nan" for r in benign)
    assert "-" not in {v for r in recs for v in r.values()}
    # per-utterance values equal the store's, and the cell means equal the summary's
    by_key = {(r["unit"], r["utterance"]): r for r in recs}
    for row in rows:
        rec = by_key[(row["unit"], row["utterance"])]
        assert int(rec["correct"]) == row["correct"]
        if row["metrics"].get("linf") is not None:
            assert float(rec["metric_linf"]) == pytest.approx(row["metrics"]["linf"])
    flip = [float(r["correct"]) for r in recs if (r["defense"], r["attack"], r["setting"])
            == ("none", "test-flip", "non-adaptive")]
    c = next(x for x in summary["results"] if (x["defense"], x["attack"], x["setting"])
             == ("none", "test-flip", "non-adaptive"))
    assert sum(flip) / len(flip) == pytest.approx(c["adversarial_accuracy"])
    # an unchanged utterance (WEAK_PGD rounds to the benign audio) has SNR inf, not a dash
    assert any(r["metric_snr"] == "inf" for r in recs if r["attack"] == WEAK_PGD)
    assert any("gradient-masking" in r["warnings"] for r in recs)


def test_export_parquet_is_typed(small_study, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out, _ = small_study
    target = tmp_path / "rows.parquet"
    assert main(["export", str(out), "--format", "parquet", "-o", str(target)]) == 0
    table = pq.read_table(target)
    _, rows = _study_rows(out)
    assert table.num_rows == len(rows)
    schema = {f.name: str(f.type) for f in table.schema}
    assert schema["metric_linf"] == "double" and schema["correct"] == "int64" and schema["defense"] == "string"
    linf = table.column("metric_linf").to_pylist()
    assert any(math.isnan(v) for v in linf) and any(not math.isnan(v) for v in linf)
    assert table.column("target").null_count == len(rows)  # untargeted: no target, null not "-"


def test_export_to_stdout_and_default_file(small_study, tmp_path, capsys):
    out, _ = small_study
    assert main(["export", str(out), "-o", "-"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("study,system,task,defense,attack,setting,utterance")
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("audio"))
    assert main(["export", str(copy)]) == 0
    assert (copy / "results.csv").read_text() == text


@pytest.mark.parametrize("argv,needle", [
    (["export", "{missing}"], "no such output folder"),
    (["export", "{out}", "--study", "zzzz"], "has no study 'zzzz'"),
    (["export", "{out}", "--format", "parquet", "-o", "-"], "csv only"),
    (["export", "{out}", "-o", "{tmp}"], "is a folder"),
    (["compare", "{out}"], "at least two"),
    (["compare", "{out}", "{missing}"], "no such output folder"),
])
def test_bad_export_and_compare_inputs_are_one_line_errors(small_study, tmp_path, capsys, argv, needle):
    out, _ = small_study
    argv = [a.format(out=out, missing=tmp_path / "nope", tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_parquet_without_pyarrow_is_a_clear_error(small_study, tmp_path, capsys, monkeypatch):
    out, _ = small_study
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["export", str(out), "--format", "parquet", "-o", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err
    assert "needs pyarrow" in err and "pip install pyarrow" in err
    assert not (tmp_path / "x.parquet").exists()


def test_overlaps():
    assert overlaps((0.1, 0.5), (0.4, 0.9)) and overlaps((0.1, 0.5), (0.5, 0.9))
    assert not overlaps((0.0, 0.49), (0.51, 1.0)) and overlaps(None, (0.2, 0.3))


def test_compare_matches_cells_and_flags_disjoint_intervals(small_study, tmp_path, capsys):
    out, summary = small_study
    other = tmp_path / "other"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("audio"))
    # the copy's test-flip rows on the undefended row all become correct: 4/4 against the original's
    con = sqlite3.connect(other / "results.sqlite")
    con.execute("UPDATE results SET correct=1 WHERE defense='none' AND attack='test-flip' AND setting='non-adaptive'")
    con.commit()
    con.close()
    flip = next(r for r in summary["results"]
                if (r["defense"], r["attack"], r["setting"]) == ("none", "test-flip", "non-adaptive"))
    assert main(["compare", str(out), str(other)]) == 0
    text = capsys.readouterr().out
    lines = {tuple(ln.split()[:3]): ln for ln in text.splitlines() if ln.startswith("none ")}
    flipped = lines[("none", "test-flip", "non-adaptive")]
    disjoint = not overlaps(flip["accuracy_ci"], wilson(4, 4))
    assert flipped.rstrip().endswith("*") == disjoint and "(n=4)" in flipped
    assert "100.0 [51-100] (n=4)" in flipped
    # an unchanged cell: the same value in both, no flag
    same = lines[("none", WEAK_PGD, "adaptive")]
    assert not same.rstrip().endswith("*") and same.count("(n=4)") == 2
    # JSON: every shared cell, both studies, the flag
    assert main(["compare", str(out), str(other), "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    cells = {tuple(c["key"]): c for c in doc["cells"]}
    assert cells[("none", "test-flip", "non-adaptive")]["differs"] == disjoint
    assert cells[("none", "test-flip", "non-adaptive")]["studies"][1]["value"] == 1.0
    worst = "robust:" + "+".join(sorted([WEAK_PGD, "test-flip"]))
    assert ("none", worst, "worst case") in cells and ("none", "", "benign") in cells
    assert len(doc["studies"]) == 2
