"""The contract kit's fixtures (``sec4sr_contract``, ``sec4sr_plugin``), as plugin authors get them with
``pytest -p sec4sr_core.testing``."""

from sec4sr_core.testing import sec4sr_contract, sec4sr_plugin  # noqa: F401
