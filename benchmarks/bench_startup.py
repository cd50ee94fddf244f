"""Start-up time of the ``sec4sr`` command against the interpreter itself and against ``import torch``, measured in
the same run (issue 12: ``--help``, ``list``, ``plugins``, ``report`` and ``--version`` import no torch; the goal is
under 1 s for ``sec4sr --help`` and ``sec4sr list``).

Each command runs ``--repeat`` times in a fresh process, the commands interleaved round by round so that a busy
machine slows all of them alike; the table shows the median and the fastest wall time, and the median as a ratio
to ``python -c pass`` (the interpreter's floor) and to ``python -c "import torch"`` (what every command cost before).

``sec4sr list`` is measured with its description cache filled (:mod:`sec4sr_core.cli.listing_cache`; the state
after the first ``list`` of an installation), in a temporary ``SEC4SR_HOME``; the first, cache-filling run is
shown as ``sec4sr list (cold)``, measured once. ``sec4sr report`` renders a tiny study written straight into a
result store (Markdown to stdout).

Usage::

    python benchmarks/bench_startup.py               # 7 rounds
    python benchmarks/bench_startup.py --repeat 15
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 1.0


def sec4sr_command() -> list[str]:
    """The console script next to this interpreter (what a user runs), else ``python -m sec4sr_core.cli``."""
    script = Path(sys.executable).with_name("sec4sr")
    if script.exists():
        return [str(script)]
    found = shutil.which("sec4sr")
    return [found] if found else [sys.executable, "-m", "sec4sr_core.cli"]


def tiny_store(out: Path) -> Path:
    """A finished one-cell study (4 utterances, pgd-10 against the undefended and a qt row), written straight
    through the result store."""
    from sec4sr_core.study.config import StudyConfig
    from sec4sr_core.study.store import ResultStore

    config = StudyConfig(name="bench", attacks=["pgd-10"], defenses=["qt:q=512"], out=out)
    rows = []
    for defense in ("none", "qt:q=512"):
        for setting, attack in (("benign", ""), ("non-adaptive", "pgd-10")):
            cell = f"ge2e|csi-e|{defense}|{attack}|{setting}"
            for i in range(4):
                correct = int(setting == "benign" or i % 2 == 0)
                rows.append({
                    "system": "ge2e", "task": "csi-e", "defense": defense, "attack": attack, "setting": setting,
                    "utterance": f"u{i}", "speaker": f"s{i % 2}", "label": i % 2, "decision": i % 2,
                    "correct": correct, "success": None if setting == "benign" else 1 - correct, "queries": 10,
                    "time_s": 0.01, "metrics": {"linf": 0.002}, "warnings": [], "seed": 0, "versions": {},
                    "cell": cell, "unit": f"{cell}|0",
                })
    with ResultStore(out / "results.sqlite") as store:
        store.set_meta("config", config.model_dump(mode="json"))
        store.add_rows(rows)
    return out


def wall(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds from start to exit of ``cmd`` (output discarded; a failure stops the benchmark)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="runs of each command (default 7)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sec4sr-bench-startup-"))
    try:
        env = {**os.environ, "SEC4SR_HOME": str(work / "home")}
        env.pop("SEC4SR_LIST_CACHE", None)
        store = tiny_store(work / "study")
        s = sec4sr_command()
        py = sys.executable
        commands = {
            "python -c pass": [py, "-c", "pass"],
            'python -c "import torch"': [py, "-c", "import torch"],
            "sec4sr --help": [*s, "--help"],
            "sec4sr --version": [*s, "--version"],
            "sec4sr list": [*s, "list"],
            "sec4sr plugins": [*s, "plugins"],
            "sec4sr report OUT": [*s, "report", str(store)],
        }
        cold = wall(commands["sec4sr list"], env)  # describes every component once and fills the cache
        time.sleep(1.1)  # the cache stores nothing newer than the process writing it; let the first warm run store
        wall(commands["sec4sr list"], env)
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(max(1, args.repeat)):
            for name, cmd in commands.items():
                times[name].append(wall(cmd, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    floor = statistics.median(times["python -c pass"])
    torch_s = statistics.median(times['python -c "import torch"'])
    print(f"start-up wall time, {args.repeat} runs each (interleaved), {os.cpu_count()} CPUs; "
          f"command: {' '.join(s)}")
    print(f"{'command':<28} {'median s':>9} {'min s':>7} {'/ pass':>8} {'/ torch':>8}  goal")
    rows = [(name, statistics.median(v), min(v)) for name, v in times.items()]
    rows.insert(5, ("sec4sr list (cold)", cold, cold))
    for name, med, fastest in rows:
        goal = ""
        if name in ("sec4sr --help", "sec4sr list"):
            goal = f"< {GOAL_S:g} s " + ("met" if med < GOAL_S else "NOT met")
        print(f"{name:<28} {med:9.3f} {fastest:7.3f} {med / floor:8.1f} {med / torch_s:8.2f}  {goal}")


if __name__ == "__main__":
    main()
