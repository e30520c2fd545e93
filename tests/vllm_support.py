"""What the vLLM test tier shares: which models it runs, the CPU engine settings, and model specs.

Tests that import this module are marked `vllm` and skip cleanly where vllm cannot be imported (the
project virtualenv); `make test-vllm` runs them in the virtualenv that has vLLM's CPU build.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from carevl.config import GenerationSpec, ModelSpec, Resources
from carevl.models import tiny
from carevl.models.builders import Sources

# The tiny kit's five reward roles. vLLM's CPU attention needs a head size of at least 32.
REWARD_ROLES = ["rm_llama", "rm_qwen2", "rm_gemma2", "rm_mistral", "rm_qwen3"]
MIN_HEAD_DIM = 32

# vLLM's CPU build on a shared 24 GiB machine: no graph compilation (a minute per engine, its cache is
# not reused), a small slice of memory for the KV cache, few sequences at once.
CPU_ENGINE_ARGS = {"enforce_eager": True, "gpu_memory_utilization": 0.05, "max_num_seqs": 32}

# Chat format of each reward role's tokenizer when it has to be built here (families share the
# kit's trained vocabulary; Qwen3 uses Qwen2's ChatML format).
_FAMILY_FORMAT = {"llama": "llama", "qwen2": "qwen2", "gemma2": "gemma2", "mistral": "mistral", "qwen3": "qwen2"}
# The kit's reward-model size with a head size vLLM's CPU attention accepts.
_RM_DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=32, max_position_embeddings=2048)


def head_dim(folder: Path) -> int:
    config = json.loads((folder / "config.json").read_text())
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def reward_model_folder(model_cache: Path, role: str) -> Path:
    """The kit's model of `role` when the kit builds it with a head size vLLM's CPU attention runs;
    otherwise a seeded random model of the same family and that size, built once under the cache."""
    if role in tiny.ROLES:
        folder = tiny.build_tiny_models(model_cache, [role])[role]
        if head_dim(folder) >= MIN_HEAD_DIM:
            return folder
    folder = Path(model_cache) / "vllm-tier" / role
    if (folder / "config.json").is_file():
        return folder
    family = role.removeprefix("rm_")
    tokenizer = Sources().micro_tokenizer(_FAMILY_FORMAT[family])
    extra = dict(query_pre_attn_scalar=32, sliding_window=256) if family == "gemma2" else {}
    config = AutoConfig.for_model(family, vocab_size=len(tokenizer), num_labels=1,
                                  pad_token_id=tokenizer.pad_token_id, **_RM_DIMS, **extra)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(len(role))
        model = AutoModelForSequenceClassification.from_config(config)
    partial = folder.with_name(f".{role}.partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(folder)
    return folder


def reward_spec(folder: Path, backend: str) -> ModelSpec:
    return ModelSpec(path=str(folder), kind="reward", backend=backend, dtype="float32", max_length=512,
                     resources=Resources(batch_size=32),
                     engine_args=CPU_ENGINE_ARGS if backend == "vllm" else {})


def text_lm_spec(backend: str, prefix_cache: bool = False, max_new_tokens: int = 24) -> ModelSpec:
    """SmolLM2-135M-Instruct (the kit's `scorer`), the text model every generation test runs."""
    return ModelSpec(path="tiny:scorer", kind="causal", backend=backend, dtype="float32", max_length=2048,
                     generation=GenerationSpec(max_new_tokens=max_new_tokens, temperature=0.0,
                                               prefix_cache=prefix_cache),
                     resources=Resources(batch_size=8),
                     engine_args=CPU_ENGINE_ARGS if backend == "vllm" else {})
