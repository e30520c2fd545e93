"""Placement of the paper preset on cluster.yaml, and the check every job runs before loading a model."""
from __future__ import annotations

from pathlib import Path

import pytest

from carevl.config import load_config
from carevl.curation.pipeline import run_curation
from carevl.planning import PlacementError, check_placement
from carevl.planning.memory import inference_footprint, tensor_parallel_needed
from carevl.planning.nodes import GB, from_cluster_yaml
from carevl.planning.placement import plan_stage
from carevl.planning.shapes import shape_from_table
from carevl.refine.pipeline import run_refine
from carevl.training.dpo import run_dpo
from carevl.training.sft import run_sft

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "configs" / "paper.yaml"


@pytest.fixture(scope="module")
def nodes():
    return from_cluster_yaml(str(REPO / "cluster.yaml"))


def test_cluster_yaml_node_types(nodes):
    by_name = {n.name: n for n in nodes}
    assert "head" not in by_name  # advertises no CPU and no GPU: nothing is placed there
    assert by_name["gpu_8x_a100_80g"].gpus == 8 and by_name["gpu_8x_a100_80g"].gpu_memory_gb == 80
    assert by_name["gpu_1x_l40s"].gpu_memory_gb == 48 and by_name["gpu_1x_l40s"].max_nodes == 8


def test_paper_curation_places_every_model(nodes):
    config = load_config(PAPER)
    needs = {n.model: n for n in plan_stage(config, "curate", nodes)}
    assert needs["gpt-4o"].external and not needs["gpt-4o"].fits
    # 72B at tensor parallel 4: two replicas on an 8-GPU node, never on the 1-GPU L40S node.
    big = needs["qwen2-vl-72b"]
    assert big.fits == {"gpu_8x_a100_80g": 2, "gpu_8x_h100_80g": 2}
    weights = shape_from_table("Qwen/Qwen2-VL-72B-Instruct").params * 2
    assert big.footprint.weights == weights
    # Its full batch (64 x 8192 tokens of KV) needs 8 GPUs of 80 GB: it runs at 4 with fewer sequences.
    assert big.tp_needed == 8 and not big.full_batch_fits
    # Two 8B experts share a GPU (0.5 each): two replicas per L40S, 16 per 8-GPU node.
    assert needs["skywork-llama31-8b-v02"].fits["gpu_1x_l40s"] == 2
    assert needs["skywork-llama31-8b-v02"].fits["gpu_8x_a100_80g"] == 16
    check_placement(config, "curate", cluster=str(REPO / "cluster.yaml"))


def test_kv_cache_grows_with_batch_and_length():
    shape = shape_from_table("meta-llama/Llama-3.3-70B-Instruct")
    one = inference_footprint(shape, 2, batch=1, max_length=4096, paged_kv=True)
    many = inference_footprint(shape, 2, batch=64, max_length=4096, paged_kv=True)
    assert many.cache == 64 * one.cache == 64 * 4096 * 327_680
    assert many.minimum == one.minimum  # a paged cache runs with one sequence
    assert tensor_parallel_needed(many.total, shape.heads, 72 * GB, 8) == 4
    assert tensor_parallel_needed(many.total, shape.heads, 72 * GB, 2) is None


def test_a_model_that_fits_no_node_is_an_error_naming_model_memory_and_largest_node():
    config = load_config(PAPER, ["models.qwen2-vl-72b.resources.tensor_parallel_size=1",
                                 "models.qwen2-vl-72b.resources.num_gpus=1"])
    with pytest.raises(PlacementError) as err:
        check_placement(config, "curate", cluster=str(REPO / "cluster.yaml"))
    message = str(err.value)
    assert "'qwen2-vl-72b'" in message and "151.0 GB" in message
    assert "largest node is gpu_8x_h100_80g" in message
    assert "it runs at tensor_parallel_size 4" in message  # 151 GB over 4 GPUs of 72 usable GB


def test_unsharded_dpo_without_lora_is_flagged_and_lora_fits(nodes):
    """Every worker holding the policy, its states and the reference: 94 GB, more than an 80 GB GPU
    (the paper preset shards them instead: `test_memory`)."""
    config = load_config(PAPER, ["dpo.sharding=none"])
    with pytest.raises(PlacementError, match="dpo: model 'qwen2-vl-7b'.* needs 93.8 GB"):
        check_placement(config, "dpo", cluster=str(REPO / "cluster.yaml"))
    lora = load_config(PAPER, ["dpo.sharding=none", "dpo.lora={r: 16}"])
    [need] = check_placement(lora, "dpo", cluster=str(REPO / "cluster.yaml"))
    assert need.fits["gpu_8x_a100_80g"] == 8


def test_training_worker_count_must_fit_the_cluster():
    config = load_config(PAPER, ["sft.num_workers=64"])
    with pytest.raises(PlacementError, match="64 workers"):
        check_placement(config, "sft", cluster=str(REPO / "cluster.yaml"))


@pytest.mark.parametrize("stage", ["curate", "refine", "sft", "dpo"])
def test_every_job_checks_placement_before_loading_a_model(stage, tmp_path):
    """An impossible GPU request stops each job at its first line: no Ray, no input, no model."""
    wants = {"curate": "models.rm_llama.resources.num_gpus=16", "refine": "models.scorer.resources.num_gpus=16",
             "sft": "sft.resources_per_worker={CPU: 1, GPU: 16}", "dpo": "dpo.resources_per_worker={CPU: 1, GPU: 16}"}
    config = load_config(None, [f"planning.cluster={REPO / 'cluster.yaml'}", wants[stage]])
    missing = str(tmp_path / "does-not-exist")
    run = {"curate": lambda: run_curation(config, missing, str(tmp_path / "out")),
           "refine": lambda: run_refine(config, missing, missing, str(tmp_path / "out")),
           "sft": lambda: run_sft(config, missing, str(tmp_path / "out")),
           "dpo": lambda: run_dpo(config, missing, missing, str(tmp_path / "out"))}[stage]
    with pytest.raises(PlacementError, match="16 GPU"):
        run()
    assert not (tmp_path / "out").exists()
