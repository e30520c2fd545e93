"""The vllm backend's translation from config, built on CPU without vllm (which cannot run here)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from carevl.config import load_config
from carevl.models.backends.vllm import (
    RUNNER_BY_TASK, engine_kwargs, processor_config, sampling_kwargs, vllm_messages,
)


@pytest.fixture(scope="module")
def paper():
    return load_config(Path(__file__).resolve().parents[2] / "configs" / "paper.yaml")


def test_reward_model_translates_to_a_classify_processor(paper):
    spec = paper.models["inf-orm-70b"]
    config = processor_config(spec, spec.path)
    assert config.model_source == "infly/INF-ORM-Llama3.1-70B"
    assert config.task_type == "classify"
    assert config.batch_size == 128 and tuple(config.concurrency) == (1, 2)
    assert config.engine_kwargs["tensor_parallel_size"] == 4
    assert config.engine_kwargs["distributed_executor_backend"] == "ray"
    assert config.engine_kwargs["max_model_len"] == 4096 and config.engine_kwargs["dtype"] == "bfloat16"
    assert RUNNER_BY_TASK[config.task_type] == {"runner": "pooling", "convert": "classify"}
    assert "vllm" not in sys.modules  # building the config never imports vllm


def test_caption_model_translates_to_a_multimodal_generate_processor(paper):
    spec = paper.models[paper.curation.caption_model]
    config = processor_config(spec, spec.path)
    assert config.task_type == "generate"
    assert config.engine_kwargs["limit_mm_per_prompt"] == {"image": 1}
    assert config.engine_kwargs["tensor_parallel_size"] == 4


def test_colocated_fraction_of_a_gpu_limits_vllm_memory(paper):
    spec = paper.models["skywork-llama31-8b-v02"]  # 0.5 GPU, shares a GPU with another 8B expert
    kwargs = engine_kwargs(spec)
    assert kwargs["gpu_memory_utilization"] == pytest.approx(0.45)
    assert "distributed_executor_backend" not in kwargs


def test_accelerator_type_and_revision_pass_through(paper):
    spec = paper.models["qwen2-vl-7b"].model_copy(update={"revision": "abc123"})
    spec.resources = spec.resources.model_copy(update={"accelerator_type": "A100-80G"})
    config = processor_config(spec, spec.path)
    assert config.accelerator_type == "A100-80G"
    assert config.engine_kwargs["revision"] == "abc123"


def test_sampling_greedy_and_temperature(paper):
    spec = paper.models["qwen2-vl-7b"]
    assert sampling_kwargs(spec, 0.0, 64) == {"temperature": 0.0, "max_tokens": 64, "n": 1, "top_p": 1.0}
    assert sampling_kwargs(spec, 1.0, 64, num_samples=3, seed=5)["n"] == 3


def test_messages_carry_the_image_object():
    from PIL import Image

    image = Image.new("RGB", (4, 4))
    out = vllm_messages([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}], image)
    assert out[0]["content"][0] == {"type": "image_pil", "image_pil": image}
    with pytest.raises(ValueError):
        vllm_messages([{"role": "user", "content": [{"type": "image"}]}], None)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_loading_a_vllm_model_without_vllm_says_what_is_missing(paper, tmp_path):
    from carevl.models.backends import make_scorer

    with pytest.raises(ImportError, match="gpu extra"):
        make_scorer(paper.models["inf-orm-70b"], tmp_path)


def test_prefilled_replies_are_continued_by_the_chat_call(paper, monkeypatch):
    from carevl.models.backends import vllm as vllm_backend

    class FakeLLM:  # records how `LLM.chat` is called; vLLM itself needs a GPU
        def chat(self, conversations, params, use_tqdm, **template):
            self.template = template
            return []

    gen = vllm_backend.VLLMChatGenerator.__new__(vllm_backend.VLLMChatGenerator)
    gen.spec, gen.llm = paper.models["gpt-4o"], FakeLLM()
    gen._vllm = type("V", (), {"SamplingParams": staticmethod(lambda **kw: kw)})
    ask = [{"role": "user", "content": "grade"}]
    gen.generate([ask + [{"role": "assistant", "content": "Score:"}]], [None], temperature=0.0, max_new_tokens=4)
    assert gen.llm.template == {"add_generation_prompt": False, "continue_final_message": True}
    gen.generate([ask], [None], temperature=0.0, max_new_tokens=4)
    assert gen.llm.template == {"add_generation_prompt": True}
    with pytest.raises(ValueError, match="mixes"):
        gen.generate([ask, ask + [{"role": "assistant", "content": "Score:"}]], [None, None], 0.0, 4)
