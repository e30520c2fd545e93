"""The training memory rules: a whole replica per worker, or its FSDP shard (pure arithmetic, no Ray)."""
from __future__ import annotations

from pathlib import Path

import pytest

from carevl.config import ConfigError, load_config
from carevl.planning import check_placement
from carevl.planning.memory import decoder_layer_params, sharded_training_footprint, training_footprint
from carevl.planning.nodes import GB
from carevl.planning.placement import footprint_of, recomputes_activations, stage_needs
from carevl.planning.shapes import ModelShape, model_shape, shape_from_table

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "configs" / "paper.yaml"
CLUSTER = str(REPO / "cluster.yaml")

# 2 layers of hidden 4 (2 query heads, 1 key/value head of width 2, MLP 8), vocabulary 10, 200 parameters.
TOY = ModelShape(name="toy", family="llama", layers=2, hidden=4, heads=2, kv_heads=1, head_dim=2,
                 intermediate=8, vocab=10, head="lm", exact_params=200)


def test_sharded_footprint_by_hand():
    # One layer: Q and O 4x4 each, K and V 4x2 each (48), gated MLP 3 x 4 x 8 (96) -> 144 weights.
    assert decoder_layer_params(TOY) == 144
    fp = sharded_training_footprint(TOY, dtype_bytes=2, master_bytes=4, micro_batch=1, max_length=5,
                                    trainable=150, reference_model=True, gradient_checkpointing=False,
                                    world_size=2)
    # Sharded weights: (50 frozen x 2 + 150 trainable x 4 + 200 reference x 2) / 2 = 550.
    assert fp.weights == 550
    # Gradients and two moments of the trainable ones: 150 x 4 x 3 / 2 = 900.
    assert fp.cache == 900
    # Gathered: 2 layers x 144 x 2 + 1 layer's gradient 144 x 4 + head 10 x 4 x 2 + reference 200 x 2 = 1632;
    # activations of 5 tokens: 2 layers x 5 x (4x4 + 2x8) x 2 = 640, plus fp32 logits 5 x 10 x 4 = 200.
    assert fp.activations == 1632 + 840
    assert fp.total == fp.minimum == 550 + 900 + 2472


def test_more_workers_shrink_only_the_sharded_part():
    shape = shape_from_table("Qwen/Qwen2-VL-7B-Instruct")
    args = dict(dtype_bytes=2, master_bytes=4, micro_batch=2, max_length=4096, trainable=shape.params,
                reference_model=True, gradient_checkpointing=True)
    four, eight = (sharded_training_footprint(shape, world_size=n, **args) for n in (4, 8))
    assert four.weights == pytest.approx(2 * eight.weights) and four.cache == pytest.approx(2 * eight.cache)
    assert four.activations == eight.activations
    whole = training_footprint(shape, 2, 2, 4096, shape.params, True, True)
    assert eight.total < 0.6 * whole.total


def test_paper_training_fits_80gb_gpus_sharded():
    """Paper 4.3.2: the 7B judge, SFT and DPO, on 8 workers of one 80 GB GPU each (unsharded DPO does
    not fit: `test_placement`)."""
    config = load_config(PAPER)
    assert config.sft.sharding == config.dpo.sharding == "fsdp"
    for stage in ("sft", "dpo"):
        [need] = check_placement(config, stage, cluster=CLUSTER)
        assert need.fits["gpu_8x_h100_80g"] == 8 and need.footprint.total < 72 * GB  # 90% of 80 GB usable
        [whole] = check_placement(load_config(PAPER, [f"{stage}.sharding=none"]), stage, cluster=CLUSTER) \
            if stage == "sft" else [None]
        if whole is not None:
            assert need.footprint.total < 0.5 * whole.footprint.total


def test_sharding_needs_workers_and_full_fine_tuning():
    with pytest.raises(ConfigError, match="num_workers >= 2"):
        load_config(PAPER, ["sft.num_workers=1"])
    with pytest.raises(ConfigError, match="full fine-tuning"):
        load_config(PAPER, ["dpo.lora={r: 16}"])


def _worker_footprint(overrides: list[str], stage: str):
    """The planner's footprint of one `stage` worker of the paper preset with `overrides` (no fit check)."""
    config = load_config(PAPER, overrides)
    [need] = stage_needs(config, stage)
    need.shape = model_shape(need.spec, config.paths.model_cache_dir())
    return footprint_of(need, config)


def test_dpo_counts_chosen_and_rejected_in_one_forward():
    """TRL's DPO forwards each row's chosen and rejected answers together: one DPO row per worker holds the
    activations of two SFT rows (the paper preset's SFT and DPO share length and checkpointing)."""
    sft = _worker_footprint(["sft.sharding=none", "sft.trainer.per_device_train_batch_size=2"], "sft")
    dpo = _worker_footprint(["dpo.sharding=none", "dpo.trainer.per_device_train_batch_size=1"], "dpo")
    one_sft_row = _worker_footprint(["sft.sharding=none", "sft.trainer.per_device_train_batch_size=1"], "sft")
    assert dpo.activations == pytest.approx(sft.activations) and dpo.activations > one_sft_row.activations


def test_activation_checkpointing_follows_the_trainer_section_else_trl_default():
    assert recomputes_activations({}) is True  # TRL's default (tests/training/test_common.py checks TRL)
    assert recomputes_activations({"gradient_checkpointing": False}) is False
    assert recomputes_activations({"activation_checkpointing": False, "gradient_checkpointing": True}) is False
    on = _worker_footprint(["sft.trainer.gradient_checkpointing=null"], "sft")
    off = _worker_footprint(["sft.trainer.gradient_checkpointing=false"], "sft")
    assert on.activations < off.activations
