"""How far an attack moves chosen trials: benign and adversarial margins, success and queries per utterance.

The margin is the untargeted CSI margin ``s_y − max_{j≠y} s_j`` (cosine units for GE2E); an utterance flips when it
falls below 0. Trials are the study's test trials in its seeded order (``sec4sr run --limit N`` takes the first N);
``--weakest K`` picks the K trials with the smallest benign margins instead, which is where a budget-limited
black-box attack shows first whether it works at all.

Usage::

    python benchmarks/attack_margins.py "siren:max_epoch=10" --weakest 2
    python benchmarks/attack_margins.py "square:max_iter=3000" --trials 3,15,6,1

Prints one line per utterance and a summary line.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import sec4sr_core as sec4sr
from sec4sr_core.sdk.audio import load_batch
from sec4sr_core.sdk.losses import margin_loss
from sec4sr_core.study.runner import Study, StudyConfig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("attack", help="attack spec, e.g. 'square:max_iter=3000'")
    ap.add_argument("--model", default="ge2e")
    ap.add_argument("--trials", default="", help="comma-separated indices into the test trials")
    ap.add_argument("--weakest", type=int, default=0, help="the K trials with the smallest benign margins")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--length", type=float, default=3.0, help="seconds per trial")
    args = ap.parse_args(argv)
    study = Study(StudyConfig(model=args.model, task="csi-e", seed=args.seed, length_s=args.length,
                              out="/tmp/sec4sr-attack-margins"), progress=False, store=False)
    system = study.systems["none"]
    utts, labels = study.trials.utterances, study.trials.labels
    t = int(round(args.length * 16000))
    if args.weakest:
        with torch.no_grad():
            margins = torch.cat([
                margin_loss(system(load_batch([u.path for u in utts[s:s + 16]], t)), labels[s:s + 16], "csi-e")
                for s in range(0, len(utts), 16)])
        idx = margins.argsort()[: args.weakest].tolist()
    else:
        idx = [int(v) for v in args.trials.split(",") if v] or list(range(4))
    x = load_batch([utts[i].path for i in idx], t)
    y = labels[idx]
    attack = sec4sr.attack(args.attack)
    t0 = time.perf_counter()
    adv = attack(system, x, y, seed=args.seed)
    elapsed = time.perf_counter() - t0
    r = attack.last_result
    with torch.no_grad():
        before, after = margin_loss(system(x), y, "csi-e"), margin_loss(system(adv), y, "csi-e")
    for k, i in enumerate(idx):
        print(f"trial {i:4d} ({utts[i].id}): margin {float(before[k]):+.3f} -> {float(after[k]):+.3f}  "
              f"success {bool(r.success[k])}  queries {int(r.queries[k])}")
    print(f"{args.attack}: {int(r.success.sum())}/{len(idx)} flipped, L∞ {float((adv - x).abs().max()):.4f}, "
          f"{elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
