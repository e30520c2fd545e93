"""Fixtures for the model-loading tests (the model cache and a test image come from tests/conftest.py)."""
from __future__ import annotations

import pytest

from carevl.config import ModelSpec, Resources


@pytest.fixture(scope="session")
def micro_vlm_spec() -> ModelSpec:
    """The fast LLaVA (random Llama backbone); batch_size 2 so batches of 3 exercise chunking."""
    return ModelSpec(path="tiny:vlm_micro", kind="vlm", dtype="float32", max_length=512,
                     resources=Resources(batch_size=2))
