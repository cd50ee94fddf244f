"""``sec4sr run [CONFIG.toml] [options]``: run a study (one cell from flags, or a whole study from TOML).

Each ``--attack SPEC`` is a column and each ``--defense SPEC`` a row (a chain joined by ``+``); the undefended
system is always a row. Results go to ``<out>/results.sqlite`` (re-running resumes) and adversarial audio to
``<out>/audio/<setting>/<attack>/[<defense>/]<speaker>/<utterance>.wav`` (with a ``<system>-<task>/`` level first
when the study has several systems). A TOML file holds the same keys as :class:`~sec4sr_core.study.config.StudyConfig`
(see ``docs/studies.md`` and ``examples/``); flags given with a file override its values. ``--report`` also writes
the HTML report to ``<out>/report.html``. ``--executor ray [--address HEAD:PORT]`` runs the study's units as Ray
tasks (see ``docs/cluster.md``); the rows are the same as with the default local executor, and either executor
resumes a study the other started.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any


def register(sub) -> None:
    p = sub.add_parser("run", help="run a study: attacks × defenses on an enrolled system")
    p.add_argument("config", nargs="?", help="study config (TOML); flags override it")
    p.add_argument("--model", help="backbone spec (default ge2e)")
    p.add_argument("--task", choices=["csi-e", "csi-ne", "sv", "osi"])
    p.add_argument("--dataset", help="dataset spec or folder path (default embedded)")
    p.add_argument("--attack", action="append", default=None, metavar="SPEC", help="attack column (repeatable)")
    p.add_argument("--defense", action="append", default=None, metavar="SPEC", help="defense row (repeatable)")
    p.add_argument("--defense-order", choices=["sequential", "average"])
    p.add_argument("--adaptive", action="store_true", help="craft against the defended system (BPDA/EOT)")
    p.add_argument("--both-settings", action="store_true", help="run non-adaptive and adaptive")
    p.add_argument("--eot", type=int, help="EOT draws for randomized defenses when adaptive")
    p.add_argument("--targeted", action="store_true")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--limit", type=int, help="only the first N trials (seeded order)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--threshold", type=float, help="override the stored SV/OSI threshold")
    p.add_argument("--out", help="output folder (default sec4sr-out)")
    p.add_argument("--metric", action="append", default=None, metavar="NAME", help="metric (repeatable)")
    p.add_argument("--length", type=float, dest="length_s", help="trial audio length in seconds (default 3)")
    p.add_argument("--eot-check", action="store_true",
                   help="re-craft one batch of each adaptive cell on a randomized row with twice the EOT draws and "
                        "warn when the accuracy moves beyond its 95 %% interval (eot-not-converged)")
    p.add_argument("--check-benchmark", action="store_true",
                   help="evaluate a random-weights model of each backbone on the same trials and warn when it "
                        "reaches the trained benign accuracy (benchmark-too-easy)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--report", action="store_true", help="also write the HTML report to <out>/report.html")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where units (one batch of one cell) run: this process (default) or Ray tasks")
    p.add_argument("--address", help="Ray head HOST:PORT or 'auto' (--executor ray; default: a local Ray instance)")
    p.add_argument("--retries", type=int, default=2,
                   help="--executor ray: re-runs of a failing or killed task before it is recorded as failed")
    p.set_defaults(func=run)


def load_toml(path: str) -> dict[str, Any]:
    from sec4sr_core.base.errors import Sec4srError

    p = Path(path)
    if not p.exists():
        raise Sec4srError(f"config file not found: {p}")
    if p.is_dir():
        raise Sec4srError(f"{p} is a folder, not a TOML config file; pass the study's .toml file")
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise Sec4srError(f"{p}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise Sec4srError(f"{p}: invalid TOML: the file is not UTF-8 text (a binary file?)") from None
    except OSError as exc:
        raise Sec4srError(f"cannot read the config file {p}: {exc.strerror or exc}") from None


def config_from_args(args) -> Any:
    values: dict[str, Any] = load_toml(args.config) if args.config else {}
    flat = {
        "model": args.model, "task": args.task, "dataset": args.dataset, "attacks": args.attack,
        "defenses": args.defense, "defense_order": args.defense_order, "eot": args.eot, "seed": args.seed,
        "device": args.device, "limit": args.limit, "batch_size": args.batch_size, "threshold": args.threshold,
        "out": args.out, "metrics": args.metric, "length_s": getattr(args, "length_s", None),
    }
    values.update({k: v for k, v in flat.items() if v is not None})
    if args.targeted:
        values["targeted"] = True
    if getattr(args, "eot_check", False):
        values["eot_check"] = True
    if getattr(args, "check_benchmark", False):
        values["check_benchmark"] = True
    if args.both_settings:
        values["settings"] = ["non-adaptive", "adaptive"]
    elif args.adaptive:
        values["settings"] = ["adaptive"]
    return make_config(values)


def make_config(values: dict[str, Any]) -> Any:
    """A validated :class:`StudyConfig`; a failure becomes one ParameterError line naming the field."""
    from pydantic import ValidationError

    from sec4sr_core.base.errors import ParameterError
    from sec4sr_core.study.config import StudyConfig

    try:
        return StudyConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(study)"
        msg = err["msg"]
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
        raise ParameterError(f"study config: {field}: {msg}") from None


def run(args) -> int:
    from sec4sr_core.study.executors import make_executor
    from sec4sr_core.study.runner import Study, format_table

    config = config_from_args(args)
    executor = make_executor(getattr(args, "executor", "local"), getattr(args, "address", None),
                             getattr(args, "retries", 2))
    args.resume_hint = (f"run the same command again, with either executor, to resume "
                        f"(results in {config.out}/results.sqlite)")
    try:
        study = Study(config, progress=not args.quiet and sys.stderr.isatty())
        summary = study.run(executor)
    finally:
        executor.close()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_table(summary))
        print(f"\nresults: {Path(config.out) / 'results.sqlite'}")
    if args.report:
        from sec4sr_core.report import write_report

        path = write_report(config.out, "html", study=summary.get("study"))
        if not args.json:
            print(f"report: {path}")
    if study.failed:
        print(f"{len(study.failed)} unit(s) failed after {args.retries} retries and were recorded in the failures "
              f"table (first: {study.failed[0][0].describe()}: {study.failed[0][1]}); run the same command again "
              f"to retry them", file=sys.stderr)
        return 1
    return 0
