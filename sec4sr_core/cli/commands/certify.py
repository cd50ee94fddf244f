"""``sec4sr certify --model M --task T --sigma S --n N --n0 N0 --alpha A [--limit K] [--out OUT]``: certified
robustness of the system smoothed by ``smooth:sigma=S`` (randomized smoothing, Cohen et al.'s CERTIFY): prints
certified accuracy against L2 radius, the radius as SNR in dB, Clopper–Pearson bounds and abstentions; stores each
trial in ``OUT/results.sqlite`` (resumable) and writes ``OUT/certify.{md,png,html}``."""

from __future__ import annotations

import json
import math
import sys


def register(sub) -> None:
    p = sub.add_parser("certify", help="certified accuracy against L2 radius by randomized smoothing")
    p.add_argument("--model", default="ge2e", help="backbone spec (default ge2e)")
    p.add_argument("--task", default="csi-e", choices=["csi-e", "csi-ne", "sv", "osi"], help="task (default csi-e)")
    p.add_argument("--dataset", default="embedded", help="dataset spec or folder path (default embedded)")
    p.add_argument("--sigma", type=float, default=0.005,
                   help="noise standard deviation per sample, in [-1, 1] amplitude units (default 0.005)")
    p.add_argument("--n", type=int, default=100, help="estimation draws per trial (default 100)")
    p.add_argument("--n0", type=int, default=10, help="selection draws per trial (default 10)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability of each certificate (default 0.001)")
    p.add_argument("--defense", default="", metavar="CHAIN", help="base defense chain behind the noise (default none)")
    p.add_argument("--radius", type=float, action="append", metavar="R",
                   help="L2 radius of a table row (repeatable; default 0 and 1/4, 1/2, 3/4 of the largest "
                        "radius n draws can certify)")
    p.add_argument("--limit", type=int, help="only the first K trials (seeded order)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=256, help="noisy copies per forward pass (default 256)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--length", type=float, dest="length_s", help="trial audio length in seconds (default 3)")
    p.add_argument("--out", default="sec4sr-out", help="output folder (default sec4sr-out)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def run(args) -> int:
    from sec4sr_core.base.errors import ParameterError
    from sec4sr_core.report import certify as report
    from sec4sr_core.study.certify import run_certify

    if not 0.0 < args.sigma <= 1.0:
        raise ParameterError(f"--sigma must be in (0, 1] amplitude units, got {args.sigma}")
    if args.radius and any(r < 0 or not math.isfinite(r) for r in args.radius):
        raise ParameterError(f"--radius must be finite and >= 0, got {args.radius}")

    def progress(done: int, total: int) -> None:
        if not (args.quiet or args.json):
            print(f"\rcertified {done}/{total} trials", end="", file=sys.stderr, flush=True)

    result = run_certify(args.model, args.task, args.dataset, args.sigma, args.n, args.n0, args.alpha, args.limit,
                         args.seed, args.out, args.defense, args.batch, device=args.device, length_s=args.length_s,
                         radii=sorted(set(args.radius)) if args.radius else None, progress=progress)
    if not (args.quiet or args.json) and result.computed:
        print(file=sys.stderr)
    paths = report.write(args.out, result)
    if args.json:
        doc = report.summary(result)
        doc["files"] = {k: str(v) for k, v in paths.items()}
        print(json.dumps(doc, indent=2))
        return 0
    print(report.text(result), end="")
    reused = len(result.records) - result.computed
    print(f"{result.computed} trials certified in {result.seconds:.1f} s" + (f", {reused} read back" if reused else ""))
    print(f"wrote {paths['markdown']}, {paths['png']}, {paths['html']}")
    return 0
