"""Fixtures of the Ray executor tests: one local Ray instance (2 CPUs) for the whole module.

(No ``__init__.py`` here on purpose: ``tests/`` is on ``sys.path``, and a package ``tests/ray`` would shadow Ray.)"""

from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray", reason='the Ray executor tests need the extra: pip install "sec4sr[ray]"')


@pytest.fixture(scope="module")
def ray_cluster(ge2e_system):
    """A local Ray instance with 2 CPUs (workers inherit this session's model store); shut down after the module."""
    os.environ["RAY_DISABLE_USAGE_STATS"] = "1"
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             runtime_env={"env_vars": {"SEC4SR_HOME": os.environ["SEC4SR_HOME"], "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same as a Ray worker with one CPU
    yield
    torch.set_num_threads(threads)
