"""Fixtures of the core tests (the toy components live in :mod:`helpers`)."""

from __future__ import annotations

import pytest

from .helpers import toy_system


@pytest.fixture
def toy():
    """A CSI-E system on the toy backbone (3 enrolled speakers, waves of 160 samples)."""
    return toy_system()
