from sec4sr_core.testing import sec4sr_plugin  # noqa: F401 - the contract kit's inline-plugin fixture
