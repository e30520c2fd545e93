"""Fixtures of the training tests (helpers live in train_checks.py)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def curated_pairs(tmp_path_factory) -> Path:
    """RUN_DIR with high/ and low/ PAIR_SCHEMA Parquet built from 12 synthetic items."""
    from carevl.training.synthetic_pairs import write_synthetic_pairs

    run = tmp_path_factory.mktemp("curated")
    counts = write_synthetic_pairs(str(run), 12, seed=0)
    assert counts["high"] > 8 and counts["low"] > 4
    return run
