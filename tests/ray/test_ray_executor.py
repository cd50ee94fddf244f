"""The Ray executor: the same rows as the local executor under the same seed, resumability across executors,
a killed worker's unit redone without duplicates, failing units recorded while the study goes on, Ctrl-C."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import torch

from sec4sr_core.study.executors import LocalExecutor, RayExecutor, UnitFailure
from sec4sr_core.study.runner import Study

from ray_study import EXPECTED, N, config, stored


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, ge2e_system):
    """The study run entirely by the local executor (one torch thread, as a one-CPU Ray task)."""
    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Study(config(out), progress=False).run()
    finally:
        torch.set_num_threads(threads)
    return out, stored(out)


class StopAfter:
    """Wraps an executor and raises KeyboardInterrupt (as Ctrl-C would) after ``k`` committed units."""

    def __init__(self, inner, k: int) -> None:
        self.inner, self.k = inner, k

    def map(self, study, units):
        for n, item in enumerate(self.inner.map(study, units)):
            if n == self.k:
                raise KeyboardInterrupt
            yield item


def test_ray_rows_equal_local_rows_value_for_value(ray_cluster, local_reference, tmp_path):
    out_local, reference = local_reference
    out = tmp_path / "ray"
    study = Study(config(out), progress=False)
    summary = study.run(RayExecutor())
    rows = stored(out)
    assert len(reference) == EXPECTED and summary["failures"] == 0 and study.failed == []
    assert rows.keys() == reference.keys()
    for key, row in reference.items():
        assert rows[key] == row, key
    # the workers wrote the same adversarial audio the local run did
    wav = [r["audio_path"] for r in reference.values() if r["audio_path"]]
    assert wav and all((out / p).read_bytes() == (out_local / p).read_bytes() for p in wav)


def test_resume_across_executors_both_ways(ray_cluster, local_reference, one_thread, tmp_path):
    _, reference = local_reference
    # started locally, interrupted, finished on Ray
    a = tmp_path / "local-then-ray"
    with pytest.raises(KeyboardInterrupt):
        Study(config(a), progress=False).run(StopAfter(LocalExecutor(), 3))
    part = stored(a)
    assert 0 < len(part) < EXPECTED
    Study(config(a), progress=False).run(RayExecutor())
    assert stored(a) == reference
    # started on Ray, interrupted (outstanding tasks cancelled), finished locally
    b = tmp_path / "ray-then-local"
    with pytest.raises(KeyboardInterrupt):
        Study(config(b), progress=False).run(StopAfter(RayExecutor(), 2))
    part = stored(b)
    assert 0 < len(part) < EXPECTED
    Study(config(b), progress=False).run()
    assert stored(b) == reference


def _unit_pids() -> list[int]:
    """PIDs of Ray worker processes now running a unit (Ray titles them ``ray::run_unit``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"ray::run_unit"):
            pids.append(int(entry.name))
    return pids


def test_killed_worker_has_its_unit_redone_without_duplicates(ray_cluster, tmp_path):
    out = tmp_path / "killed"
    cfg = config(out, attacks=["pgd:steps=30"], batch_size=1)
    result: dict = {}

    def drive():
        try:
            study = Study(cfg, progress=False)
            result["summary"] = study.run(RayExecutor(retries=2))
            result["failed"] = study.failed
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            result["error"] = exc

    thread = threading.Thread(target=drive)
    thread.start()
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        db = out / "results.sqlite"
        if db.exists():  # wait until attack units run (benign rows, 2·N, come first)
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                n = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.Error:
                n = 0
            con.close()
            pids = _unit_pids()
            if n >= 2 * N and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed = pids[0]
        time.sleep(0.05)
    thread.join(timeout=600)
    assert killed is not None, "no worker was caught running a unit"
    assert "error" not in result, result.get("error")
    assert result["failed"] == [] and result["summary"]["failures"] == 0
    con = sqlite3.connect(out / "results.sqlite")
    total = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    per_cell = con.execute("SELECT COUNT(*), COUNT(DISTINCT utterance) FROM results "
                           "GROUP BY system, task, defense, attack, setting").fetchall()
    con.close()
    assert total == EXPECTED
    assert len(per_cell) == 6 and all(n == distinct == N for n, distinct in per_cell)


def test_failing_units_are_retried_recorded_and_the_study_goes_on(ray_cluster, tmp_path):
    out = tmp_path / "failing"
    out.mkdir()
    (out / "audio").write_text("a file where the audio folder should be")  # every attack unit fails to save audio
    study = Study(config(out, examples=0), progress=False)
    summary = study.run(RayExecutor(retries=1))
    rows = stored(out)
    assert len(rows) == 2 * N and all(k[4] == "benign" for k in rows)  # the benign units went on
    attack_units = 2 + 2 * 2  # non-adaptive: 2 batches; adaptive: 2 rows × 2 batches
    assert len(study.failed) == attack_units and summary["failures"] == attack_units
    assert all("NotADirectoryError" in err or "FileExistsError" in err for _, err in study.failed)
    failures = study.store.failures()
    assert {(f["attack"], f["setting"]) for f in failures} == {("pgd:steps=2", "non-adaptive"),
                                                               ("pgd:steps=2", "adaptive")}
    # fixed, a re-run retries exactly the failed units
    (out / "audio").unlink()
    study = Study(config(out, examples=0), progress=False)
    study.run(RayExecutor())
    assert len(stored(out)) == EXPECTED and study.failed == []


def test_worker_error_line_names_the_cause(ray_cluster):
    from sec4sr_core.study.executors import _error_line

    @ray_cluster.remote(max_retries=0)
    def boom():
        raise ValueError("bad thing\nsecond line")

    with pytest.raises(ray_cluster.exceptions.RayTaskError) as info:
        ray_cluster.get(boom.remote())
    line = _error_line(info.value)
    assert line.startswith("ValueError:") and "\n" not in line


def test_unit_failure_is_data():
    assert UnitFailure("X: y").error == "X: y"


def test_cli_runs_a_study_on_ray_and_resumes_it_locally(ray_cluster, tmp_path, capsys, one_thread):
    import json

    from sec4sr_core.cli import main

    out = tmp_path / "cli"
    args = ["run", "--attack", "pgd:steps=1", "--defense", "qt:q=512", "--limit", "2", "--batch-size", "2",
            "--length", "0.5", "--metric", "l2", "--out", str(out), "--quiet", "--json"]
    assert main(args + ["--executor", "ray"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["failures"] == 0 and {r["n"] for r in doc["results"]} == {2}
    before = stored(out)
    assert len(before) == 8
    assert main(args) == 0  # the local executor finds nothing left to do
    capsys.readouterr()
    assert stored(out) == before


def test_cli_without_ray_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    import sys

    from sec4sr_core.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    code = main(["run", "--attack", "pgd:steps=1", "--limit", "1", "--out", str(tmp_path), "--executor", "ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ['error: the Ray executor needs Ray, which is not installed: pip install "sec4sr[ray]"']


def test_address_needs_the_ray_executor(tmp_path, capsys):
    from sec4sr_core.cli import main

    code = main(["run", "--attack", "pgd:steps=1", "--limit", "1", "--out", str(tmp_path), "--address", "auto"])
    assert code == 2 and "--address is for --executor ray" in capsys.readouterr().err
