"""Fixtures for the model-kit tests: one built model cache per session, shared with other runs.

The cache is the config's `paths.model_cache` (override with CAREVL_MODEL_CACHE through the config
layer), so a warm cache makes these tests fast; a cold one is built once (about half a minute).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from carevl.config import ModelSpec, Resources, load_config
from carevl.models.tiny import ROLES, build_tiny_models


@pytest.fixture(scope="session")
def tiny_config():
    return load_config()


@pytest.fixture(scope="session")
def model_cache(tiny_config) -> Path:
    cache = tiny_config.paths.model_cache_dir()
    build_tiny_models(cache, list(ROLES))
    return cache


@pytest.fixture(scope="session")
def micro_vlm_spec() -> ModelSpec:
    """The fast LLaVA (random Llama backbone); batch_size 2 so batches of 3 exercise chunking."""
    return ModelSpec(path="tiny:vlm_micro", kind="vlm", dtype="float32", max_length=512,
                     resources=Resources(batch_size=2))


@pytest.fixture
def shape_image() -> Image.Image:
    image = Image.new("RGB", (96, 72), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 40, 40), fill="red")
    draw.rectangle((50, 30, 90, 65), fill="blue")
    return image
