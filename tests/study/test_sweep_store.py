"""`sec4sr sweep` (tuning curves) and the result store's schema, migration and warning merges."""

from __future__ import annotations

import sqlite3

import pytest
import torch

from sec4sr_core.cli import main
from sec4sr_core.cli.commands.sweep import sweep_rows
from sec4sr_core.base.errors import ParameterError
from sec4sr_core.study.store import COLUMNS, LEGACY_STUDY, ResultStore


def test_sweep_rows_from_defense_and_param():
    base, key, values, rows = sweep_rows("qt", "q=64,128,256")
    assert (base, key, values) == ("qt", "q", [64, 128, 256])
    assert rows == {"qt:q=64": 64, "qt:q=128": 128, "qt:q=256": 256}
    _, _, _, rows = sweep_rows("at:level=wave", "snr=10,20.5")
    assert list(rows) == ["at:level=wave,snr=10", "at:level=wave,snr=20.5"]
    for defense, param, msg in [("qt", "q", "key=v1"), ("qt", "q=a,b", "numbers"), ("qt", "q=1,1", "twice"),
                                ("qt:q=4", "q=1,2", "also fixed"), ("qt+at", "q=1", "not a chain")]:
        with pytest.raises(ParameterError, match=msg):
            sweep_rows(defense, param)


def test_sweep_command_writes_curves_and_report(tmp_path, capsys, ge2e_system, one_thread):
    out = tmp_path / "sweep"
    rc = main(["sweep", "--defense", "qt", "--param", "q=256,4096", "--attack", "pgd:steps=1", "--limit", "2",
               "--length", "0.5", "--metric", "l2", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.startswith("Sweep of qt over q") and "plot:" in text
    lines = text.splitlines()
    assert lines[1].split() == ["qt", "q", "benign", "pgd:steps=1"]
    assert [ln.split()[0] for ln in lines[2:4]] == ["256", "4096"]
    png = (out / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "Sweep of qt over q" in html and html.count("data:image/png;base64,") == 2  # heat map + curve
    with ResultStore(out / "results.sqlite") as store:
        assert store.get_meta("sweep")["rows"] == {"qt:q=256": 256, "qt:q=4096": 4096}
        assert {c["defense"] for c in store.cells()} == {"none", "qt:q=256", "qt:q=4096"}


def test_store_migrates_an_old_schema_and_keeps_rows(tmp_path):
    db = tmp_path / "results.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, system TEXT NOT NULL, task TEXT NOT NULL, "
                "defense TEXT NOT NULL, attack TEXT NOT NULL, setting TEXT NOT NULL, utterance TEXT NOT NULL, "
                "decision INTEGER, correct INTEGER, UNIQUE (system, task, defense, attack, setting, utterance))")
    con.execute("INSERT INTO results (system, task, defense, attack, setting, utterance, decision, correct) "
                "VALUES ('m', 'csi-e', 'none', '', 'benign', 'u1', 3, 1)")
    con.commit()
    con.close()
    with ResultStore(db) as store:
        have = {r[1] for r in store.conn.execute("PRAGMA table_info(results)")}
        assert set(COLUMNS) <= have
        (row,) = store.rows()
        assert row["utterance"] == "u1" and row["warnings"] is None
        # the schema-1 rows became the study "v1", one unit per cell
        assert [s["id"] for s in store.studies()] == [LEGACY_STUDY]
        assert store.rows(study=LEGACY_STUDY) == [row] and row["unit"].startswith("v1-")
        key = dict(system="m", task="csi-e", defense="none", attack="", setting="benign", cell=row["cell"],
                   unit=row["unit"])
        assert store.add_rows([{**key, "utterance": "u1", "correct": 0}, {**key, "utterance": "u2", "correct": 1,
                                                                          "warnings": []}]) == 1
        with pytest.raises(ValueError, match="identity"):  # a row without its identity is refused, not dropped
            store.add_rows([{k: v for k, v in key.items() if k != "unit"} | {"utterance": "u3"}])
        assert [r["correct"] for r in store.rows()] == [1, 1]  # the existing row is never overwritten
        codes = {"gradient-masking": "m1"}
        assert store.add_warnings("WHERE utterance LIKE 'u%'", (), codes) == 2
        assert store.add_warnings("WHERE utterance LIKE 'u%'", (), codes) == 0  # idempotent
        assert store.add_warnings("WHERE utterance='u2'", (), {"accuracy-above-benign": "m2"}) == 1
        w = {r["utterance"]: [x["code"] for x in r["warnings"]] for r in store.rows()}
        assert w == {"u1": ["gradient-masking"], "u2": ["gradient-masking", "accuracy-above-benign"]}


def test_rows_record_versions_seed_queries_and_time(small_study):
    out, summary = small_study
    with ResultStore(out / "results.sqlite") as store:
        rows = store.rows("WHERE setting='adaptive'")
    assert rows and all(r["seed"] == 0 and r["versions"]["sec4sr"] for r in rows)
    assert all(r["queries"] >= 1 and r["time_s"] >= 0 for r in rows)
    assert {"sec4sr-plugins-attacks", "sec4sr-plugins-defenses"} <= set(rows[0]["versions"])
    pgd = next(r for r in summary["results"] if r["attack"].startswith("pgd") and r["setting"] == "adaptive")
    assert pgd["mean_queries"] == 2.0 and pgd["mean_time_s"] > 0  # one step + the final evaluation


def test_results_are_measured_on_the_saved_16bit_audio(small_study, ge2e_system, one_thread):
    """Re-evaluating the saved WAVs gives the stored decisions: what is reported is what a re-run gets."""
    from sec4sr_core.sdk.audio import load_batch

    out, _ = small_study
    with ResultStore(out / "results.sqlite") as store:
        rows = store.rows("WHERE defense='none' AND setting='non-adaptive' AND attack LIKE 'pgd%'")
    x = load_batch([r["audio_path"] for r in rows])
    with torch.no_grad():
        scores = ge2e_system(x)
    assert ge2e_system.decide(scores).tolist() == [r["decision"] for r in rows]
    torch.testing.assert_close(scores, torch.tensor([r["scores"] for r in rows]), rtol=1e-4, atol=1e-5)
