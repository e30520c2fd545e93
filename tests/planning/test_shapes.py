"""Parameter and KV-cache arithmetic against published figures and against real checkpoints."""
from __future__ import annotations

import pytest

from carevl.config import ModelSpec, load_config
from carevl.kit.tiny import EXPERT_ROLES, build_tiny_models
from carevl.planning.shapes import (
    ModelShape,
    ShapeUnknown,
    decoder_params,
    hub_table,
    model_shape,
    safetensors_params,
    shape_from_table,
)

PUBLISHED = [row for row in hub_table().items() if row[1]["published_params"]]


@pytest.mark.parametrize("path,row", PUBLISHED, ids=[p for p, _ in PUBLISHED])
def test_table_arithmetic_matches_the_published_parameter_count(path, row):
    shape = shape_from_table(path)
    assert shape.params == pytest.approx(row["published_params"], rel=0.005)


def _llama(layers, hidden, intermediate, heads=None, head="lm") -> ModelShape:
    heads = heads or hidden // 128
    return ModelShape(name="llama", family="llama", layers=layers, hidden=hidden, heads=heads, kv_heads=8,
                      head_dim=128, intermediate=intermediate, vocab=128256, head=head)


def test_llama_3_1_counts_from_the_architecture_alone():
    # Meta's model card / hub pages: Llama-3.1-8B 8.03B, Llama-3.1-70B 70.6B parameters.
    assert decoder_params(_llama(32, 4096, 14336)) == pytest.approx(8.03e9, rel=0.001)
    assert decoder_params(_llama(80, 8192, 28672)) == pytest.approx(70.6e9, rel=0.001)
    # A sequence classifier drops the vocabulary head for one score per sequence.
    assert decoder_params(_llama(32, 4096, 14336)) - decoder_params(_llama(32, 4096, 14336, head="score")) \
        == 128256 * 4096 - 4096


def test_gemma_2_27b_non_embedding_count_is_exact():
    # Gemma 2 report (arXiv 2408.00118), Table 2: 26,047,480,320 non-embedding parameters.
    shape = shape_from_table("Skywork/Skywork-Reward-Gemma-2-27B-v0.2")
    assert decoder_params(shape) - shape.embedding_params - shape.hidden == 26_047_480_320


def test_kv_cache_bytes_per_token():
    llama70 = shape_from_table("meta-llama/Llama-3.3-70B-Instruct")
    assert llama70.kv_bytes_per_token(2) == 2 * 80 * 8 * 128 * 2 == 327_680  # 320 KiB per token in bf16
    qwen7 = shape_from_table("Qwen/Qwen2-VL-7B-Instruct")
    assert qwen7.kv_bytes_per_token(2) == 57_344


@pytest.mark.parametrize("role", EXPERT_ROLES)
def test_decoder_arithmetic_matches_real_checkpoints(role, tmp_path_factory):
    """The formula over a config.json equals the tensor count of the saved checkpoint of each family."""
    cache = load_config().paths.model_cache_dir()
    folder = build_tiny_models(cache, [role])[role]
    spec = ModelSpec(path=f"tiny:{role}", kind="reward", dtype="float32")
    shape = model_shape(spec, cache)
    assert shape.exact_params == safetensors_params(folder)
    assert decoder_params(shape) == shape.exact_params
    assert shape.vision_params == 0


def test_vision_language_checkpoint_splits_into_decoder_and_vision_tower():
    cache = load_config().paths.model_cache_dir()
    build_tiny_models(cache, ["vlm_micro"])
    shape = model_shape(ModelSpec(path="tiny:vlm_micro", kind="vlm", dtype="float32"), cache)
    assert shape.vision_params > 0 and shape.params == shape.exact_params
    assert shape.params == decoder_params(shape) + shape.vision_params


def test_hub_ids_without_the_hub_come_from_the_table(tmp_path):
    spec = ModelSpec(path="Qwen/Qwen2-VL-72B-Instruct", kind="vlm", dtype="bfloat16")
    shape = model_shape(spec, tmp_path)
    assert shape.layers == 80 and "hub_models.yaml" in shape.source


def test_unbuilt_tiny_model_is_unknown_not_built(tmp_path):
    with pytest.raises(ShapeUnknown, match="not built"):
        model_shape(ModelSpec(path="tiny:vlm", kind="vlm"), tmp_path)
    assert not any(tmp_path.iterdir())
