"""Fixtures for the defense tests."""

from __future__ import annotations

import pytest

from .helpers import DEVICES


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param
