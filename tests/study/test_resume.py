"""A study killed with SIGKILL mid-run and run again completes with exactly one row per cell and utterance."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import pytest

from .conftest import sec4sr_cmd, subprocess_env

N = 6
TOML = f"""
name = "resume test"
attacks = ["pgd:steps=2"]
defenses = ["qt:q=512"]
settings = ["non-adaptive", "adaptive"]
limit = {N}
batch_size = 1
length_s = 0.75
metrics = ["l2", "snr"]
examples = 1

[[systems]]
model = "ge2e"
task = "csi-e"
"""
# rows: benign (2 rows × N) + non-adaptive (2 × N) + adaptive (2 × N)
EXPECTED = 6 * N


def _count(db) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_sigkill_then_rerun_completes_without_duplicates_or_gaps(tmp_path, ge2e_system):
    cfg = tmp_path / "study.toml"
    cfg.write_text(TOML)
    out = tmp_path / "out"
    db = out / "results.sqlite"
    cmd = sec4sr_cmd() + ["run", str(cfg), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 400
        # wait until the attack phase has written some rows (benign rows are 2·N), then kill mid-study
        while _count(db) < 2 * N + 3:
            if proc.poll() is not None:
                pytest.fail(f"the study ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the study wrote no attack rows in time")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _count(db)
    assert 2 * N + 3 <= killed_at < EXPECTED

    done = subprocess.run(cmd + ["--json"], env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    con = sqlite3.connect(db)
    total = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    per_cell = con.execute(
        "SELECT defense, attack, setting, COUNT(*), COUNT(DISTINCT utterance) FROM results "
        "GROUP BY system, task, defense, attack, setting").fetchall()
    dup = con.execute("SELECT COUNT(*) FROM (SELECT 1 FROM results GROUP BY system, task, defense, attack, setting, "
                      "utterance HAVING COUNT(*) > 1)").fetchone()[0]
    con.close()
    assert total == EXPECTED and dup == 0
    assert len(per_cell) == 6 and all(n == distinct == N for *_, n, distinct in per_cell)
    # a third run has nothing left to do and changes nothing
    again = subprocess.run(cmd + ["--json"], env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and _count(db) == EXPECTED
