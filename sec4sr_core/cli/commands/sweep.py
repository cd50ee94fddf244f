"""``sec4sr sweep [CONFIG] --param KEY=V1,V2,... [--defense SPEC | --attack SPEC] [...] [run options]``: tuning
curves over a defense parameter, an attack parameter or the study's EOT draws.

* **defense sweep** (``--defense SPEC``): the rows are the defense at each value (plus the undefended row, always
  present); every ``--attack`` is a column.
* **attack sweep** (no ``--defense``; ``KEY`` a parameter of the single ``--attack``, e.g. ``epsilon``, ``snr_db``,
  ``steps``, ``max_queries``): the columns are the attack at each value; ``--row SPEC`` (repeatable, or the config's
  ``defenses``) adds defense rows beside the undefended one.
* **EOT sweep** (``--param eot=1,2,4``): one study per number of EOT draws, all in the same folder (adaptive
  setting by default, since EOT only changes attacks crafted on randomized rows).

Each run writes ``<out>/sweep.png`` (accuracy against the parameter with 95 % Wilson bands, log-x when the values
span a factor ≥ 8), prints the sweep table and writes the HTML report. For attack and EOT sweeps, accuracy that
*rises* as the attack gets stronger is flagged (``sweep-not-monotone``). Re-running resumes like ``sec4sr run``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

def register(sub) -> None:
    p = sub.add_parser("sweep", help="accuracy against a defense or attack parameter or EOT draws (tuning curves)")
    p.add_argument("config", nargs="?", help="study config (TOML) for the other settings; flags override it")
    p.add_argument("--defense", metavar="SPEC", help="the swept defense (name or name:k=v,...); without it the "
                                                     "single --attack (or the EOT draws) is swept")
    p.add_argument("--param", required=True, metavar="KEY=V1,V2,...", help="the parameter and its values")
    p.add_argument("--attack", action="append", default=None, metavar="SPEC", help="attack column (repeatable); "
                   "in an attack sweep, the one swept attack")
    p.add_argument("--row", action="append", default=None, metavar="SPEC",
                   help="attack/EOT sweeps: a fixed defense row (repeatable; the undefended row is always there)")
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
    p.add_argument("--out", help="output folder (default sec4sr-sweep-<swept>-<key>)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def sweep_values(param: str) -> tuple[str, list[Any]]:
    """(key, values) of ``--param key=v1,v2,...``: distinct numbers."""
    from sec4sr_core.base.errors import ParameterError
    from sec4sr_core.base.params import _coerce

    key, eq, raw = param.partition("=")
    key = key.strip()
    values = [_coerce(v) for v in raw.split(",") if v.strip()]
    if not eq or not key or not values:
        raise ParameterError(f"--param must look like key=v1,v2,... (got {param!r})")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ParameterError(f"--param {key}: sweep values must be numbers (got {raw!r})")
    if len(set(values)) != len(values):
        raise ParameterError(f"--param {key}: a value is listed twice")
    return key, values


def sweep_rows(defense: str, param: str) -> tuple[str, str, list[Any], dict[str, Any]]:
    """(base spec, key, values, {row spec: value}) of ``--defense`` and ``--param key=v1,v2``."""
    from sec4sr_core.base.errors import ParameterError
    from sec4sr_core.base.params import format_spec, parse_spec

    name, fixed = parse_spec(defense)
    if "+" in defense:
        raise ParameterError("sweep --defense takes one defense, not a chain")
    key, values = sweep_values(param)
    if key in fixed:
        raise ParameterError(f"--param {key} is also fixed in --defense {defense!r}")
    rows = {format_spec(name, {**fixed, key: v}): v for v in values}
    return format_spec(name, fixed), key, values, rows


def sweep_columns(attack: str, param: str) -> tuple[str, str, list[Any], dict[str, Any]]:
    """(base spec, key, values, {column spec: value}) of an attack sweep; ``key`` must be a parameter of the attack
    (its preset's values apply, the swept key on top)."""
    from sec4sr_core.base.errors import ParameterError
    from sec4sr_core.base.params import format_spec, parse_spec
    from sec4sr_core.plugins.manager import get_registry

    name, fixed = parse_spec(attack)
    key, values = sweep_values(param)
    if key in fixed:
        raise ParameterError(f"--param {key} is also fixed in --attack {attack!r}")
    cls, params, _ = get_registry().resolve("attack", attack)
    known = list(type(params).model_fields)
    if key not in known:
        raise ParameterError(f"--param {key}: attack {name!r} has no parameter {key!r} (its parameters: "
                             f"{', '.join(known)}); `--param eot=...` sweeps the EOT draws")
    cols = {format_spec(name, {**fixed, key: v}): v for v in values}
    for spec in cols:
        get_registry().resolve("attack", spec)  # each value validated before any work
    return format_spec(name, fixed), key, values, cols


def _base_config(args) -> dict[str, Any]:
    from sec4sr_core.cli.commands.run import load_toml

    values_cfg: dict[str, Any] = load_toml(args.config) if args.config else {}
    flat = {
        "model": args.model, "task": args.task, "dataset": args.dataset, "attacks": args.attack, "eot": args.eot,
        "seed": args.seed, "device": args.device, "limit": args.limit, "batch_size": args.batch_size,
        "metrics": args.metric, "out": args.out, "length_s": args.length_s, "defenses": args.row,
    }
    values_cfg.update({k: v for k, v in flat.items() if v is not None})
    if args.targeted:
        values_cfg["targeted"] = True
    if args.both_settings:
        values_cfg["settings"] = ["non-adaptive", "adaptive"]
    elif args.adaptive:
        values_cfg["settings"] = ["adaptive"]
    return values_cfg


def plan(args) -> tuple[dict[str, Any], list[tuple[Any, dict[str, Any]]]]:
    """The sweep's metadata and the study configurations to run, as (value or None, config values) pairs: one
    study for defense and attack sweeps (value None), one per value for EOT sweeps."""
    from sec4sr_core.base.errors import ParameterError
    from sec4sr_core.compose.factories import slug

    cfg = _base_config(args)
    if args.defense:
        if args.row:
            raise ParameterError("--row adds fixed rows to attack/EOT sweeps; a defense sweep's rows are --defense "
                                 "at each value")
        base, key, values, rows = sweep_rows(args.defense, args.param)
        cfg["defenses"] = list(rows)
        cfg.setdefault("out", f"sec4sr-sweep-{slug(base)}-{slug(key)}")
        cfg.setdefault("name", f"sweep of {base} over {key}")
        return {"kind": "defense", "defense": base, "param": key, "values": values, "rows": rows}, [(None, cfg)]
    key, values = sweep_values(args.param)
    if key == "eot":
        if not all(isinstance(v, int) and v >= 1 for v in values):
            raise ParameterError("--param eot: EOT draws must be whole numbers ≥ 1")
        if not cfg.get("attacks"):
            raise ParameterError("an EOT sweep needs at least one --attack")
        cfg.setdefault("settings", ["adaptive"])
        cfg.setdefault("out", "sec4sr-sweep-eot")
        cfg.setdefault("name", "sweep over EOT draws")
        studies = [(v, {**cfg, "eot": v, "name": f"{cfg['name']} (eot={v})"}) for v in values]
        return {"kind": "study", "param": "eot", "values": values, "studies": {}}, studies
    attacks = cfg.get("attacks") or []
    if len(attacks) != 1:
        raise ParameterError("an attack sweep takes exactly one --attack (the swept one), or give --defense to "
                             f"sweep a defense parameter (got {len(attacks)} attacks)")
    base, key, values, cols = sweep_columns(attacks[0], args.param)
    cfg["attacks"] = list(cols)
    cfg.setdefault("out", f"sec4sr-sweep-{slug(base)}-{slug(key)}")
    cfg.setdefault("name", f"sweep of {base} over {key}")
    return {"kind": "attack", "attack": base, "param": key, "values": values, "columns": cols}, [(None, cfg)]


def run(args) -> int:
    from sec4sr_core.base.errors import Sec4srError
    from sec4sr_core.cli.commands.run import make_config
    from sec4sr_core.report import load_study, sweep_png, write_report
    from sec4sr_core.report.tables import sweep_table
    from sec4sr_core.sdk.audio import notice
    from sec4sr_core.study.runner import Study

    sweep, plans = plan(args)
    configs = [(v, make_config(c)) for v, c in plans]
    out = Path(configs[0][1].out)
    args.resume_hint = f"run the same command again to resume (results in {out}/results.sqlite)"
    studies = []
    for v, c in configs:  # one at a time: an EOT sweep's studies share the folder, each enrolls its own system
        study = Study(c, progress=not args.quiet and sys.stderr.isatty())
        study.run()
        if v is not None:
            sweep["studies"][str(v)] = study.study_id
        studies.append((v, study))
    last = studies[-1][1]
    for _, study in studies:  # every study of an EOT sweep knows the whole sweep
        study.store.set_study_meta(study.study_id, "sweep", sweep)
    last.store.set_meta("sweep", sweep)
    apply_sweep_warnings(out, last.study_id)
    data = load_study(out, last.study_id)
    plot = out / "sweep.png"
    try:
        png = sweep_png(data)
    except Sec4srError as exc:
        notice(f"no sweep plot: {exc}")
        png = None
    if png is not None:
        plot.write_bytes(png)
    report = write_report(out, "html", study=None if len(studies) > 1 else last.study_id)
    if args.json:
        summary = data.summary
        summary["sweep"] = {**sweep, "plot": str(plot)}
        print(json.dumps(summary, indent=2, default=str))
        return 0
    t = sweep_table(data)
    widths = [max(len(h), *(len(r[i]) for r in t.rows)) for i, h in enumerate(t.headers)]
    print(t.title)
    print("  ".join(h.rjust(w) for h, w in zip(t.headers, widths)))
    for r in t.rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    warned = [m for r in data.summary["results"] for m in r.get("warning_messages") or []
              if m.startswith("accuracy rises")]
    for m in dict.fromkeys(warned):
        print(f"! {m}")
    print(f"\nresults: {out / 'results.sqlite'}\nplot: {plot}\nreport: {report}")
    return 0


def apply_sweep_warnings(out: Path, study: str) -> int:
    """Store the ``sweep-not-monotone`` warnings of the sweep whose last study is ``study``; returns their count."""
    from sec4sr_core.report.tables import load_study, sweep_points
    from sec4sr_core.study import reliability
    from sec4sr_core.study.store import ResultStore

    data = load_study(out, study)
    found = reliability.sweep_warnings(sweep_points(data), data.sweep or {})
    with ResultStore(out / "results.sqlite") as store:
        for key, codes in found:
            store.add_warnings("WHERE system=? AND task=? AND defense=? AND attack=? AND setting=?",
                               (key["system"], key["task"], key["defense"], key["attack"], key["setting"]), codes,
                               study=key["study"])
    return len(found)
