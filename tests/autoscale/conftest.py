"""Fixtures of the autoscaling tier (`make test-autoscale`): one fake GPU cloud built from cluster.yaml
(autoscaler v2, the KubeRay default) that the scenarios share in order, each starting from no GPU
instance; a scaling timeline per scenario, saved as JSON and PNG under runs/autoscale (or
CAREVL_AUTOSCALE_OUT). The tiny models are built before the cloud starts.

The cloud runs beside any other Ray on the machine: it never calls `ray stop`, uses its own free ports,
temp dir and token, and kills only its own processes when it stops.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from carevl.config import REPO_ROOT, load_config
from carevl.kit.tiny import EXPERT_ROLES, build_tiny_models
from carevl.testing.fake_cloud import FakeCloud
from carevl.testing.serve_scaling import tier_env
from carevl.testing.timeline import Timeline

OUT = Path(os.environ.get("CAREVL_AUTOSCALE_OUT", REPO_ROOT / "runs" / "autoscale"))


@pytest.fixture(scope="session")
def model_cache_env() -> dict[str, str]:
    cache = load_config().paths.model_cache_dir()
    build_tiny_models(cache, ["vlm_micro", *EXPERT_ROLES])
    return {"CAREVL_MODEL_CACHE": str(cache)}


def start_cloud(autoscaler: str, env: dict[str, str]) -> FakeCloud:
    return FakeCloud(autoscaler=autoscaler, env_extra={**env, **tier_env()}).start()


@pytest.fixture(scope="session")
def cloud(model_cache_env):
    fake = start_cloud("v2", model_cache_env)
    yield fake
    fake.stop()


@pytest.fixture
def timeline(cloud, request):
    """The scaling timeline of one scenario; the test adds its figures with `record(...)`."""
    recorder = Timeline(cloud).start()
    recorder.extra = {}
    yield recorder
    recorder.stop()
    recorder.save(OUT, request.node.name.replace("[", "_").replace("]", ""), recorder.extra)


def record(timeline: Timeline, run) -> None:
    """Keep a scenario's figures with its timeline (and print them: `pytest -s` shows them)."""
    timeline.extra.update(figures=run.figures, details=run.details)
    print(f"\n{run.name}: {json.dumps(run.figures)}")
