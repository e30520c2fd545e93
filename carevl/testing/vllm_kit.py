"""What the vLLM test tier and benchmarks/vllm_backends.py share: the models they run, the CPU engine
settings, and model specs.

The tier builds its own copy of the kit's expert and scorer roles with the quick recipe (a few
training steps) under `<model cache>/vllm-tier`, so it needs neither the full kit nor a long build,
and never replaces the full kit's folders. The architectures and sizes are the kit's: every expert
has a head size of 32, the least vLLM's CPU attention accepts.
"""
from __future__ import annotations

import json
from pathlib import Path

from carevl.config import GenerationSpec, ModelSpec, Resources
from carevl.kit import tiny

REWARD_ROLES = list(tiny.EXPERT_ROLES)
MIN_HEAD_DIM = 32

# vLLM's CPU build on a shared machine: no graph compilation (a minute per engine, and its cache is not
# reused), a fixed 256 MiB KV cache (a share of memory is measured against what other processes use and
# can come out negative), few sequences at once, and the worker in the engine's own process: a spawned
# worker imports vLLM again, which is most of an engine's start-up on two cores (with
# VLLM_ENABLE_V1_MULTIPROCESSING=0, set by `make test-vllm`, the engine core runs in-process too).
CPU_ENGINE_ARGS = {"enforce_eager": True, "kv_cache_memory_bytes": 256 << 20, "max_num_seqs": 32,
                   "distributed_executor_backend": "uni"}


def tier_cache(model_cache: Path) -> Path:
    return Path(model_cache) / "vllm-tier"


def tier_models(model_cache: Path) -> dict[str, Path]:
    """{role: folder} of the five experts and the scorer (SmolLM2-135M-Instruct), built once."""
    return tiny.build_tiny_models(tier_cache(model_cache), [*REWARD_ROLES, "scorer"], recipe="quick")


def head_dim(folder: Path) -> int:
    config = json.loads((Path(folder) / "config.json").read_text())
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def reward_spec(folder: Path, backend: str) -> ModelSpec:
    return ModelSpec(path=str(folder), kind="reward", backend=backend, dtype="float32", max_length=512,
                     resources=Resources(batch_size=32),
                     engine_args=CPU_ENGINE_ARGS if backend == "vllm" else {})


def text_lm_spec(folder: Path, backend: str, prefix_cache: bool = False, max_new_tokens: int = 24,
                 max_length: int = 2048, **engine_args) -> ModelSpec:
    """SmolLM2-135M-Instruct (the kit's `scorer`), the text model every generation test runs;
    `engine_args` add to CPU_ENGINE_ARGS."""
    return ModelSpec(path=str(folder), kind="causal", backend=backend, dtype="float32", max_length=max_length,
                     generation=GenerationSpec(max_new_tokens=max_new_tokens, temperature=0.0,
                                               prefix_cache=prefix_cache),
                     resources=Resources(batch_size=8),
                     engine_args={**CPU_ENGINE_ARGS, **engine_args} if backend == "vllm" else {})
