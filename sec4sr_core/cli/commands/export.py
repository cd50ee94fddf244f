"""``sec4sr export OUT [--format csv|parquet] [--study ID] [-o FILE]``: one line per utterance and cell of a study
(every row identity field, the outcome and every metric; NaN for missing numbers), for pandas, R or a spreadsheet.

The file goes to ``OUT/results.<format>`` unless ``-o`` names another (``-o -`` prints CSV to stdout). Parquet needs
pyarrow. See :mod:`sec4sr_core.report.export` for the columns.
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("export", help="per-utterance results of a study as CSV or Parquet")
    p.add_argument("out", help="the output folder (holds results.sqlite)")
    p.add_argument("--format", default="csv", choices=["csv", "parquet"], help="file format (default csv)")
    p.add_argument("--study", help="the study (its id or a prefix; default: the one run last; see `sec4sr report "
                                   "OUT --list`)")
    p.add_argument("-o", "--output", help="file to write (default OUT/results.<format>; '-' = stdout, csv only)")
    p.set_defaults(func=run)


def run(args) -> int:
    from sec4sr_core.base.errors import ParameterError
    from sec4sr_core.report.export import export, export_records, to_csv

    if args.output == "-":
        if args.format != "csv":
            raise ParameterError("-o - (stdout) works with --format csv only; give a file name for parquet")
        sys.stdout.write(to_csv(*export_records(args.out, args.study)))
        return 0
    path = export(args.out, args.format, args.output, args.study)
    print(f"export: {path}")
    return 0
