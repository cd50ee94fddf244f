"""``sec4sr report OUT [--format md|html|csv] [--output FILE]``: render a study output folder's tables and plots.

Markdown and CSV go to stdout unless ``--output`` is given; HTML goes to ``OUT/report.html`` by default (one
self-contained file with the tables, the heat map, sweep curves and audio players).
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("report", help="render a study's tables and plots (md, html or csv)")
    p.add_argument("out", help="the study's output folder (holds results.sqlite)")
    p.add_argument("--format", default="md", choices=["md", "html", "csv"], help="report format (default md)")
    p.add_argument("--output", "-o", help="file to write (default: stdout for md/csv, OUT/report.html for html)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..report import render, write_report

    if args.format == "html" or args.output:
        path = write_report(args.out, args.format, args.output)
        print(f"report: {path}")
        return 0
    sys.stdout.write(render(args.out, args.format))
    if args.format == "md":
        sys.stdout.write("\n")
    return 0
