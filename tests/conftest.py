"""Shared fixtures. Tests never download anything: the tiny-model kit is built locally once, when a
session starts on a cold model cache, and reused from then on."""
from __future__ import annotations

import os
from pathlib import Path

# Before anything imports transformers or Ray, which read these at import time.
os.environ.setdefault("RAY_ACCEPT_EXPERIMENTAL_FEATURES", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pytest  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from carevl.config import load_config  # noqa: E402
from carevl.kit.tiny import ROLES, build_tiny_models  # noqa: E402


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_config():
    return load_config()


@pytest.fixture(scope="session", autouse=True)
def model_cache(tiny_config) -> Path:
    """The config's `paths.model_cache` (CAREVL_MODEL_CACHE overrides it through the config layer) with
    every kit role built: loading resolves `tiny:<role>` to these folders and never builds."""
    cache = tiny_config.paths.model_cache_dir()
    build_tiny_models(cache, list(ROLES))
    return cache


@pytest.fixture
def shape_image() -> Image.Image:
    image = Image.new("RGB", (96, 72), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 40, 40), fill="red")
    draw.rectangle((50, 30, 90, 65), fill="blue")
    return image


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


MINIATURE_SEED = int(os.environ.get("CAREVL_EFFECT_SEED", "0"))


@pytest.fixture(scope="session")
def miniature_curation(ray_local, tmp_path_factory) -> dict:
    """The demo's scale, curated once per session for the effect tests: 40 synthetic items (the strong
    judge's shipped verdicts right 75% of the time), held-out evaluation pairs of the next seed, the
    curation run and its label audit. The seed comes from CAREVL_EFFECT_SEED (default 0)."""
    from ray_jobs import audit as audit_job
    from ray_jobs import curate as curate_job
    from ray_jobs import synth_data as synth_job
    from tests.jobs import job_status

    root = tmp_path_factory.mktemp("miniature")
    seed = ["--set", f"seed={MINIATURE_SEED}"]
    paths = {name: root / name for name in ("items", "eval", "run", "audit")}
    assert job_status(synth_job.main, [*seed, "--output", str(paths["items"]), "--items", "40",
                                       "--seed", str(MINIATURE_SEED), "--judge-accuracy", "0.75"]) == 0
    assert job_status(synth_job.main, [*seed, "--output", str(paths["eval"]), "--eval-pairs", "64",
                                       "--seed", str(MINIATURE_SEED + 1)]) == 0
    assert job_status(curate_job.main, [*seed, "--input", str(paths["items"]), "--output", str(paths["run"])]) == 0
    assert job_status(audit_job.main, [*seed, "--run", str(paths["run"]), "--gold", str(paths["items"]),
                                       "--output", str(paths["audit"])]) == 0
    return {**paths, "root": root, "seed": MINIATURE_SEED}
