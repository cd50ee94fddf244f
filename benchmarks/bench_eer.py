"""EER + minDCF (p = 0.01 and 0.05) on a VoxCeleb1-O-sized trial list (37,720 trials: 18,860 targets, 18,860
non-targets, float32 scores), the sorting-based implementation of ``sec4sr_core.compose.enroll`` against the previous
O(N²) one (copied below as the baseline), in the same run.

Each implementation runs in a fresh child process so that its memory figures are its own: wall and CPU time (best of
``--repeat``; CPU time is the fairer figure on a shared machine), the growth of the process' peak resident set (``ru_maxrss``, which sees torch's allocator) and the
peak of ``tracemalloc`` (Python-heap allocations only; torch tensors do not go through it, so it under-reports both).
Goal: under 1 s and 50 MB for the new implementation.

    python benchmarks/bench_eer.py [--trials 37720] [--repeat 3]

The baseline needs about (trials/2)² × 8 bytes at once (≈ 2.8 GB per class at 37,720 trials); when the machine has
less than twice that available it is measured on a smaller list and marked so.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc


def old_eer_threshold(targets, nontargets):
    import torch

    t = targets.detach().double().flatten().cpu()
    n = nontargets.detach().double().flatten().cpu()
    allv = torch.cat([t, n]).unique()
    cands = torch.cat([allv[:1] - 1.0, (allv[1:] + allv[:-1]) / 2, allv[-1:] + 1.0])
    frr = (t.unsqueeze(0) <= cands.unsqueeze(1)).double().mean(dim=1)
    far = (n.unsqueeze(0) > cands.unsqueeze(1)).double().mean(dim=1)
    i = int(torch.argmin((frr - far).abs()))
    return float(cands[i]), float((frr[i] + far[i]) / 2)


def old_min_dcf(targets, nontargets, p_target=0.01):
    import torch

    t = targets.detach().double().flatten().cpu()
    n = nontargets.detach().double().flatten().cpu()
    allv = torch.cat([t, n]).unique()
    cands = torch.cat([allv[:1] - 1.0, allv])
    frr = (t.unsqueeze(0) <= cands.unsqueeze(1)).double().mean(dim=1)
    far = (n.unsqueeze(0) > cands.unsqueeze(1)).double().mean(dim=1)
    dcf = p_target * frr + (1 - p_target) * far
    return float(dcf.min() / min(p_target, 1 - p_target))


def scores(trials: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    half = trials // 2
    return torch.randn(half, generator=g) * 0.1 + 0.6, torch.randn(trials - half, generator=g) * 0.1 + 0.3


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def child(impl: str, trials: int, repeat: int) -> dict:
    import torch

    from sec4sr_core.compose import enroll

    torch.set_num_threads(1)
    t, n = scores(trials)
    eer_fn, dcf_fn = (enroll.eer_threshold, enroll.min_dcf) if impl == "new" else (old_eer_threshold, old_min_dcf)
    before = rss_mb()
    tracemalloc.start()
    best = cpu = float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        theta, eer = eer_fn(t, n)
        dcfs = [dcf_fn(t, n, p) for p in (0.01, 0.05)]
        best = min(best, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    peak_py = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"impl": impl, "trials": trials, "time_s": best, "cpu_s": cpu, "rss_growth_mb": max(0.0, peak_rss - before),
            "tracemalloc_peak_mb": peak_py, "eer": eer, "theta": theta, "min_dcf": dcfs}


def available_mb() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def run_child(impl: str, trials: int, repeat: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", impl, "--trials", str(trials), "--repeat",
                          str(repeat)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=37720)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", choices=["new", "old"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.trials, args.repeat)))
        return
    new = run_child("new", args.trials, args.repeat)
    need_mb = (args.trials / 2) ** 2 * 8 / 2**20 * 1.2
    old_trials = args.trials
    while need_mb * 2 > available_mb() and old_trials > 1000:
        old_trials //= 2
        need_mb /= 4
    old = run_child("old", old_trials, 1)
    same = old_trials == args.trials and abs(new["eer"] - old["eer"]) < 1e-12 and new["theta"] == old["theta"]
    print(f"EER + minDCF@0.01 + minDCF@0.05, {args.trials} trials (float32 scores), one torch thread")
    for r in (new, old):
        print(f"  {r['impl']:3s} ({r['trials']} trials): {r['time_s'] * 1000:9.1f} ms wall, {r['cpu_s'] * 1000:9.1f} ms CPU"
              f"   peak RSS +{r['rss_growth_mb']:8.1f} MB"
              f"   tracemalloc peak {r['tracemalloc_peak_mb']:6.2f} MB   EER {100 * r['eer']:.3f} %")
    if old_trials == args.trials:
        print(f"  ratio old/new: wall {old['time_s'] / new['time_s']:.0f}x, CPU {old['cpu_s'] / new['cpu_s']:.0f}x, peak RSS "
              f"{old['rss_growth_mb'] / max(new['rss_growth_mb'], 0.1):.0f}x; same θ and EER: {same}")
    else:
        print(f"  (baseline measured on {old_trials} trials: not enough memory available for {args.trials})")
    ok = new["time_s"] < 1.0 and new["rss_growth_mb"] < 50
    print(f"  goal < 1 s and < 50 MB: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
