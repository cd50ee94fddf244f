"""Sub-commands of the ``sec4sr`` CLI, one module each (discovered by :mod:`sec4sr_core.cli`)."""
