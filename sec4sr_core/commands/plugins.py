"""``sec4sr plugins``: every plugin distribution with its version and status (loaded, or its error)."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("plugins", help="show plugin distributions, versions and load status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import PluginError
    from ..plugins import statuses

    try:
        items = [s.as_dict() for s in statuses()]
        conflict = ""
    except PluginError as exc:  # duplicate names: still show what loaded
        from ..plugins import _status

        items = [s.as_dict() for s in _status.values()]
        conflict = str(exc)
    if args.json:
        print(json.dumps({"plugins": items, "error": conflict or None}, indent=2))
        return 1 if conflict else 0
    for s in items:
        state = s["status"] + (f": {s['error']}" if s["error"] else "")
        print(f"{s['name']:<20} {s['distribution']:<32} {s['version']:<10} {state}")
    if conflict:
        print(f"error: {conflict}")
        return 1
    return 0
