"""Attack cost benchmarks, as ratios against baselines measured in the same run on the same batch.

1. One PGD step over one forward+backward of the same defended system (target ≤ 1.3): PGD runs ``steps``
   gradient steps plus one forward-only evaluation of the last iterate, and keeps the best example per utterance.
2. EOT with ``draws`` draws evaluated in one batch (the oracle's layout) against ``draws`` sequential
   forward+backward passes, on a randomized defense (default ``at:snr=30``).

Usage: ``python benchmarks/bench_attacks.py [--device cuda] [--batch 8] [--seconds 3] [--defense qt:q=512]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, repeats: int, device: str) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs (after one warm-up), synchronising CUDA."""
    fn()
    out = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--defense", default="qt:q=512")
    ap.add_argument("--eot-defense", default="at:snr=30")
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import sec4sr_core
    from sec4sr_core.sdk.audio import load_batch
    from sec4sr_core.compose.enroll import task_trials
    from sec4sr_core.sdk.losses import resolve_loss
    from sec4sr_core.sdk.oracle import make_oracle
    from sec4sr_core.compose.factories import resolve_dataset

    system = sec4sr_core.load_system("ge2e", task="csi-e", device=args.device)
    trials = task_trials("csi-e", resolve_dataset("embedded"), system.speakers, seed=0, limit=args.batch)
    x = load_batch([u.path for u in trials.utterances], int(args.seconds * 16000)).to(args.device)
    y = trials.labels.to(args.device)
    loss_fn = resolve_loss("ce", "csi-e")
    print(f"device {args.device}  batch {tuple(x.shape)}  torch threads {torch.get_num_threads()}")

    # 1. PGD step vs forward+backward on the same defended system and batch
    ds = sec4sr_core.defend(system, args.defense)

    def fwd_bwd():
        xd = x.detach().requires_grad_(True)
        loss_fn(ds(xd), y).sum().backward()

    pgd = sec4sr_core.attack("pgd", steps=args.steps)

    def pgd_run():
        pgd.run(make_oracle(ds, pgd.knowledge, n=x.shape[0]), x, y)

    base = timed(fwd_bwd, args.repeats, args.device)
    step = timed(pgd_run, args.repeats, args.device) / args.steps
    print(f"[{args.defense}] forward+backward {base * 1e3:.1f} ms; PGD-{args.steps} per step {step * 1e3:.1f} ms; "
          f"ratio {step / base:.3f} (target <= 1.3)")

    # 2. EOT: draws in one batch vs draws sequential passes
    eds = sec4sr_core.defend(system, args.eot_defense)
    batched = make_oracle(eds, "white-box", n=x.shape[0], eot=args.draws)
    single = make_oracle(eds, "white-box", n=x.shape[0], eot=1)

    def eot_batched():
        batched.loss_and_grad(x, loss_fn, y)

    def eot_sequential():
        for _ in range(args.draws):
            single.loss_and_grad(x, loss_fn, y)

    tb = timed(eot_batched, args.repeats, args.device)
    ts = timed(eot_sequential, args.repeats, args.device)
    print(f"[{args.eot_defense}] EOT {args.draws} draws: batched {tb * 1e3:.1f} ms, sequential {ts * 1e3:.1f} ms; "
          f"speed-up {ts / tb:.2f}x")


if __name__ == "__main__":
    main()
