"""A local Ray cluster of 2 CPUs, started once per test session (tests that need it import this fixture).

Its workers can import the helper modules of tests/ (scripted responders such as `explanation_following`):
the cluster's processes start with that folder on PYTHONPATH.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # each test module importing this fixture gets its own: the first one starts Ray
        yield ray
        return
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), before]))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    yield ray
    ray.shutdown()
    gc.collect()  # finalizers now, not inside a later ast.parse (see tests/experiments/test_distributed_runs.py)
