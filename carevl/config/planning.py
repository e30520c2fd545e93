"""The placement planner's assumptions: where the cluster is described, how well hardware is used,
how long prompts and answers are, and what a node-hour costs. Every figure here is a stated
assumption a user can override (`--set planning.mfu.decode=0.2`), never a hidden constant."""
from __future__ import annotations

from pydantic import Field

from carevl.config.base import StrictModel


class Utilisation(StrictModel):
    """Model FLOPs utilisation (achieved / peak dense FLOP/s) per kind of work.

    Prefill and training are compute-bound and reach a good share of peak; decoding at the configured
    batch reads every weight once per generated token for the whole batch, so it stays far below.
    """

    prefill: float = Field(0.40, gt=0, le=1, description="prompt processing and reward-model scoring")
    decode: float = Field(0.15, gt=0, le=1, description="token-by-token generation")
    train: float = Field(0.35, gt=0, le=1, description="SFT / DPO forward + backward")


class TokenAssumptions(StrictModel):
    """Average token lengths per item and pair (paper-scale data; measure and override)."""

    image: int = Field(1024, ge=0, description="image tokens in an LVLM prompt (Qwen2-VL: 896x896 px -> 1024)")
    question: int = Field(64, ge=0)
    response: int = Field(256, ge=1, description="one candidate answer")
    caption: int = Field(384, ge=1, description="one generated caption (paper 3.2)")
    instructions: int = Field(192, ge=0, description="fixed prompt text around judge / expert / caption inputs")
    explanation: int = Field(256, ge=1, description="strong judge's verdict and explanation per pair")
    critique: int = Field(384, ge=1, description="one sampled critique (paper 3.4)")
    rubric: int = Field(900, ge=0, description="the critique scorer's rubric prompt (paper 3.5)")
    score: int = Field(4, ge=1, description="the scorer's reply")


class ApiPrice(StrictModel):
    """USD per million tokens of an external endpoint model."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class PlanningConfig(StrictModel):
    """Assumptions of `python -m ray_jobs.plan` and of the placement check every job runs first."""

    cluster: str | None = Field(
        None, description="cluster launcher YAML whose node types jobs must fit (relative paths: the "
                          "repository root); None: the running Ray cluster's nodes, else this machine")
    gpu_memory_utilization: float = Field(
        0.90, gt=0, le=1, description="share of each GPU's memory a model may fill (vLLM's default)")
    host_memory_utilization: float = Field(0.80, gt=0, le=1, description="share of a node's RAM for CPU models")
    mfu: Utilisation = Field(default_factory=Utilisation)
    tokens: TokenAssumptions = Field(default_factory=TokenAssumptions)
    responses_per_item: int = Field(
        4, ge=2, description="answers per item when curation.candidates is empty (data brings its own)")
    high_fraction: float = Field(0.35, ge=0, le=1, description="share of pairs curated as high-confidence")
    refine_yield: float = Field(0.5, ge=0, le=1, description="share of low-confidence pairs that give a DPO row")
    prices: dict[str, float] = Field(
        default_factory=dict, description="USD per node-hour by node type, over the instance table's list price")
    api_prices: dict[str, ApiPrice] = Field(
        default_factory=lambda: {"gpt-4o-2024-05-13": ApiPrice(input=5.0, output=15.0)},
        description="USD per million tokens by endpoint model path (the provider's published price)")
