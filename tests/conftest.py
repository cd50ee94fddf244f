"""Shared fixtures. Every test session uses its own model store (``SEC4SR_HOME``) so nothing leaks between runs;
the GE2E enrollment is computed once per session and reused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

_HOME = None


def pytest_configure(config):
    global _HOME
    import tempfile

    if not os.environ.get("SEC4SR_TEST_KEEP_HOME"):
        _HOME = tempfile.mkdtemp(prefix="sec4sr-home-")
        os.environ["SEC4SR_HOME"] = _HOME
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def sec4sr_home() -> Path:
    return Path(os.environ["SEC4SR_HOME"])


@pytest.fixture(scope="session")
def ge2e_system():
    """GE2E enrolled on the embedded corpus for CSI-E (session-wide; eval mode, CPU)."""
    import sec4sr_core

    return sec4sr_core.load_system("ge2e", task="csi-e")


@pytest.fixture(scope="session")
def embedded():
    from sec4sr_core.compose.factories import resolve_dataset

    return resolve_dataset("embedded")


@pytest.fixture(scope="session")
def test_batch(ge2e_system, embedded):
    """Eight CSI-E test utterances (B, 1, 48000) with their labels."""
    from sec4sr_core.sdk.audio import load_batch
    from sec4sr_core.compose.enroll import task_trials

    trials = task_trials("csi-e", embedded, ge2e_system.speakers, seed=0, limit=8)
    return load_batch([u.path for u in trials.utterances], 48000), trials.labels
