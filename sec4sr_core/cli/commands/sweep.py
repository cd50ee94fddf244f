"""``sec4sr sweep --defense NAME --param KEY=V1,V2,... --attack SPEC [...] [run options]``: the paper's tuning curves.

Runs one study whose defense rows are the defense at each parameter value (plus the undefended row), into one output
folder, then plots accuracy against the parameter per attack (``<out>/sweep.png``), prints the sweep table and
writes the HTML report. ``--defense`` may carry fixed parameters (``at:level=wave``); the swept key is set on top.
Re-running resumes like ``sec4sr run``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def register(sub) -> None:
    p = sub.add_parser("sweep", help="accuracy against a defense parameter, per attack (tuning curves)")
    p.add_argument("config", nargs="?", help="study config (TOML) for the other settings; flags override it")
    p.add_argument("--defense", required=True, metavar="SPEC", help="the swept defense (name or name:k=v,...)")
    p.add_argument("--param", required=True, metavar="KEY=V1,V2,...", help="the parameter and its values")
    p.add_argument("--attack", action="append", default=None, metavar="SPEC", help="attack column (repeatable)")
    p.add_argument("--model", help="backbone spec (default ge2e)")
    p.add_argument("--task", choices=["csi-e", "csi-ne", "sv", "osi"])
    p.add_argument("--dataset", help="dataset spec or folder path (default embedded)")
    p.add_argument("--adaptive", action="store_true", help="craft against each defended system (BPDA/EOT)")
    p.add_argument("--both-settings", action="store_true", help="run non-adaptive and adaptive")
    p.add_argument("--eot", type=int, help="EOT draws for randomized defenses when adaptive")
    p.add_argument("--targeted", action="store_true")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--limit", type=int, help="only the first N trials (seeded order)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--length", type=float, dest="length_s", help="trial audio length in seconds")
    p.add_argument("--metric", action="append", default=None, metavar="NAME", help="metric (repeatable)")
    p.add_argument("--out", help="output folder (default sec4sr-sweep-<defense>-<key>)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def sweep_rows(defense: str, param: str) -> tuple[str, str, list[Any], dict[str, Any]]:
    """(base spec, key, values, {row spec: value}) of ``--defense`` and ``--param key=v1,v2``."""
    from sec4sr_core.base.errors import ParameterError
    from sec4sr_core.base.params import _coerce, format_spec, parse_spec

    name, fixed = parse_spec(defense)
    if "+" in defense:
        raise ParameterError("sweep --defense takes one defense, not a chain")
    key, eq, raw = param.partition("=")
    key = key.strip()
    values = [_coerce(v) for v in raw.split(",") if v.strip()]
    if not eq or not key or not values:
        raise ParameterError(f"--param must look like key=v1,v2,... (got {param!r})")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ParameterError(f"--param {key}: sweep values must be numbers (got {raw!r})")
    if len(set(values)) != len(values):
        raise ParameterError(f"--param {key}: a value is listed twice")
    if key in fixed:
        raise ParameterError(f"--param {key} is also fixed in --defense {defense!r}")
    rows = {format_spec(name, {**fixed, key: v}): v for v in values}
    return format_spec(name, fixed), key, values, rows


def run(args) -> int:
    from sec4sr_core.cli.commands.run import load_toml, make_config
    from sec4sr_core.compose.factories import slug
    from sec4sr_core.report import load_study, sweep_png, write_report
    from sec4sr_core.report.tables import sweep_table
    from sec4sr_core.study.runner import Study

    base, key, values, rows = sweep_rows(args.defense, args.param)
    values_cfg: dict[str, Any] = load_toml(args.config) if args.config else {}
    flat = {
        "model": args.model, "task": args.task, "dataset": args.dataset, "attacks": args.attack, "eot": args.eot,
        "seed": args.seed, "device": args.device, "limit": args.limit, "batch_size": args.batch_size,
        "metrics": args.metric, "out": args.out, "length_s": args.length_s,
    }
    values_cfg.update({k: v for k, v in flat.items() if v is not None})
    values_cfg["defenses"] = list(rows)
    values_cfg.setdefault("out", f"sec4sr-sweep-{slug(base)}-{slug(key)}")
    values_cfg.setdefault("name", f"sweep of {base} over {key}")
    if args.targeted:
        values_cfg["targeted"] = True
    if args.both_settings:
        values_cfg["settings"] = ["non-adaptive", "adaptive"]
    elif args.adaptive:
        values_cfg["settings"] = ["adaptive"]
    config = make_config(values_cfg)
    args.resume_hint = f"run the same command again to resume (results in {config.out}/results.sqlite)"
    study = Study(config, progress=not args.quiet and sys.stderr.isatty())
    sweep = {"defense": base, "param": key, "values": values, "rows": rows}
    summary = study.run()
    study.store.set_study_meta(study.study_id, "sweep", sweep)
    study.store.set_meta("sweep", sweep)
    data = load_study(config.out, study.study_id)
    from sec4sr_core.base.errors import Sec4srError
    from sec4sr_core.sdk.audio import notice

    plot = Path(config.out) / "sweep.png"
    try:
        png = sweep_png(data)
    except Sec4srError as exc:
        notice(f"no sweep plot: {exc}")
        png = None
    if png is not None:
        plot.write_bytes(png)
    report = write_report(config.out, "html", study=study.study_id)
    if args.json:
        summary["sweep"] = {"defense": base, "param": key, "values": values, "rows": rows, "plot": str(plot)}
        print(json.dumps(summary, indent=2, default=str))
        return 0
    t = sweep_table(data)
    widths = [max(len(h), *(len(r[i]) for r in t.rows)) for i, h in enumerate(t.headers)]
    print(t.title)
    print("  ".join(h.rjust(w) for h, w in zip(t.headers, widths)))
    for r in t.rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    print(f"\nresults: {Path(config.out) / 'results.sqlite'}\nplot: {plot}\nreport: {report}")
    return 0
