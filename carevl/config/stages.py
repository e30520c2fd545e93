"""Per-stage config sections (curation, refinement, training, serving, evaluation)."""
from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, model_validator

from carevl.config.base import StrictModel


class InputLimits(StrictModel):
    """Bounds on one input row; a row outside them is quarantined with a reason."""

    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_question_chars: int = Field(8_000, ge=1)
    max_response_chars: int = Field(16_000, ge=1)
    max_responses: int = Field(16, ge=2)
    max_caption_chars: int = Field(16_000, ge=1)


class CandidateSource(StrictModel):
    """One way of producing a candidate response (paper 3.1): a model and its sampling temperature."""

    model: str
    temperature: float = Field(0.0, ge=0)


class StrongJudgeConfig(StrictModel):
    """The strong LVLM that gives each pair a verdict and explanation (paper 3.2)."""

    backend: Literal["column", "openai", "local"] = "column"
    model: str | None = Field(None, description="key in `models` (backends openai and local); an endpoint "
                              "model's HTTP settings are its own `http` section")

    @model_validator(mode="after")
    def _need_model(self) -> "StrongJudgeConfig":
        if self.backend != "column" and not self.model:
            raise ValueError(f"strong_judge.backend '{self.backend}' needs strong_judge.model")
        return self


class CurationConfig(StrictModel):
    """Paper 3.1-3.2: candidates, captions, strong-judge verdicts, expert votes, confidence split."""

    caption_backend: Literal["model", "column"] = Field(
        "model", description="model: `caption_model` describes each unique image; column: the items' own "
        "`caption` column (datasets that ship captions), a row without one is quarantined")
    caption_model: str | None = Field(None, description="key in `models` (caption_backend model)")
    experts: list[str] = Field(min_length=1)
    tau: int | None = Field(None, description="vote threshold; default M-1 (paper 3.2)")
    candidates: list[CandidateSource] = Field(default_factory=list)
    strong_judge: StrongJudgeConfig = Field(default_factory=StrongJudgeConfig)
    limits: InputLimits = Field(default_factory=InputLimits)
    rows_per_output_file: int = Field(50_000, ge=1)
    unit_items: int = Field(1_000, ge=1, description="input rows per work unit: the grain of output files, "
                            "of resume (a re-run redoes only unfinished units) and of pipelining between stages")
    task_num_cpus: float = Field(0.25, gt=0, description="CPUs per light task (read, validate, write)")
    read_memory_mb: int = Field(256, ge=1, description="memory one unit's read task declares to Ray: the worker "
                                "process itself (about 125 MiB) plus the unit's rows; raise it for big images or units")
    caption_store: str | None = Field(None, description="folder/URI of stored captions, shared across runs; "
                                      "None: RUN_DIR/captions")
    allow_remote_images: bool = Field(False, description="fetch http(s) and cloud image references")
    progress_interval_s: float = Field(10.0, gt=0, description="seconds between progress log lines")

    @property
    def effective_tau(self) -> int:
        return self.tau if self.tau is not None else len(self.experts) - 1

    @model_validator(mode="after")
    def _need_caption_model(self) -> "CurationConfig":
        if self.caption_backend == "model" and not self.caption_model:
            raise ValueError("curation.caption_backend 'model' needs curation.caption_model")
        return self

    @model_validator(mode="after")
    def _check_tau(self) -> "CurationConfig":
        m, tau = len(self.experts), self.effective_tau
        # A majority is only defined when tau > M/2 (paper 3.2 uses tau = M-1).
        if not (m / 2 < tau <= m):
            raise ValueError(f"tau must satisfy M/2 < tau <= M (M={m}), got tau={tau}")
        return self


class LoraSpec(StrictModel):
    """PEFT LoRA settings; `merge` folds the adapters into the saved model."""

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"
    merge: bool = True


