"""Sampling critiques from the SFT judge and scoring them with the rubric (paper 3.4-3.5).

Two model wrappers, each loading its model in `__init__` and mapping a batch (pyarrow table or dict of
columns) to a batch in `__call__`, so they run in Ray Data actor pools and directly in unit tests:

- `CritiqueSampler`: m critiques per low-confidence pair from the SFT model, the answers shown in the
  pair's own A/B order so a verdict compares directly with the pair's `label`; adds `critiques`,
  `verdicts`, `correct` and `skip_reason` (pairs without a label or image are not sampled).
- `CritiqueScorer`: one rubric score per critique from the scorer LLM; adds `scores`, `score_status`
  and `score_replies`. Pairs already skipped, or with no correct critique, are not scored (their
  chosen sample cannot exist), nor are critiques whose score the negative-sampling strategy never reads
  (`negatives.needs_score`: under Best-to-Worse, the incorrect ones); the status records these as
  `not_scored`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa

from carevl.config import InputLimits, ModelSpec
from carevl.data.images import ImageError, load_image
from carevl.judge_format import judge_messages, parse_verdict
from carevl.models.backends import make_generator, make_text_generator
from carevl.ray_utils import use_threads
from carevl.refine.negatives import NO_CORRECT, needs_score
from carevl.refine.rubric import full_reply, parse_score, rubric_messages

NO_LABEL = "no_label"
NOT_SCORED = "not_scored"
SAMPLER_COLUMNS = ("pair_id", "question", "response_a", "response_b", "label", "image_path", "image_bytes")
SCORER_COLUMNS = ("pair_id", "question", "caption", "response_a", "response_b", "label", "critiques",
                  "correct", "skip_reason")


def is_correct(verdict: str | None, label: str) -> bool:
    """A critique is correct when its verdict equals the relabelled target (paper 3.4); an
    unparseable verdict (None) is incorrect."""
    return verdict is not None and verdict == label


def batch_seed(seed: int, pair_ids: list[str]) -> int:
    """A sampling seed fixed by the config seed and the batch's pairs, so a redone unit repeats."""
    digest = hashlib.sha256(f"{seed}:{'|'.join(pair_ids)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


# Types of the columns the refinement stages add (fixed, so batches always concatenate).
ADDED_TYPES: dict[str, pa.DataType] = {
    "critiques": pa.list_(pa.string()), "verdicts": pa.list_(pa.string()), "correct": pa.list_(pa.bool_()),
    "skip_reason": pa.string(), "scores": pa.list_(pa.float64()), "score_status": pa.list_(pa.string()),
    "score_replies": pa.list_(pa.string()), "chosen_index": pa.int32(), "rejected_indices": pa.list_(pa.int32()),
}


def as_table(batch: pa.Table | dict[str, Any], required: tuple[str, ...], who: str) -> pa.Table:
    """The batch as a table, failing loudly when a needed column is missing."""
    table = batch if isinstance(batch, pa.Table) else pa.table(batch)
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise KeyError(f"{who}: batch lacks columns {missing}")
    return table


def with_columns(table: pa.Table, rows: list[dict[str, Any]], names: tuple[str, ...], who: str) -> pa.Table:
    """`table` with the columns `names` (typed by ADDED_TYPES) set from `rows`, one row per input row."""
    if len(rows) != table.num_rows:
        raise RuntimeError(f"{who}: {table.num_rows} rows in, {len(rows)} out")
    for name in names:
        column = pa.array([row[name] for row in rows], type=ADDED_TYPES[name])
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, column)
        else:
            table = table.append_column(name, column)
    return table


