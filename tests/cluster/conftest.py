"""Fixtures of the multi-node cluster tests: the tiny models are built before a cluster starts, and
every node process sees the same model cache as this process."""
from __future__ import annotations

import pytest

from carevl.config import load_config
from carevl.models.tiny import EXPERT_ROLES, build_tiny_models


@pytest.fixture(scope="session")
def model_cache_env() -> dict[str, str]:
    cache = load_config().paths.model_cache_dir()
    build_tiny_models(cache, ["vlm_micro", *EXPERT_ROLES])
    return {"CAREVL_MODEL_CACHE": str(cache)}
