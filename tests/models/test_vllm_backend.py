"""The vllm backend's translation from config, checked without vllm (the engines themselves run in the
vLLM tier, `tests/models/test_vllm_engines.py`)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from carevl.config import load_config
from carevl.models.backends.vllm import (
    RUNNER_BY_TASK, candidate_log_probs, engine_kwargs, next_token_kwargs, processor_config, sampling_kwargs,
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


def test_prefix_cache_and_engine_args_reach_the_engine(paper):
    spec = paper.models["qwen2-vl-7b"].model_copy(deep=True)
    spec.generation.prefix_cache = True
    spec.engine_args = {"enforce_eager": True, "max_num_seqs": 8}
    kwargs = engine_kwargs(spec)
    assert kwargs["enable_prefix_caching"] is True
    assert kwargs["enforce_eager"] is True and kwargs["max_num_seqs"] == 8


def test_a_cpu_model_asks_its_placement_group_for_cpus(paper):
    spec = paper.models["qwen2-vl-7b"].model_copy(deep=True)
    spec.resources = spec.resources.model_copy(update={"num_gpus": 0.0, "num_cpus": 1.5})
    assert processor_config(spec, spec.path).placement_group_config["bundles"] == [{"CPU": 2, "GPU": 0}]


def test_verdict_log_probs_are_renormalised_over_the_candidates():
    kwargs = next_token_kwargs([11, 22])
    assert kwargs["logprob_token_ids"] == [11, 22] and kwargs["max_tokens"] == 1 and kwargs["temperature"] == 0
    out = candidate_log_probs([{22: -3.0, 11: -1.0, 5: -0.1}], [11, 22])
    assert np.exp(out).sum() == pytest.approx(1.0)
    assert out[0] - out[1] == pytest.approx(2.0)
    with pytest.raises(RuntimeError, match="token"):
        candidate_log_probs([{11: -1.0}], [11, 22])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_loading_a_vllm_model_without_vllm_says_what_is_missing(paper, tmp_path):
    from carevl.models.backends import make_scorer

    with pytest.raises(ImportError, match="gpu extra"):
        make_scorer(paper.models["inf-orm-70b"], tmp_path)
