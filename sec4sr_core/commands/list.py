"""``sec4sr list [KIND] [--json]``: registered components with their distribution, summary and parameters."""

from __future__ import annotations

import json

from ..registry import KINDS

PLURAL = {k + "s": k for k in KINDS}


def register(sub) -> None:
    p = sub.add_parser("list", help="list registered attacks, defenses, models, metrics, datasets and presets")
    p.add_argument("kind", nargs="?", choices=sorted(PLURAL) + list(KINDS), help="only this kind")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..plugins import get_registry

    reg = get_registry()
    kinds = [PLURAL.get(args.kind, args.kind)] if args.kind else list(KINDS)
    items = [reg.entries[k][n].as_dict() for k in kinds for n in reg.names(k)]
    if args.json:
        print(json.dumps(items, indent=2, default=str))
        return 0
    for kind in kinds:
        rows = [i for i in items if i["kind"] == kind]
        if not rows:
            continue
        print(f"{kind}s:")
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            params = ", ".join(
                f"{k}={v.get('default')!r}" if isinstance(v, dict) else f"{k}={v!r}" for k, v in r["params"].items()
            )
            print(f"  {r['name']:<{width}}  {r['summary']}  [{r['distribution']}]")
            if params:
                print(f"  {'':<{width}}    params: {params}")
    return 0
