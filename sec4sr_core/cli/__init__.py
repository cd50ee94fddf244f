"""The ``sec4sr`` command line. Sub-commands live in :mod:`sec4sr_core.cli.commands`, one module each, discovered
automatically; each module defines ``register(subparsers)`` and a handler set with ``set_defaults(func=...)``.

Errors caused by input print one line (``error: ...``) and exit 2; Ctrl-C exits 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.cli import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sec4sr",
        description="Evaluate adversarial attacks and defenses on speaker recognition systems.",
    )
    parser.add_argument("--version", action="store_true", help="print versions of sec4sr and its plugins")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from sec4sr_core.plugins.manager import versions

        for dist, version in versions().items():
            print(f"{dist} {version}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except Sec4srError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", None)
        print("\ninterrupted" + (f"; finished results are kept — {hint}" if hint else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - a bug, not bad input: short message unless debugging
        if os.environ.get("SEC4SR_DEBUG"):
            import traceback

            traceback.print_exc()
        else:
            from sec4sr_core.plugins.manager import pm

            culprit = pm.blame(exc)  # the plugin whose code raised, when it is one
            where = f" in plugin {culprit.name!r} ({culprit.distribution} {culprit.version})" if culprit else ""
            print(f"internal error{where}: {type(exc).__name__}: {exc} (set SEC4SR_DEBUG=1 for the traceback)",
                  file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
