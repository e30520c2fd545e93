"""The curation job end to end with the five experts on vLLM engines (CPU build), against the same
job on transformers: the same pairs, votes and classes, and expert scores within 1e-4.

Captions come from the items (`caption_backend: column`): the caption model is a LLaVA, and vLLM's
vision models need torchvision, which does not load beside the CPU torch.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (make test-vllm runs these tests)")

from carevl.config import load_config  # noqa: E402
from carevl.curation.pipeline import run_curation  # noqa: E402
from carevl.testing.items import synth_rows, write_jsonl  # noqa: E402
from carevl.testing.vllm_kit import CPU_ENGINE_ARGS, REWARD_ROLES, tier_models  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.ray]


def _config(backend: str, models: dict[str, Path]):
    experts = "[" + ", ".join(REWARD_ROLES) + "]"
    overrides = ["curation.caption_backend=column", f"curation.experts={experts}", "curation.unit_items=4",
                 *(f"models.{role}.path={models[role]}" for role in REWARD_ROLES)]
    config = load_config(overrides=overrides)
    if backend == "vllm":
        for role in REWARD_ROLES:
            config.models[role] = config.models[role].model_copy(
                update={"backend": "vllm", "engine_args": dict(CPU_ENGINE_ARGS)})
    return config


def _pairs(run_dir: Path) -> dict[str, dict]:
    rows = [r for cls in ("high", "low") for f in sorted((run_dir / cls).glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    return {r["pair_id"]: r for r in rows}


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-curation")
    models = tier_models(load_config().paths.model_cache_dir())
    items = write_jsonl(root / "items.jsonl", synth_rows(8, seed=5, captions=True))
    out = {}
    for backend in ("transformers", "vllm"):
        summary = run_curation(_config(backend, models), str(items), str(root / backend))
        out[backend] = (summary, _pairs(root / backend))
    return out


def test_vllm_experts_give_the_classes_of_transformers(runs):
    (tf_summary, tf_pairs), (vllm_summary, vllm_pairs) = runs["transformers"], runs["vllm"]
    assert tf_pairs and vllm_pairs.keys() == tf_pairs.keys()
    assert vllm_summary["pairs"] == tf_summary["pairs"]
    assert vllm_summary["expert_forward_rows"] == tf_summary["expert_forward_rows"]  # each response once
    for pair_id, expected in tf_pairs.items():
        got = vllm_pairs[pair_id]
        keys = ("votes_a", "votes_b", "confidence", "low_reason", "label")
        assert {k: got[k] for k in keys} == {k: expected[k] for k in keys}, pair_id
        assert got["expert_scores_a"] == pytest.approx(expected["expert_scores_a"], abs=1e-4)
        assert got["expert_scores_b"] == pytest.approx(expected["expert_scores_b"], abs=1e-4)


def test_summaries_name_the_backend_of_each_expert(runs):
    for backend, (summary, _) in runs.items():
        ids = {k: v for k, v in summary["model_ids"].items() if k.startswith("expert:")}
        assert len(ids) == len(REWARD_ROLES) and all(v.endswith(f"[{backend}]") for v in ids.values())
