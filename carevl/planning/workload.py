"""Tokens each stage processes, and the time and money that costs on the cluster, from a roofline.

Throughput of one replica = peak FLOP/s of its devices x MFU / FLOPs per token, separately for
prompt tokens (prefill MFU), generated tokens (decode MFU) and training tokens (train MFU). Device
hours = replica seconds x devices per replica; cost = device hours x the node type's price per device.

Counts follow the paper's data flow: K answers per item give K(K-1)/2 pairs; the experts score each
distinct answer once (K per item) instead of both sides of every pair (2 per pair), the unique-
response saving; low-confidence pairs get m critiques and m rubric scores; a share of them make DPO
rows. Every length and share is an assumption in `planning` (`carevl.config.planning`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from carevl.config import CarevlConfig, ModelSpec
from carevl.planning.nodes import NodeType
from carevl.planning.placement import Need


@dataclass(frozen=True)
class Counts:
    """How much data one run has: items, answers per item, pairs (and what follows from them)."""

    items: int
    responses_per_item: float
    pairs: int
    high_pairs: int
    low_pairs: int
    dpo_rows: int

    @property
    def unique_responses(self) -> int:
        return round(self.items * self.responses_per_item)


def counts_for(config: CarevlConfig, pairs: int, items: int | None = None) -> Counts:
    """Items from pairs (K(K-1)/2 pairs per item) unless given; the confidence split and the DPO yield
    from the planning assumptions."""
    plan = config.planning
    k = len(config.curation.candidates) or plan.responses_per_item
    if items:
        # both given: the answers per item that make that many pairs (k^2 - k - 2 pairs/items = 0)
        k = (1 + math.sqrt(1 + 8 * pairs / items)) / 2
    else:
        items = math.ceil(pairs / (k * (k - 1) / 2))
    high = round(pairs * plan.high_fraction)
    return Counts(items=items, responses_per_item=k, pairs=pairs, high_pairs=high, low_pairs=pairs - high,
                  dpo_rows=round((pairs - high) * plan.refine_yield))


@dataclass
class Work:
    """Tokens one model of one stage processes."""

    stage: str
    role: str
    model: str
    requests: int
    prompt_tokens: float        # per request
    new_tokens: float = 0.0     # per request (generation)
    train_passes: float = 0.0   # training: forward+backward passes over every token (epochs; DPO x2 rows)
    extra_forward: float = 0.0  # training: forward-only passes (DPO reference)
    image_tokens: float = 0.0   # per request, through the vision tower
    note: str = ""
    # filled by `estimate`
    flops: float = 0.0
    seconds_one_replica: float = 0.0
    device_hours: float = 0.0
    device: str = "GPU"
    node_type: str | None = None
    replicas: int = 0
    wall_hours: float = 0.0
    usd: float | None = None
    api_usd: float | None = None
    extras: dict = field(default_factory=dict)

    @property
    def total_prompt_tokens(self) -> float:
        return self.requests * self.prompt_tokens

    @property
    def total_new_tokens(self) -> float:
        return self.requests * self.new_tokens


def _decode(spec: ModelSpec, wanted: int) -> int:
    """Generated tokens: the assumption, capped by the model's max_new_tokens."""
    return min(wanted, spec.generation.max_new_tokens)


def curation_work(config: CarevlConfig, c: Counts) -> list[Work]:
    t, cur, models = config.planning.tokens, config.curation, config.models
    work: list[Work] = []
    vlm_prompt = t.image + t.question + t.instructions
    for source in cur.candidates:
        spec = models[source.model]
        work.append(Work("curate", f"candidates T={source.temperature:g}", source.model, c.items, vlm_prompt,
                         _decode(spec, t.response), image_tokens=t.image))
    if cur.caption_backend == "model":
        spec = models[cur.caption_model]
        work.append(Work("curate", "caption", cur.caption_model, c.items, t.image + t.instructions,
                         _decode(spec, t.caption), image_tokens=t.image, note="once per unique image"))
    if cur.strong_judge.backend != "column":
        spec = models[cur.strong_judge.model]
        work.append(Work("curate", "strong judge", cur.strong_judge.model, c.pairs,
                         vlm_prompt + 2 * t.response, _decode(spec, t.explanation), image_tokens=t.image))
    saving = 2 * c.pairs / max(c.unique_responses, 1)
    for name in cur.experts:
        work.append(Work("curate", "expert", name, c.unique_responses,
                         t.caption + t.question + t.response + t.instructions,
                         note=f"each distinct answer once: {c.unique_responses:,} forwards instead of "
                              f"{2 * c.pairs:,} ({saving:.1f}x fewer)"))
    return work


def training_work(config: CarevlConfig, c: Counts, stage: str) -> Work:
    t = config.planning.tokens
    section = getattr(config, stage)
    epochs = float(section.trainer.get("num_train_epochs", 1))
    prompt = t.image + t.question + 2 * t.response + t.instructions
    if stage == "sft":
        return Work("sft", "train", config.sft.judge_model, c.high_pairs, prompt + t.explanation,
                    train_passes=epochs, image_tokens=t.image, note="high-confidence pairs")
    # DPO: chosen and rejected sequences, each through the policy (fwd+bwd) and the frozen reference.
    return Work("dpo", "train", config.sft.judge_model, c.dpo_rows, prompt + t.critique,
                train_passes=2 * epochs, extra_forward=2 * epochs, image_tokens=t.image,
                note="chosen + rejected per row, policy and reference")


def refine_work(config: CarevlConfig, c: Counts) -> list[Work]:
    t, r, models = config.planning.tokens, config.refine, config.models
    prompt = t.image + t.question + 2 * t.response + t.instructions
    critic = models[config.sft.judge_model]
    m = r.num_samples
    scorer = models[r.scorer_model]
    # The rubric opens every scorer prompt: vLLM's automatic prefix caching (and the transformers
    # backend's prefix_cache) compute it once, not once per critique.
    cached = scorer.backend == "vllm" or scorer.generation.prefix_cache
    rubric = 0 if cached else t.rubric
    return [
        Work("refine", f"critic x{m}", config.sft.judge_model, c.low_pairs, prompt,
             m * min(t.critique, r.max_new_tokens, critic.max_length), image_tokens=t.image,
             note=f"{m} critiques per low-confidence pair, prompt shared"),
        Work("refine", "critique scorer", r.scorer_model, c.low_pairs * m,
             rubric + t.question + 2 * t.response + t.critique, _decode(scorer, t.score),
             note="rubric prefix computed once (prefix cache)" if cached else ""),
    ]


def stage_work(config: CarevlConfig, c: Counts) -> list[Work]:
    return (curation_work(config, c) + [training_work(config, c, "sft")] + refine_work(config, c)
            + [training_work(config, c, "dpo")])