class TrainStageConfig(StrictModel):
    """Ray Train + TRL settings shared by SFT (paper 3.3) and DPO (paper 3.6).

    `trainer` is passed through to TRL's SFTConfig / DPOConfig unchanged.
    """

    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = Field(default_factory=lambda: {"CPU": 1})
    freeze_vision: bool = True
    lora: LoraSpec | None = None
    trainer: dict[str, Any] = Field(default_factory=dict)
    both_orders: bool = Field(False, description="train every pair in both A/B orders (twice the examples; a DPO "
                              "row's critiques re-told for the swapped order) instead of one; the paper trains "
                              "each pair once")
    sharding: Literal["none", "fsdp"] = Field(
        "none", description="none: every worker holds the whole model, its gradients and optimizer state (and "
        "DPO's reference); fsdp: all of them sharded across the workers (PyTorch FSDP2 through accelerate), "
        "one layer gathered at a time")
    max_failures: int = Field(0, ge=-1, description="worker-group restarts after a worker or node dies, each "
                              "resuming from the latest reported checkpoint (trainer.save_steps); -1: no limit")
    max_preemption_failures: int = Field(-1, ge=-1, description="restarts after a node drained for preemption "
                                         "(spot), counted apart from max_failures; -1: no limit")

    @model_validator(mode="after")
    def _check_sharding(self) -> "TrainStageConfig":
        if self.sharding == "none":
            return self
        if self.num_workers < 2:
            raise ValueError(f"sharding '{self.sharding}' splits the model across the workers: it needs "
                             f"num_workers >= 2, got {self.num_workers}")
        if self.lora is not None:
            raise ValueError(f"sharding '{self.sharding}' is for full fine-tuning; with lora the trainable "
                             "state is small and every worker holds the frozen base: set sharding none")
        return self


class SFTStage(TrainStageConfig):
    judge_model: str = Field(description="key in `models`: the LVLM backbone to fine-tune")


class RefineConfig(StrictModel):
    """Paper 3.4-3.5: m critiques from the SFT model, rubric scores, negative sampling."""

    num_samples: int = Field(10, ge=1, description="m, critiques sampled per low-confidence pair")
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(256, ge=1)
    scorer_model: str
    strategy: Literal["best_to_worse", "lowest_incorrect", "highest_incorrect", "all_incorrect"] = (
        "best_to_worse"
    )
    unit_rows: int = Field(64, ge=1, description="input pairs per work unit (the grain of output files and resume)")


class ServeLimits(StrictModel):
    """Bounds on one HTTP request to the judge service; requests beyond them get a 413 or 422."""

    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="whole request body (413 above)")
    max_image_bytes: int = Field(16 * 1024 * 1024, ge=1, description="one encoded image (413 above)")
    max_image_pixels: int = Field(40_000_000, ge=1, description="width*height of one image (413 above)")
    max_question_chars: int = Field(8_000, ge=1)
    max_response_chars: int = Field(16_000, ge=1)
    max_batch_items: int = Field(32, ge=1, description="items in one /v1/judge/batch call")
    max_candidates: int = Field(8, ge=2, description="candidates in one /v1/rank call (k*(k-1)/2 pairs)")
    max_reward_prompts: int = Field(32, ge=1, description="prompts (groups) in one /v1/reward call")
    max_group_completions: int = Field(16, ge=1, description="completions in one /v1/reward group (a "
                                       "within-group method judges k*(k-1) ordered pairs)")

    def image_limits(self) -> InputLimits:
        """The same bounds in the form the image loader takes."""
        return InputLimits(max_image_bytes=self.max_image_bytes, max_image_pixels=self.max_image_pixels,
                           max_question_chars=self.max_question_chars,
                           max_response_chars=self.max_response_chars)


class ServeConfig(StrictModel):
    """Defaults for the judge service (paper 3.7); serve_configs/*.yaml may override any field."""

    model: str = Field("vlm", description="key in `models`, a checkpoint folder, or `tiny:<role>`")
    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="transformers: the model in the replica behind @serve.batch; vllm: "
        "vLLM's async engine in the replica (continuous batching; the model's engine_args apply)")
    default_mode: Literal["explain", "verdict"] = "explain"
    max_batch_size: int = Field(16, ge=2, description="pairs per forward pass; >= 2 so a swap check fits")
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    max_new_tokens: int | None = Field(None, ge=1, description="explain mode; None: the model's generation")
    max_ongoing_requests: int = Field(64, ge=1, description="in flight per replica (backpressure)")
    max_queued_requests: int = Field(256, ge=-1, description="queued per caller before a fast 503; -1: no cap")
    num_replicas: int = Field(1, ge=1, description="fixed replica count when autoscaling_config is unset")
    autoscaling_config: dict[str, Any] | None = Field(None, description="Ray Serve AutoscalingConfig fields")
    num_cpus: float | None = Field(None, ge=0, description="per replica; None: the model's resources")
    num_gpus: float | None = Field(None, ge=0, description="per replica; None: the model's resources")
    tie_on_swap_disagreement: bool = True
    reward_method: Literal["reference", "bradley_terry", "copeland"] = Field(
        "bradley_terry", description="/v1/reward method when a request names none (carevl.judge.rules)")
    allow_remote_images: bool = Field(False, description="accept http(s) URLs and server-side paths")
    api_token_env: str | None = Field(None, description="env variable holding the bearer token; None: no auth")
    limits: ServeLimits = Field(default_factory=ServeLimits)

    @model_validator(mode="after")
    def _check_replicas(self) -> "ServeConfig":
        if self.autoscaling_config is not None and self.num_replicas != 1:
            raise ValueError("set either num_replicas or autoscaling_config, not both")
        return self

    def api_token(self) -> str | None:
        """The bearer token from the environment variable named by `api_token_env` (None: no auth).

        Naming a variable that is unset or empty is an error, so a service never runs open by accident.
        """
        if self.api_token_env is None:
            return None
        token = os.environ.get(self.api_token_env, "").strip()
        if not token:
            raise ValueError(f"serve.api_token_env names '{self.api_token_env}', which is unset or empty")
        return token


