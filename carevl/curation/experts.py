"""Expert scores (paper 3.2): M text reward models read (caption + question, response).

Each model sees the caption and question as the user turn and the response as the assistant turn,
rendered with its own chat template. An `ExpertScorer` actor hosts one expert, or several co-located
ones; per batch it flattens the distinct responses of all items into one list and scores it in batched
forward passes, so each distinct response of an item is scored exactly once per expert. Votes are
derived from these per-response scores later (`carevl.curation.pairs`), never from a second pass.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from carevl.config import ModelSpec
from carevl.curation.columns import SCORE_PREFIX, SCORED_PREFIX, ItemStage, active_rows
from carevl.curation.pairs import distinct_indices, first_occurrence


def expert_messages(caption: str | None, question: str, response: str) -> list[dict]:
    """The conversation an expert scores: image description and question, then the answer."""
    user = f"Image description:\n{caption or '(no description)'}\n\nQuestion:\n{question}"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": response}]


def token_budget_chunks(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Group row indices, sorted by length, into chunks whose padded size (rows x longest) fits `budget`.

    Sorting keeps padding small; a single row longer than the budget still forms its own chunk.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks, current, longest = [], [], 0
    for i in order:
        longest_if_added = max(longest, lengths[i])
        if current and longest_if_added * (len(current) + 1) > budget:
            chunks.append(current)
            current, longest_if_added = [], lengths[i]
        current.append(i)
        longest = longest_if_added
    if current:
        chunks.append(current)
    return chunks


class RewardScorer:
    """One sequence-classification reward model: texts in, one float score each.

    `forward_rows` counts the rows that actually went through the model's forward (a forward pre-hook),
    so callers and tests can check that nothing is scored twice.
    """

    def __init__(self, spec: ModelSpec, model_cache: Path, device: str | None = None):
        from carevl.models.loading import load_reward_model

        self.spec = spec
        self.model, self.tokenizer = load_reward_model(spec, Path(model_cache), device=device)
        # The score head reads the last token: on overflow keep the end of the answer, not the start.
        self.tokenizer.truncation_side = "left"
        self.budget = spec.resources.batch_size * spec.max_length
        self.forward_rows = 0
        self.forward_calls = 0
        self.model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.forward_rows += int(ids.shape[0])
        self.forward_calls += 1

    def render(self, caption: str | None, question: str, response: str) -> str:
        return self.tokenizer.apply_chat_template(expert_messages(caption, question, response), tokenize=False)

    @torch.inference_mode()
    def score(self, texts: list[str]) -> np.ndarray:
        """Scores, shape (len(texts),), float64."""
        if not texts:
            return np.zeros(0)
        encoded = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.spec.max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        scores = np.zeros(len(texts))
        for chunk in token_budget_chunks(lengths, self.budget):
            batch = self.tokenizer.pad({"input_ids": [encoded["input_ids"][i] for i in chunk],
                                        "attention_mask": [encoded["attention_mask"][i] for i in chunk]},
                                       return_tensors="pt")
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
            logits = self.model(**batch).logits  # (rows, num_labels)
            scores[chunk] = logits[:, 0].float().cpu().numpy()
        return scores


def make_scorer(spec: ModelSpec, model_cache: Path, device: str | None = None):
    """A RewardScorer for the spec's backend (`vllm` imported only when asked for)."""
    if spec.backend == "vllm":
        from carevl.curation.vllm_backend import VLLMRewardScorer

        return VLLMRewardScorer(spec, model_cache)
    if spec.backend != "transformers":
        raise ValueError(f"reward model '{spec.path}': backend '{spec.backend}' cannot score")
    return RewardScorer(spec, model_cache, device=device)


class ExpertScorer(ItemStage):
    """Adds `score__<expert>` (one score per response) and `scored__<expert>` (forward rows of the item)
    for each hosted expert."""

    required = ("question", "responses", "caption")

    def __init__(self, experts: dict[str, ModelSpec], model_cache: str, device: str | None = None,
                 num_threads: int | None = None):
        from carevl.models.loading import use_threads

        use_threads(num_threads)
        self.scorers = {name: make_scorer(spec, Path(model_cache), device) for name, spec in experts.items()}

    def process(self, columns: dict[str, list]) -> dict[str, list]:
        n = len(columns["responses"])
        rows = active_rows(columns)
        unique = {i: distinct_indices(columns["responses"][i]) for i in rows}
        for name, scorer in self.scorers.items():
            texts, owners = [], []
            for i in rows:
                for r in unique[i]:
                    texts.append(scorer.render(columns["caption"][i], columns["question"][i],
                                               columns["responses"][i][r]))
                    owners.append((i, r))
            before = scorer.forward_rows
            flat = scorer.score(texts)
            if scorer.forward_rows - before != len(texts):
                raise RuntimeError(f"expert {name}: {scorer.forward_rows - before} forward rows for "
                                   f"{len(texts)} distinct responses")
            by_response = {owner: float(s) for owner, s in zip(owners, flat)}
            scores, scored = [None] * n, [0] * n
            for i in rows:
                rep = first_occurrence(columns["responses"][i])
                scores[i] = [by_response[(i, rep[r])] for r in range(len(rep))]
                scored[i] = len(unique[i])
            columns[f"{SCORE_PREFIX}{name}"] = scores
            columns[f"{SCORED_PREFIX}{name}"] = scored
        return columns
