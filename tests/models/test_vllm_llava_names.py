"""A saved judge's weight names against vLLM's own LLaVA weight mapper and module tree.

vLLM's `llava` module imports torchvision, which does not load beside the CPU torch; its weight mapper
is therefore read from the module's source, and the vision tower's layout from vLLM's `clip` module,
which imports without torchvision. A LLaVA of the judge's architecture (CLIP tower, Llama text model)
is built at random with tiny sizes and saved the way training saves a judge.
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (make test-vllm runs these tests)")

from safetensors import safe_open  # noqa: E402
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration  # noqa: E402
from vllm.model_executor.models import clip  # noqa: E402
from vllm.model_executor.models.utils import WeightsMapper  # noqa: E402

from carevl.models.vllm_weights import rewrite_for_vllm  # noqa: E402

pytestmark = pytest.mark.vllm


def llava_mapper() -> WeightsMapper:
    """`LlavaForConditionalGeneration.hf_to_vllm_mapper`, evaluated from vLLM's source."""
    source = Path(importlib.util.find_spec("vllm.model_executor.models.llava").origin).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == "LlavaForConditionalGeneration":
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and getattr(stmt.targets[0], "id", None) == "hf_to_vllm_mapper":
                    return WeightsMapper(**{k.arg: ast.literal_eval(k.value) for k in stmt.value.keywords})
    raise AssertionError("vLLM's LLaVA defines no hf_to_vllm_mapper")


def _saved_names(folder: Path) -> list[str]:
    names = []
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            names += list(handle.keys())
    return names


def test_saved_judge_names_land_on_vllm_llava_modules(tmp_path):
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=16)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, head_dim=32, vocab_size=128)
    model = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_index=3))
    model.save_pretrained(tmp_path)
    before = _saved_names(tmp_path)
    as_written = [n for n in llava_mapper().apply_list(before) if n.startswith("vision_tower.")]
    assert as_written and not all(n.startswith("vision_tower.vision_model.") for n in as_written)  # vLLM's error
    rewrite_for_vllm(tmp_path)
    mapped = llava_mapper().apply_list(_saved_names(tmp_path))
    assert len(mapped) == len(before)
    # vLLM's LLaVA: vision_tower (a CLIPVisionModel holding `vision_model`), multi_modal_projector,
    # language_model (a LlamaForCausalLM: `model` and `lm_head`).
    assert "self.vision_model = CLIPVisionTransformer" in inspect.getsource(clip.CLIPVisionModel.__init__)
    places = ("vision_tower.vision_model.", "multi_modal_projector.", "language_model.model.",
              "language_model.lm_head.")
    misplaced = [n for n in mapped if not n.startswith(places)]
    assert not misplaced, misplaced[:5]
    assert any(n.startswith("vision_tower.vision_model.embeddings.") for n in mapped)