class EvalConfig(StrictModel):
    """Paper A.2: k judgements per item, averaged; fixed-seed A/B shuffling. Paper 4.1 benchmarks."""

    k: int = Field(5, ge=1)
    mode: Literal["explain", "verdict"] = "explain"
    seed: int = 0
    judge_model: str = Field("vlm", description="key in `models` whose dtype, max_length, generation and "
                             "resources an in-process judge uses (--judge replaces only its path)")
    max_new_tokens: int | None = Field(None, ge=1, description="explain mode; None: the model's generation")
    position_check: bool = Field(True, description="also judge every item in the other A/B order")
    tie_margin: float = Field(0.05, ge=0, le=0.5, description="verdict mode: |p_a - 0.5| <= margin is a tie")
    length_buckets: list[int] = Field([200, 500, 1000, 2000], min_length=1,
                                      description="answer-length bucket edges (characters) in the bias report")
    synthetic_items: int = Field(64, ge=1, description="held-out synthetic pairs when --input is not given")
    reference_models: list[str] = Field(
        default_factory=lambda: ["GPT-4o", "LLaVA-OneVision-7B", "CAREVL (LLaVA-OneVision-7B)",
                                 "LLaVA-Critic-7B", "GPT-4V"],
        description="published models drawn beside the judge in charts and report.md")
    client_concurrency: int = Field(8, ge=1, description="requests in flight when --judge is a service URL")
    client_timeout_s: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _check_buckets(self) -> "EvalConfig":
        if self.length_buckets != sorted(set(self.length_buckets)):
            raise ValueError(f"length_buckets must be strictly increasing, got {self.length_buckets}")
        return self


class CalibrationConfig(StrictModel):
    """Temperature scaling of the judge's p_a (`ray_jobs.calibrate`, carevl.judge.calibration)."""

    pairs: int = Field(400, ge=4, description="held-out synthetic pairs judged when --input is not given")
    seed: int = Field(1, description="seed of those pairs (another stream than evaluation.seed's)")
    test_fraction: float = Field(0.5, gt=0, lt=1, description="share of pairs (by id) kept out of the fit; "
                                 "ECE before and after is reported on them")
    bins: int = Field(10, ge=2, le=100, description="equal-width bins of the ECE and the reliability diagram")


class ScoreConfig(StrictModel):
    """Offline scoring with a trained judge (`ray_jobs.score`): pairs get p_a in both orders, groups of
    k candidates one reward each (carevl.judge.rules.group_rewards). The judge pool's resources are the
    judge model's (`models.<judge_model>.resources`)."""

    judge_model: str | None = Field(None, description="key in `models` whose settings a --judge folder takes; "
                                    "None: sft.judge_model")
    method: Literal["reference", "bradley_terry", "copeland"] = Field(
        "bradley_terry", description="group rewards: reference (2k judgements, needs a reference answer per "
        "row), bradley_terry or copeland (k(k-1) judgements within the group)")
    tie_on_swap_disagreement: bool = Field(True, description="a pair whose two orders disagree is a tie "
                                           "(pair winner and Copeland games)")
    unit_rows: int = Field(1_000, ge=1, description="input rows per work unit: output files and resume grain")
    task_num_cpus: float = Field(0.25, gt=0, description="CPUs per light task (read, write)")
    read_memory_mb: int = Field(256, ge=1, description="memory one unit's read task declares to Ray: the worker "
                                "process plus the unit's rows (images included); raise it for big images or units")
    limits: InputLimits = Field(default_factory=InputLimits)
    allow_remote_images: bool = Field(False, description="fetch http(s) and cloud image references")
    progress_interval_s: float = Field(10.0, gt=0, description="seconds between progress log lines")
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
