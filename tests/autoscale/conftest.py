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
from contextlib import contextmanager
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


@contextmanager
def recording(cloud: FakeCloud, name: str):
    """A scaling timeline of `cloud` for the block, saved as OUT/<name>.json and .png (also when the
    block fails); the test adds its figures with `record(...)`."""
    recorder = Timeline(cloud).start()
    recorder.extra = {"autoscaler": cloud.autoscaler}
    try:
        yield recorder
    finally:
        recorder.stop()
        recorder.save(OUT, name.replace("[", "_").replace("]", ""), recorder.extra)


@pytest.fixture
def timeline(cloud, request):
    with recording(cloud, request.node.name) as recorder:
        yield recorder


def record(timeline: Timeline, run) -> None:
    """Keep a scenario's figures with its timeline (and print them: `pytest -s` shows them)."""
    timeline.extra.update(figures=run.figures, details=run.details)
    print(f"\n{run.name}: {json.dumps(run.figures)}")


def check_curation_from_zero(run, cloud: FakeCloud, timeline: Timeline) -> None:
    """What scenario (a) must show, on either autoscaler."""
    f, details = run.figures, run.details
    assert f["job"] == "SUCCEEDED", details["logs"]
    assert (f["rows_lost"], f["rows_duplicated"], f["quarantined"]) == (0, 0, 1)
    compared = details["plan_vs_launched"]
    # GPU instances came for the two GPU pools, only of types the plan says the models fit; autoscaler
    # v2 launched exactly the GPUs the pools ask for (v1 launches more while the pools' actors start:
    # README, "Autoscaling").
    assert compared["launched_gpus"] >= compared["gpus_asked_by_pools"] == 2
    if cloud.autoscaler == "v2":
        assert compared["launched_gpus"] == compared["gpus_asked_by_pools"]
    assert compared["launched_types_the_plan_rules_out"] == []
    assert {"Captioner", "ExpertScorer"} <= set(timeline.gpu_pools)
    # Every instance ran from a temp directory of its own (its own runtime-env files), as on a cloud.
    sessions = list(Path(cloud.root, "instances").glob("instance.*/session_*"))
    assert len(sessions) >= sum(timeline.peak("nodes").values())
    # ... and went away after the idle timeout, leaving no actor holding resources, no placement group.
    assert not cloud.gpu_nodes()
    assert details["leftovers"] == {"actors": [], "placement_groups": []}
