"""``sec4sr transfer --models a,b,... --attack SPEC [--ensemble a+b] [--task T] [--limit K] [--out OUT]``: craft on
each source backbone (or ensemble, averaged loss) and test on every backbone; prints the source × target matrix of
attack success with Wilson 95 % intervals and writes it to ``<out>/transfer.json``.

Trials, batches, seeds and the 16-bit quantisation are those of ``sec4sr run`` (:mod:`sec4sr_core.study.craft`), so
the diagonal is the white-box result of ``sec4sr run --model M --attack SPEC`` on the same trials."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("transfer", help="transfer matrix: craft on one backbone (or an ensemble), test on others")
    p.add_argument("--models", required=True, help="comma-separated backbone specs (sources and targets), "
                                                   "e.g. ge2e,ecapa,xvector")
    p.add_argument("--ensemble", action="append", default=[], metavar="A+B",
                   help="an extra source: the ensemble of some of --models with averaged loss (repeatable)")
    p.add_argument("--attack", required=True, help="attack spec or preset, e.g. pgd-10")
    add_study_options(p, "transfer.json")
    p.set_defaults(func=run)


def add_study_options(p, written: str) -> None:
    """The flags shared with ``sec4sr run`` that :func:`study_config` reads, plus ``--out`` (the folder ``written``
    goes to) and ``--json``; used by ``transfer`` and ``channels``."""
    p.add_argument("--task", default="csi-e", choices=["csi-e", "csi-ne", "sv", "osi"])
    p.add_argument("--dataset", default="embedded", help="dataset spec or folder path (default embedded)")
    p.add_argument("--limit", type=int, help="only the first N trials (seeded order)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--length", type=float, dest="length_s", help="trial audio length in seconds (default 3)")
    p.add_argument("--targeted", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="sec4sr-out", help=f"output folder for {written} (default sec4sr-out)")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of the table")


def study_config(args):
    """The :class:`StudyConfig` of the flags shared with ``sec4sr run`` (one ParameterError line when invalid)."""
    from sec4sr_core.cli.commands.run import make_config

    values = {"task": args.task, "dataset": args.dataset, "seed": args.seed, "limit": args.limit,
              "batch_size": args.batch_size, "device": args.device, "out": args.out, "targeted": args.targeted,
              "save_audio": False, "metrics": [], "gradient_check": False}
    if args.length_s is not None:
        values["length_s"] = args.length_s
    return make_config(values)


def run(args) -> int:
    from sec4sr_core.study.transfer import transfer

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    config = study_config(args)
    verbose = sys.stderr.isatty() and not args.json
    result = transfer(models, args.attack, config, args.ensemble,
                      progress=(lambda msg: print(msg, file=sys.stderr)) if verbose else None)
    doc = result.as_dict()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(result.table())
        print(f"\nresults: {out / 'transfer.json'}")
    return 0
