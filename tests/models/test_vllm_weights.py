"""Judge checkpoints saved in vLLM's weight names still load, weight for weight, in transformers."""
from __future__ import annotations

import json

import torch
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor

from carevl.kit.tiny import build_tiny_models
from carevl.models.vllm_weights import rewrite_for_vllm, vllm_name
from carevl.training.common import save_judge


def _names(folder) -> set[str]:
    names = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            names.update(handle.keys())
    return names


def test_vision_tower_names_gain_the_vision_model_level():
    assert vllm_name("vision_tower.embeddings.patch_embedding.weight", "llava") == \
        "vision_tower.vision_model.embeddings.patch_embedding.weight"
    assert vllm_name("vision_tower.vision_model.post_layernorm.bias", "llava") == \
        "vision_tower.vision_model.post_layernorm.bias"
    assert vllm_name("language_model.model.norm.weight", "llava") == "language_model.model.norm.weight"
    assert vllm_name("vision_tower.embeddings.class_embedding", "qwen2_vl") == "vision_tower.embeddings.class_embedding"


def test_saved_judge_has_vllm_names_and_loads_in_transformers(tiny_config, tmp_path):
    source = build_tiny_models(tiny_config.paths.model_cache_dir(), ["vlm_micro"])["vlm_micro"]
    model = AutoModelForImageTextToText.from_pretrained(source)
    processor = AutoProcessor.from_pretrained(source)
    out = tmp_path / "judge"
    save_judge(model, processor, out)
    names = _names(out)
    vision = [n for n in names if n.startswith("vision_tower.")]
    assert vision and all(n.startswith("vision_tower.vision_model.") for n in vision)
    assert json.loads((out / "config.json").read_text())["model_type"] == "llava"
    assert rewrite_for_vllm(out) == 0  # idempotent
    reloaded, info = AutoModelForImageTextToText.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    before, after = model.state_dict(), reloaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
