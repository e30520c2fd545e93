"""Expert scores (paper 3.2): M text reward models read (caption + question, response).

Each model sees the caption and question as the user turn and the response as the assistant turn,
rendered with its own chat template by the model's scoring backend (`carevl.models.backends`). An
`ExpertScorer` actor hosts one expert, or several co-located ones; per batch it flattens the distinct
responses of all items into one list and scores it in batched forward passes, so each distinct response of an item is scored exactly once per expert. Votes are
derived from these per-response scores later (`carevl.curation.pairs`), never from a second pass.
"""
from __future__ import annotations

from pathlib import Path

from carevl.config import ModelSpec
from carevl.curation.columns import SCORE_PREFIX, SCORED_PREFIX, ItemStage, active_rows
from carevl.curation.pairs import distinct_indices, first_occurrence
from carevl.models.backends import make_scorer
from carevl.prompts import expert_messages
from carevl.ray_utils import use_threads


class ExpertScorer(ItemStage):
    """Adds `score__<expert>` (one score per response) and `scored__<expert>` (forward rows of the item)
    for each hosted expert."""

    required = ("question", "responses", "caption")

    def __init__(self, experts: dict[str, ModelSpec], model_cache: str, device: str | None = None,
                 num_threads: int | None = None):
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
                    texts.append(scorer.render(expert_messages(columns["caption"][i], columns["question"][i],
                                                               columns["responses"][i][r])))
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
