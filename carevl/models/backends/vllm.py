"""The `vllm` backend (GPU clusters only; vllm is imported only when a vllm model is actually loaded).

A model spec is translated once into Ray Data LLM's `vLLMEngineProcessorConfig` (model source, engine
arguments, task type, batch size, concurrency, accelerator): that object is the single description of a
vLLM model in this project, and building it needs neither vllm nor a GPU, so the translation is tested
on CPU. The engine itself runs inside the curation's own item-level actors (`VLLMChatGenerator`,
`VLLMRewardScorer`) rather than as Ray Data LLM's one-prompt-per-row stages: keeping rows at item level
is what lets each image be captioned once and each distinct response be scored once per expert, which
a per-prompt stage cannot see across rows without a shuffle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from transformers import AutoTokenizer

from carevl.config import ModelSpec
from carevl.models.loading import resolve_model_path
from carevl.models.templates import continuation_kwargs, continues_reply, with_image_parts

# What each Ray Data LLM task type means to the vLLM engine (mirrors ray.data.llm's engine stage).
RUNNER_BY_TASK: dict[str, dict[str, str]] = {
    "generate": {"runner": "generate"},
    "classify": {"runner": "pooling", "convert": "classify"},
    "score": {"runner": "pooling", "convert": "reward"},
}


def task_type(spec: ModelSpec) -> str:
    """Reward models are sequence classifiers (one logit); everything else generates text."""
    return "classify" if spec.kind == "reward" else "generate"


def engine_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """vLLM engine arguments from a model spec (resources and limits come from config, never code)."""
    r = spec.resources
    kwargs: dict[str, Any] = {
        "tensor_parallel_size": r.tensor_parallel_size,
        "dtype": spec.dtype,
        "max_model_len": spec.max_length,
        "trust_remote_code": spec.trust_remote_code,
    }
    if spec.revision:
        kwargs["revision"] = kwargs["tokenizer_revision"] = spec.revision
    if spec.kind == "vlm":
        kwargs["limit_mm_per_prompt"] = {"image": 1}  # one image per conversation (paper's items)
    if r.tensor_parallel_size > 1:
        kwargs["distributed_executor_backend"] = "ray"  # shards placed by Ray, not by the calling actor
    if r.num_gpus and r.num_gpus < 1:
        kwargs["gpu_memory_utilization"] = round(0.9 * r.num_gpus, 3)  # co-located models share one GPU
    return kwargs


def processor_config_kwargs(spec: ModelSpec, model_source: str) -> dict[str, Any]:
    """Keyword arguments of `ray.data.llm.vLLMEngineProcessorConfig` for one model spec."""
    r = spec.resources
    kwargs: dict[str, Any] = dict(
        model_source=model_source,
        engine_kwargs=engine_kwargs(spec),
        task_type=task_type(spec),
        batch_size=r.batch_size,
        concurrency=tuple(r.concurrency),
        prepare_multimodal_stage=spec.kind == "vlm",
        detokenize_stage=spec.kind != "reward",
    )
    if r.accelerator_type:
        kwargs["accelerator_type"] = r.accelerator_type
    return kwargs


def processor_config(spec: ModelSpec, model_source: str):
    """The `vLLMEngineProcessorConfig` of a model spec (no vllm import, no GPU needed)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    return vLLMEngineProcessorConfig(**processor_config_kwargs(spec, model_source))


def sampling_kwargs(spec: ModelSpec, temperature: float, max_new_tokens: int, num_samples: int = 1,
                    seed: int | None = None) -> dict[str, Any]:
    """vLLM SamplingParams arguments (temperature 0 is greedy)."""
    kwargs: dict[str, Any] = dict(temperature=temperature, max_tokens=max_new_tokens, n=num_samples,
                                  top_p=spec.generation.top_p if temperature > 0 else 1.0)
    if seed is not None:
        kwargs["seed"] = seed
    return kwargs


def vllm_messages(messages: list[dict], image: Image.Image | None) -> list[dict]:
    """transformers-style messages -> vLLM chat format, the image part carrying the PIL image."""
    return with_image_parts(messages, image, lambda img: {"type": "image_pil", "image_pil": img})


def _engine(spec: ModelSpec, model_cache: Path):
    try:
        import vllm
    except ImportError as exc:  # CPU machines never have it
        raise ImportError(f"model '{spec.path}' uses backend 'vllm', which needs the gpu extra "
                          "(pip install 'carevl[gpu]') on a GPU machine") from exc
    source, _ = resolve_model_path(spec, model_cache)
    config = processor_config(spec, source)
    kwargs = dict(config.engine_kwargs)
    kwargs.update(RUNNER_BY_TASK[kwargs.pop("task_type", config.task_type)])
    return vllm, vllm.LLM(model=config.model_source, **kwargs), source


class VLLMChatGenerator:
    """`generate` with the signature of `carevl.models.backends.transformers.VLMGenerator`, on a vLLM engine."""

    def __init__(self, spec: ModelSpec, model_cache: Path):
        self.spec = spec
        self._vllm, self.llm, _ = _engine(spec, Path(model_cache))

    def generate(self, messages: list[list[dict]], images: list[Image.Image | None], temperature: float,
                 max_new_tokens: int, num_samples: int = 1, seed: int | None = None) -> list[list[str]]:
        params = self._vllm.SamplingParams(**sampling_kwargs(self.spec, temperature, max_new_tokens,
                                                              num_samples, seed))
        conversations = [vllm_messages(m, image) for m, image in zip(messages, images, strict=True)]
        flags = {continues_reply(m) for m in messages}
        if len(flags) > 1:
            raise ValueError("a batch mixes pre-filled replies with new turns; vLLM renders a batch one way")
        template = continuation_kwargs(messages[0]) if messages else {}
        outputs = self.llm.chat(conversations, params, use_tqdm=False, **template)
        return [[o.text.strip() for o in out.outputs] for out in outputs]


class VLLMRewardScorer:
    """The `RewardScorer` interface (render, score, forward_rows) on a vLLM pooling engine."""

    def __init__(self, spec: ModelSpec, model_cache: Path):
        self.spec = spec
        self._vllm, self.llm, source = _engine(spec, Path(model_cache))
        self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=spec.trust_remote_code,
                                                       revision=spec.revision)
        self.forward_rows = 0
        self.forward_calls = 0

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def score(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        # Token ids, not text: the rendered template already holds its special tokens.
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=True,
                             max_length=self.spec.max_length)["input_ids"]
        outputs = self.llm.classify([{"prompt_token_ids": row} for row in ids], use_tqdm=False)
        self.forward_rows += len(texts)
        self.forward_calls += 1
        # One label: vLLM's classify output is monotonic in the reward logit, which is all votes compare.
        return np.asarray([float(o.outputs.probs[0]) for o in outputs])
