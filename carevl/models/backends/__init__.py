"""Generation and scoring backends, picked per model spec; every stage that runs a model goes through here.

    generate(messages, images, temperature, max_new_tokens, num_samples=1, seed=None) -> list[list[str] | None]
    score(texts) -> np.ndarray (one reward per rendered conversation; `render(messages)` renders one)

`transformers` runs the model in the calling process (`backends.transformers`), `vllm` an in-process
vLLM engine (`backends.vllm`; vllm itself is imported only when such a model is loaded), `openai` an
OpenAI-compatible HTTP endpoint (`backends.openai`). A None entry from `generate` means the request
failed for good (only the endpoint backend produces those). Curation (captions, candidates, the strong
judge, experts), refinement (critiques, rubric scores), the judge and evaluation all use these.
"""
from __future__ import annotations

from pathlib import Path

from carevl.config import ModelSpec
from carevl.models.backends.openai import OpenAIGenerator
from carevl.models.backends.transformers import RewardScorer, TextGenerator, VLMGenerator
from carevl.models.backends.vllm import VLLMChatGenerator, VLLMRewardScorer, VLLMTextGenerator


def make_generator(spec: ModelSpec, model_cache: Path, request_cache: str | Path | None = None):
    """A generator object for `spec` (kind vlm) on the backend its config names; an endpoint model
    uses its own `http` settings (concurrency, retries, timeout)."""
    if spec.backend == "openai":
        return OpenAIGenerator(spec, request_cache, max_concurrency=spec.http.max_concurrency,
                               max_retries=spec.http.max_retries, timeout_s=spec.http.timeout_s,
                               backoff_s=spec.http.backoff_s)
    if spec.backend == "vllm":
        return VLLMChatGenerator(spec, Path(model_cache))
    return VLMGenerator(spec, Path(model_cache))


def make_text_generator(spec: ModelSpec, model_cache: Path):
    """A text-only generator: a causal LM (transformers or vLLM), or any VLM backend called without images."""
    if spec.kind == "causal":
        if spec.backend == "vllm":
            return VLLMTextGenerator(spec, Path(model_cache))
        return TextGenerator(spec, Path(model_cache))
    return make_generator(spec, model_cache)


def make_scorer(spec: ModelSpec, model_cache: Path, device: str | None = None):
    """A reward scorer (render, score, forward_rows) for the spec's backend."""
    if spec.backend == "vllm":
        return VLLMRewardScorer(spec, Path(model_cache))
    if spec.backend != "transformers":
        raise ValueError(f"reward model '{spec.path}': backend '{spec.backend}' cannot score")
    return RewardScorer(spec, Path(model_cache), device=device)


def model_id(spec: ModelSpec) -> str:
    """What a summary records as the model's identity: path (plus revision / file when set)."""
    parts = [spec.path]
    if spec.revision:
        parts.append(f"@{spec.revision}")
    if spec.gguf_file:
        parts.append(f"#{spec.gguf_file}")
    return "".join(parts) + f" [{spec.backend}]"
