"""Wall time of one small study on the local executor and on Ray (2 one-CPU workers on this machine), measured in
the same run, and Ray's per-task overhead.

    SEC4SR_HOME=/tmp/bench-home .venv/bin/python benchmarks/bench_ray.py [--limit 8] [--steps 10]

The study: GE2E on CSI-E, ``--limit`` utterances of 1 s in batches of 2, PGD with ``--steps`` steps, rows none and
qt:q=512, non-adaptive and adaptive. The enrollment is computed (and cached in the model store) before any timing.
The local executor runs with ``--local-threads`` torch threads (default 1: on a shared, loaded 2-core machine two
threads oversubscribe the cores and run several times slower); each Ray task gets one CPU and one thread.
Ray is timed twice on fresh output folders: cold (the workers import torch and load the model) and warm (workers
reused). The per-task overhead is the wall time of N trivial tasks divided by N, against a plain function call.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=200, help="trivial tasks for the overhead figure")
    ap.add_argument("--local-threads", type=int, default=1, help="torch threads of the local executor")
    args = ap.parse_args()
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

    import ray
    import torch

    from sec4sr_core.study.executors import LocalExecutor, RayExecutor
    from sec4sr_core.study.runner import Study, StudyConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))

    def config(name: str) -> StudyConfig:
        return StudyConfig(attacks=[f"pgd:steps={args.steps}"], defenses=["qt:q=512"],
                           settings=["non-adaptive", "adaptive"], limit=args.limit, batch_size=2, length_s=1.0,
                           metrics=["l2", "snr"], examples=0, out=tmp / name)

    Study(config("warmup"), progress=False)  # enrolls once (cached in the model store); not timed
    torch.set_num_threads(args.local_threads)

    def timed(name: str, executor) -> tuple[float, int]:
        study = Study(config(name), progress=False)
        n = len(study.units())
        t0 = time.perf_counter()
        study.run(executor)
        return time.perf_counter() - t0, n

    local_s, units = timed("local", LocalExecutor())
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             runtime_env={"env_vars": {"SEC4SR_HOME": os.environ.get("SEC4SR_HOME", ""), "OMP_NUM_THREADS": "1"}})
    init_s = time.perf_counter() - t0
    cold_s, _ = timed("ray-cold", RayExecutor())
    warm_s, _ = timed("ray-warm", RayExecutor())

    @ray.remote(num_cpus=1)
    def noop(x):
        return x

    ray.get([noop.remote(i) for i in range(20)])  # workers up
    t0 = time.perf_counter()
    ray.get([noop.remote(i) for i in range(args.tasks)])
    per_task_s = (time.perf_counter() - t0) / args.tasks
    t0 = time.perf_counter()
    for i in range(args.tasks):
        (lambda x: x)(i)
    per_call_s = (time.perf_counter() - t0) / args.tasks
    ray.shutdown()

    print(f"study: {units} units (batches of 2 utterances of 1 s, pgd {args.steps} steps, 2 rows, 2 settings)")
    print(f"local executor ({args.local_threads} torch thread(s))   {local_s:8.2f} s   1.00×")
    print(f"ray.init (local instance, 2 CPUs)     {init_s:8.2f} s")
    print(f"ray, 2 workers, cold                  {cold_s:8.2f} s   {local_s / cold_s:.2f}× local speed")
    print(f"ray, 2 workers, warm                  {warm_s:8.2f} s   {local_s / warm_s:.2f}× local speed")
    print(f"per unit: local {1000 * local_s / units:.0f} ms, ray warm {1000 * warm_s / units:.0f} ms "
          f"(wall / units)")
    print(f"per trivial task: ray {1000 * per_task_s:.2f} ms vs a function call {1e6 * per_call_s:.2f} µs "
          f"({per_task_s / max(per_call_s, 1e-12):.0f}×), over {args.tasks} tasks")


if __name__ == "__main__":
    main()
