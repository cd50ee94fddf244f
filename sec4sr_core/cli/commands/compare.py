"""``sec4sr compare OUT1 OUT2 ... [--json]``: the cells two or more studies share, side by side, with n and 95 %
intervals, flagging (``*``) the cells whose intervals do not overlap. ``OUT@STUDY`` picks a study of a folder other
than its latest one. See :mod:`sec4sr_core.report.compare`.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("compare", help="side-by-side cells of several studies, with intervals")
    p.add_argument("outs", nargs="+", metavar="OUT", help="output folders (OUT or OUT@STUDY), two or more")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.set_defaults(func=run)


def run(args) -> int:
    from sec4sr_core.report.compare import compare, compare_table, format_compare, overlaps

    c = compare(args.outs)
    if args.json:
        cells = []
        for k in c.keys:
            vals = c.values[k]
            present = [v for v in vals if v]
            cells.append({
                "key": list(k),
                "studies": [None if v is None else {"value": v[0], "ci": v[1], "n": v[2]} for v in vals],
                "differs": any(not overlaps(a[1], b[1]) for i, a in enumerate(present) for b in present[i + 1:]),
            })
        print(json.dumps({"studies": c.labels, "targeted": c.targeted, "cells": cells}, indent=2))
        return 0
    compare_table(c)
    print(format_compare(c))
    return 0
