"""``sec4sr report OUT [--study ID] [--list] [--format md|html|csv] [--output FILE]``: render the studies of an
output folder — every study stored there, each with its configuration, or the one ``--study`` names.

Markdown and CSV go to stdout unless ``--output`` is given; HTML goes to ``OUT/report.html`` by default (one
self-contained file with the tables, the heat map, sweep curves and audio players).
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("report", help="render the studies of an output folder (md, html or csv)")
    p.add_argument("out", help="the output folder (holds results.sqlite)")
    p.add_argument("--format", default="md", choices=["md", "html", "csv"], help="report format (default md)")
    p.add_argument("--output", "-o", help="file to write (default: stdout for md/csv, OUT/report.html for html)")
    p.add_argument("--study", help="only this study (its id, or a prefix of it; see --list)")
    p.add_argument("--list", action="store_true", help="list the studies stored in OUT and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    from sec4sr_core.report import render, study_ids, write_report

    if args.list:
        for s in study_ids(args.out):
            c = s["config"] or {}
            print(f"{s['id']}  rows {s['rows']:>6}  seed {c.get('seed')}  attacks {','.join(c.get('attacks') or []) or '-'}"
                  f"  defenses {','.join(c.get('defenses') or []) or '-'}" + (f"  {s['name']}" if s["name"] else ""))
        return 0
    if args.format == "html" or args.output:
        path = write_report(args.out, args.format, args.output, study=args.study)
        print(f"report: {path}")
        return 0
    sys.stdout.write(render(args.out, args.format, study=args.study))
    if args.format == "md":
        sys.stdout.write("\n")
    return 0
