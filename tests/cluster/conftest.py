"""Fixtures of the multi-node cluster tests: the tiny models are built before a cluster starts, and
every node process sees the same model cache as this process.

These tests start a head and two worker raylets as separate processes and kill parts of them, which
takes minutes per scenario. The default suite runs only the tests marked `cluster_ci` (the three curation
faults struck in one run, and the metrics that run exports); `make test-cluster` (CAREVL_CLUSTER_TESTS=1)
runs them all."""
from __future__ import annotations

import os

import pytest

from carevl.config import load_config
from carevl.kit.tiny import EXPERT_ROLES, build_tiny_models


@pytest.fixture(scope="session")
def model_cache_env() -> dict[str, str]:
    cache = load_config().paths.model_cache_dir()
    build_tiny_models(cache, ["vlm_micro", *EXPERT_ROLES])
    return {"CAREVL_MODEL_CACHE": str(cache)}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CAREVL_CLUSTER_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="multi-process cluster fault test: run with `make test-cluster`")
    for item in items:
        if "tests/cluster/" in str(item.fspath) and item.get_closest_marker("cluster_ci") is None:
            item.add_marker(skip)
