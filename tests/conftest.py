"""Shared fixtures. Tests never download anything: tiny models are built locally on first use."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ACCEPT_EXPERIMENTAL_FEATURES", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ray_local():
    """One in-process Ray instance for all tests marked `ray` (2 CPUs, like the CI machine)."""
    import ray

    for attempt in range(2):
        if ray.is_initialized():
            break
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        except Exception:  # noqa: BLE001 - on an overloaded machine the raylet can die waiting for its agent
            ray.shutdown()
            if attempt:
                raise
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def provider():
    """A real chat-completions server on 127.0.0.1 (see tests/chat_provider.py)."""
    from tests.chat_provider import start_provider

    fake = start_provider()
    yield fake
    fake.stop()
