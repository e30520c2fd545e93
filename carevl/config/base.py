"""Shared pieces of the typed configuration: a strict base model and resource specs."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are an error, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class Resources(StrictModel):
    """Where and how wide a model's actor pool runs. Everything here is config, never code."""

    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (fractions allowed for co-location)")
    num_cpus: float = Field(1.0, ge=0, description="CPUs per actor")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallelism (GPUs per replica)")
    batch_size: int = Field(8, ge=1, description="rows per batch handed to one actor call")
    concurrency: tuple[int, int] = Field((1, 1), description="(min, max) actors; min < max autoscales")
    accelerator_type: str | None = Field(None, description="Ray accelerator type, e.g. A100-80G")
    colocate_group: str | None = Field(
        None, description="models sharing a group name share one actor pool / GPU bundle"
    )

    @model_validator(mode="after")
    def _check_concurrency(self) -> "Resources":
        lo, hi = self.concurrency
        if lo < 1 or hi < lo:
            raise ValueError(f"concurrency must be (min, max) with 1 <= min <= max, got {self.concurrency}")
        return self


class GenerationSpec(StrictModel):
    """Sampling settings for generative models (temperature 0 means greedy decoding)."""

    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    # transformers backend, text-only prompts: compute the key/value cache of the token prefix that all
    # prompts of a call share (a long instruction such as the critique rubric) once, and reuse it for
    # every row, which then runs alone (batch 1, no padding). Worth it on CPU for long shared prefixes.
    prefix_cache: bool = False


class HttpSpec(StrictModel):
    """How an endpoint model (backend openai) is called: requests in flight, retries and time limits.
    Retries follow the one policy of `carevl.http_retry` (exponential backoff, Retry-After capped)."""

    max_concurrency: int = Field(16, ge=1, description="requests in flight per actor")
    max_retries: int = Field(6, ge=0)
    timeout_s: float = Field(120.0, gt=0, description="per request")
    backoff_s: float = Field(1.0, ge=0, description="first retry's base delay, doubled per retry")


ModelKind = Literal["vlm", "reward", "causal"]
Backend = Literal["transformers", "vllm", "openai"]


class ModelSpec(StrictModel):
    """One model the pipeline can use, referenced by its key in `models`.

    `path` is a hub id, a local folder, or `tiny:<role>` for a locally built tiny model
    (resolved under `paths.model_cache` by `carevl.models.loading`).
    """

    path: str
    kind: ModelKind
    backend: Backend = "transformers"
    gguf_file: str | None = None
    revision: str | None = None
    dtype: str = "auto"
    max_length: int = Field(2048, ge=16, description="truncate model inputs to this many tokens")
    trust_remote_code: bool = False
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    resources: Resources = Field(default_factory=Resources)
    endpoint: str | None = Field(None, description="base URL of an OpenAI-compatible API (backend openai)")
    api_key_env: str | None = Field(None, description="name of the env variable holding the API key")
    http: HttpSpec = Field(default_factory=HttpSpec, description="backend openai: concurrency, retries, timeout")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="backend vllm: further vLLM engine arguments, passed through unchanged "
        "(e.g. enforce_eager, gpu_memory_utilization, max_num_seqs)")

    @model_validator(mode="after")
    def _check_backend(self) -> "ModelSpec":
        if self.backend == "openai" and not self.endpoint:
            raise ValueError("backend 'openai' needs 'endpoint'")
        if self.engine_args and self.backend != "vllm":
            raise ValueError(f"engine_args are vLLM engine arguments; backend is '{self.backend}'")
        return self
