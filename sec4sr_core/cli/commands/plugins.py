"""``sec4sr plugins``: every plugin distribution with its version and status.

Status is ``loaded``, ``skipped`` (hidden by ``SEC4SR_PLUGINS``), ``error`` (failed to import, a hook raised, a
misspelled hook, a component failed to load; the message says which) or ``disabled`` (it registers a name an
earlier plugin already registered; the message names both distributions). A plugin problem never makes this
command fail: it exits 0 and shows the problem on the plugin's line.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("plugins", help="show plugin distributions, versions and load status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from sec4sr_core.plugins.manager import statuses

    items = [s.as_dict() for s in statuses()]
    if args.json:
        # "error" is kept for readers of the old format; problems are per plugin now
        print(json.dumps({"plugins": items, "error": None}, indent=2))
        return 0
    for s in items:
        state = s["status"] + (f": {s['error']}" if s["error"] else "")
        print(f"{s['name']:<20} {s['distribution']:<32} {s['version']:<10} {state}")
    return 0
