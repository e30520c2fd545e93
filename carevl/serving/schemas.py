"""Request and response bodies of the judge HTTP API (pydantic). Shared by the server and `carevl.client`.

Field bounds that depend on the deployment (text lengths, batch size, candidate count) are checked by
`check_limits` against the configured `ServeLimits`, so the same models serve every configuration.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from carevl.config.stages import ServeLimits
from carevl.judge.rules import RewardMethod

Mode = Literal["explain", "verdict"]
Winner = Literal["A", "B", "tie"]


class _Request(BaseModel):
    # Unknown fields are refused so a misspelt option ("swapcheck") is a 422, not silently ignored.
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    # Responses tolerate fields added by newer servers.
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class JudgeRequest(_Request):
    """One pair to judge: which of two answers to a question about an image is better."""

    question: str = Field(min_length=1)
    image: str | None = Field(None, description="data URL or base64; an http(s) URL or server path only "
                                                "when the server allows remote images")
    response_a: str
    response_b: str
    mode: Mode | None = Field(None, description="explain (generate) or verdict (one forward pass); "
                                                "default: the server's default_mode")
    swap_check: bool = Field(False, description="also judge (B, A) in the same batch; disagreement -> tie")


class JudgeBatchRequest(_Request):
    items: list[JudgeRequest] = Field(min_length=1)


class RankRequest(_Request):
    """Best-of-N: rank k candidate answers to one question by a round-robin of pairwise verdicts."""

    question: str = Field(min_length=1)
    image: str | None = None
    candidates: list[str] = Field(min_length=2)
    swap_check: bool = Field(True, description="judge every pair in both orders")


class RewardPrompt(_Request):
    """One prompt of a /v1/reward call: its image, its group of completions and an optional reference."""

    question: str = Field(min_length=1, description="the prompt the completions answer")
    image: str | None = Field(None, description="data URL or base64 (URL / server path only when allowed)")
    completions: list[str] = Field(min_length=1, description="the group, in the order the rewards come back")
    reference: str | None = Field(None, description="a reference answer; required by method 'reference'")


class RewardRequest(_Request):
    """Rewards for a batch of prompts, each with its group of completions (online RL)."""

    prompts: list[RewardPrompt] = Field(min_length=1)
    method: RewardMethod | None = Field(None, description="reference | bradley_terry | copeland; default: "
                                                          "the server's reward_method")


class JudgeResult(_Response):
    winner: Winner | None = Field(description="null only in explain mode when no verdict could be parsed")
    p_a: float | None = Field(description="probability that response_a is better (verdict mode: from the "
                                          "verdict token; explain mode: share of parsed verdicts for A)")
    explanation: str | None = Field(None, description="explain mode only")
    judgement: str | None = Field(None, description="explain mode: the judge's raw output")
    swap_consistent: bool | None = Field(None, description="null unless swap_check was requested")
    mode: Mode
    model: str
    latency_ms: float


class JudgeBatchResult(_Response):
    results: list[JudgeResult]
    model: str
    latency_ms: float


class PairVerdict(_Response):
    """One round-robin game: candidate `a` shown first against candidate `b`."""

    a: int
    b: int
    winner: Winner
    p_a: float
    swap_consistent: bool | None = None


class RankResult(_Response):
    ranking: list[int] = Field(description="candidate indices, best first")
    best_index: int
    scores: list[float] = Field(description="per candidate: mean probability of beating the others")
    wins: list[float] = Field(description="per candidate: pairwise wins, ties count 1/2")
    pairwise: list[PairVerdict]
    model: str
    latency_ms: float


class RewardFailure(_Response):
    """Why one completion has no reward (its entry in `rewards` is null)."""

    prompt: int
    completion: int
    reason: str = Field(description="reserved_token, prompt_too_long, response_too_long, judge_error, "
                                    "no_valid_comparison")
    message: str


class RewardResult(_Response):
    rewards: list[list[float | None]] = Field(description="per prompt, one reward per completion in order; "
                                                          "null for a completion that could not be judged")
    method: RewardMethod
    temperature: float = Field(description="calibration temperature applied to every p_a (1.0: none)")
    comparisons: int = Field(description="ordered pairs the judge scored for this request")
    failures: list[RewardFailure] = Field(default_factory=list)
    model: str
    latency_ms: float


class ModelInfo(_Response):
    model: str
    model_path: str
    default_mode: Mode
    verdict_prefix: str
    max_batch_size: int
    batch_wait_timeout_s: float
    max_new_tokens: int
    tie_on_swap_disagreement: bool
    reward_method: RewardMethod | None = None
    calibration_temperature: float = 1.0
    allow_remote_images: bool
    auth_required: bool
    limits: ServeLimits


class Health(_Response):
    status: Literal["ok"] = "ok"
    model: str


class ErrorBody(_Response):
    """Body of every 4xx/5xx answer: a stable code, a message, and the offending field when known."""

    error: str
    message: str
    field: str | None = None
    detail: list[dict] | None = None


class FieldLimitError(ValueError):
    """A request field beyond a configured limit; `field` is its dotted path, `status` 413 or 422."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


def _check_text(field: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise FieldLimitError(field, f"has {len(text)} characters, limit {limit}")


def check_judge_limits(request: JudgeRequest, limits: ServeLimits, prefix: str = "") -> None:
    """Raise FieldLimitError naming the first field beyond `limits`."""
    _check_text(prefix + "question", request.question, limits.max_question_chars)
    _check_text(prefix + "response_a", request.response_a, limits.max_response_chars)
    _check_text(prefix + "response_b", request.response_b, limits.max_response_chars)


def check_batch_limits(request: JudgeBatchRequest, limits: ServeLimits) -> None:
    if len(request.items) > limits.max_batch_items:
        raise FieldLimitError("items", f"has {len(request.items)} items, limit {limits.max_batch_items}", 413)
    for n, item in enumerate(request.items):
        check_judge_limits(item, limits, prefix=f"items.{n}.")


def check_rank_limits(request: RankRequest, limits: ServeLimits) -> None:
    if len(request.candidates) > limits.max_candidates:
        raise FieldLimitError("candidates", f"has {len(request.candidates)} candidates, "
                                            f"limit {limits.max_candidates}", 413)
    _check_text("question", request.question, limits.max_question_chars)
    for n, text in enumerate(request.candidates):
        _check_text(f"candidates.{n}", text, limits.max_response_chars)


def check_reward_limits(request: RewardRequest, limits: ServeLimits) -> None:
    """The counts of a /v1/reward call (the texts are checked per prompt by the service, which refuses a
    long question or reference but gives a long completion a null reward with a reason)."""
    if len(request.prompts) > limits.max_reward_prompts:
        raise FieldLimitError("prompts", f"has {len(request.prompts)} prompts, limit {limits.max_reward_prompts}", 413)
    for n, prompt in enumerate(request.prompts):
        if len(prompt.completions) > limits.max_group_completions:
            raise FieldLimitError(f"prompts.{n}.completions", f"has {len(prompt.completions)} completions, "
                                                              f"limit {limits.max_group_completions}", 413)
