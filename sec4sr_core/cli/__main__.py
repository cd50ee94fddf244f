"""``python -m sec4sr_core.cli``: the ``sec4sr`` command."""

from sec4sr_core.cli import main

raise SystemExit(main())