class CritiqueSampler:
    """m critiques per pair from the SFT judge (any generation backend: transformers or vllm)."""

    def __init__(self, spec: ModelSpec, model_cache: str, num_samples: int, temperature: float,
                 max_new_tokens: int, seed: int, limits: InputLimits | None = None,
                 allow_remote_images: bool = False, num_threads: int | None = None) -> None:
        use_threads(num_threads)
        self.generator = make_generator(spec, Path(model_cache), request_cache=None)
        self.num_samples, self.temperature, self.max_new_tokens = num_samples, temperature, max_new_tokens
        self.seed = seed
        self.limits = limits or InputLimits()
        self.allow_remote = allow_remote_images  # `curation.allow_remote_images`: the same rule as curation

    def __call__(self, batch: pa.Table | dict[str, Any]) -> pa.Table:
        table = as_table(batch, SAMPLER_COLUMNS, "CritiqueSampler")
        rows = table.to_pylist()
        todo, messages, images = [], [], []
        for i, row in enumerate(rows):
            row.update(critiques=[], verdicts=[], correct=[], skip_reason=row.get("skip_reason"))
            if row["label"] not in ("A", "B"):
                row["skip_reason"] = NO_LABEL
                continue
            try:
                images.append(load_image(row["image_path"], row["image_bytes"], self.limits,
                                         allow_remote=self.allow_remote))
            except ImageError as exc:
                row["skip_reason"] = exc.reason
                continue
            todo.append(i)
            messages.append(judge_messages(row["question"], row["response_a"], row["response_b"]))
        if todo:
            seed = batch_seed(self.seed, [rows[i]["pair_id"] for i in todo])
            samples = self.generator.generate(messages, images, temperature=self.temperature,
                                              max_new_tokens=self.max_new_tokens, num_samples=self.num_samples,
                                              seed=seed)
            for i, texts in zip(todo, samples):
                texts = list(texts or [])
                verdicts = [parse_verdict(t) for t in texts]
                rows[i].update(critiques=texts, verdicts=verdicts,
                               correct=[is_correct(v, rows[i]["label"]) for v in verdicts])
                if not any(rows[i]["correct"]):
                    rows[i]["skip_reason"] = NO_CORRECT
        return with_columns(table, rows, ("critiques", "verdicts", "correct", "skip_reason"), "CritiqueSampler")


class CritiqueScorer:
    """Rubric scores in [0, 100] for every critique of the pairs that can yield a DPO row."""

    def __init__(self, spec: ModelSpec, model_cache: str, num_threads: int | None = None,
                 strategy: str = "best_to_worse") -> None:
        use_threads(num_threads)
        self.generator = make_text_generator(spec, Path(model_cache))
        self.with_images = spec.kind != "causal"  # a VLM backend takes an (absent) image per conversation
        self.spec = spec
        self.strategy = strategy
        needs_score(strategy, [])  # an unknown strategy fails here, before any batch

    def _generate(self, messages: list[list[dict]]) -> list[str | None]:
        gen = self.spec.generation
        kwargs = dict(temperature=gen.temperature, max_new_tokens=gen.max_new_tokens, num_samples=1, seed=0)
        if self.with_images:
            out = self.generator.generate(messages, [None] * len(messages), **kwargs)
        else:
            out = self.generator.generate(messages, **kwargs)
        return [texts[0] if texts else None for texts in out]

    def __call__(self, batch: pa.Table | dict[str, Any]) -> pa.Table:
        table = as_table(batch, SCORER_COLUMNS, "CritiqueScorer")
        rows = table.to_pylist()
        where, messages = [], []
        for i, row in enumerate(rows):
            m = len(row["critiques"])
            row.update(scores=[None] * m, score_status=[NOT_SCORED] * m, score_replies=[None] * m)
            if row["skip_reason"] is not None:
                continue
            wanted = needs_score(self.strategy, row["correct"])
            for j, critique in enumerate(row["critiques"]):
                if not wanted[j]:
                    continue
                where.append((i, j))
                messages.append(rubric_messages(row["question"], row["caption"], row["response_a"],
                                                row["response_b"], row["label"], critique))
        replies = self._generate(messages) if messages else []
        for (i, j), continuation in zip(where, replies):
            reply = full_reply(continuation)
            score, status = parse_score(reply)
            rows[i]["scores"][j] = None if score is None else float(score)
            rows[i]["score_status"][j] = status
            rows[i]["score_replies"][j] = reply
        return with_columns(table, rows, ("scores", "score_status", "score_replies"), "CritiqueScorer")
