"""The RL tier: TRL's trainers with the judge service as reward, minutes on two CPU cores, so it runs
under `make test-rl` (CAREVL_RL_TESTS=1; .ci/run calls it) rather than in `make test`."""
from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CAREVL_RL_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="RL trainer tier: run with `make test-rl`")
    for item in items:
        if "tests/rl/" in str(item.fspath):
            item.add_marker(skip)
