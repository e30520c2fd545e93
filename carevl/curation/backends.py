"""Pick the generation backend a model spec asks for; every backend has the same `generate` signature.

    generate(messages, images, temperature, max_new_tokens, num_samples=1, seed=None) -> list[list[str] | None]

`transformers` runs `carevl.models.generation.VLMGenerator` in the calling process, `vllm` an in-process
vLLM engine (imported only here, only when asked for), `openai` an HTTP endpoint. A None entry means
the request failed for good (only the endpoint backend produces those).
"""
from __future__ import annotations

from pathlib import Path

from carevl.config import ModelSpec
from carevl.config.stages import StrongJudgeConfig


def make_generator(spec: ModelSpec, model_cache: Path, request_cache: str | Path | None,
                   http: StrongJudgeConfig | None = None):
    """A generator object for `spec` (kind vlm) on the backend its config names."""
    if spec.backend == "openai":
        from carevl.curation.openai_backend import OpenAIGenerator

        http = http or StrongJudgeConfig()
        return OpenAIGenerator(spec, request_cache, max_concurrency=http.max_concurrency,
                               max_retries=http.max_retries, timeout_s=http.timeout_s, backoff_s=http.backoff_s)
    if spec.backend == "vllm":
        from carevl.curation.vllm_backend import VLLMChatGenerator

        return VLLMChatGenerator(spec, model_cache)
    from carevl.models.generation import VLMGenerator

    return VLMGenerator(spec, model_cache)


def model_id(spec: ModelSpec) -> str:
    """What a summary records as the model's identity: path (plus revision / file when set)."""
    parts = [spec.path]
    if spec.revision:
        parts.append(f"@{spec.revision}")
    if spec.gguf_file:
        parts.append(f"#{spec.gguf_file}")
    return "".join(parts) + f" [{spec.backend}]"
