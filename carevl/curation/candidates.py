"""Candidate responses (paper 3.1) for items that arrive without any.

Each configured source is an LVLM with a sampling temperature (the paper: each model greedy and at 1.0).
All sources that share a model run in one actor pool, so the model is loaded once. After every pool has
run, `CandidateCheck` applies the stage-1 response rules (`validate.check_responses`) to what was generated and forms the pairs.
"""
from __future__ import annotations

from pathlib import Path

from carevl.config import ModelSpec
from carevl.config.stages import InputLimits
from carevl.curation.columns import ItemStage, active_rows, load_row_images, set_reason
from carevl.curation.validate import attach_pairs, check_responses
from carevl.errors import ReasonError
from carevl.models.backends import make_generator


def answer_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def source_name(model: str, temperature: float) -> str:
    """How a generated response records its source in `response_models`."""
    return f"{model}@t={temperature:g}"


class CandidateGenerator(ItemStage):
    """Appends one response per temperature of `model` to every item that needs candidates."""

    required = ("needs_candidates", "question", "responses", "response_models", "image_path", "image_bytes")

    def __init__(self, model: str, spec: ModelSpec, temperatures: list[float], model_cache: str,
                 limits: InputLimits, allow_remote_images: bool = False, request_cache: str | None = None,
                 seed: int = 0):
        self.model, self.spec, self.temperatures = model, spec, temperatures
        self.limits, self.allow_remote, self.seed = limits, allow_remote_images, seed
        self.generator = make_generator(spec, Path(model_cache), request_cache)

    def process(self, columns: dict[str, list]) -> dict[str, list]:
        rows = [i for i in active_rows(columns) if columns["needs_candidates"][i]]
        images = load_row_images(columns, rows, self.limits, self.allow_remote)
        rows = [i for i in rows if i in images]
        for temperature in self.temperatures:
            if not rows:
                break
            outputs = self.generator.generate([answer_messages(columns["question"][i]) for i in rows],
                                              [images[i] for i in rows], temperature=temperature,
                                              max_new_tokens=self.spec.generation.max_new_tokens, seed=self.seed)
            for i, out in zip(rows, outputs):
                if out is None:  # a request that failed for good; the check below counts what remains
                    continue
                columns["responses"][i] = list(columns["responses"][i] or []) + [out[0]]
                columns["response_models"][i] = list(columns["response_models"][i] or []) + [
                    source_name(self.model, temperature)]
        return columns


class CandidateCheck(ItemStage):
    """Stage-1 response rules on generated candidates, then the item's pairs (and empty verdicts)."""

    required = ("needs_candidates", "responses")

    def __init__(self, limits: InputLimits, judge_from_column: bool):
        self.limits, self.judge_from_column = limits, judge_from_column

    def process(self, columns: dict[str, list]) -> dict[str, list]:
        for name in ("pairs_a", "pairs_b", "judge_choices", "judge_statuses", "judge_explanations"):
            columns.setdefault(name, [None] * len(columns["responses"]))
        for i in active_rows(columns):
            if not columns["needs_candidates"][i]:
                continue
            row = {"responses": columns["responses"][i] or [], "judgements": None}
            try:
                check_responses(row["responses"], self.limits)
                attach_pairs(row, self.judge_from_column)
            except ReasonError as exc:  # Rejected, PairError
                set_reason(columns, i, exc.reason)
                continue
            for name in ("pairs_a", "pairs_b", "judge_choices", "judge_statuses", "judge_explanations"):
                columns[name][i] = row[name]
        return columns
