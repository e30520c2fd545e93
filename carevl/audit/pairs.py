"""The curated pairs of a finished curation run, read for auditing (paper 3.2).

A run folder holds `high/` and `low/` (PAIR_SCHEMA part files), `quarantine/` and `summary.json`, which
lists the experts in config order (the order of `expert_scores_a` / `expert_scores_b`) and tau. Only the
columns the audit reads are loaded: never images, captions or explanations.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from carevl.data import io as dio

CLASSES = ("high", "low")
PAIR_COLUMNS = ["item_id", "pair_id", "response_a", "response_b", "judge_choice", "expert_scores_a",
                "expert_scores_b", "votes_a", "votes_b", "confidence", "low_reason", "label", "category"]


class RunError(ValueError):
    """A run folder that is not a finished curation run, or pair rows that do not fit its summary."""


@dataclass
class CuratedPairs:
    """Parallel columns of the curated pairs; `folder` is the class folder each row was read from."""

    item_id: list[str] = field(default_factory=list)
    pair_id: list[str] = field(default_factory=list)
    response_a: list[str] = field(default_factory=list)
    response_b: list[str] = field(default_factory=list)
    judge_choice: list[str | None] = field(default_factory=list)
    confidence: list[str] = field(default_factory=list)
    low_reason: list[str | None] = field(default_factory=list)
    label: list[str | None] = field(default_factory=list)
    category: list[str | None] = field(default_factory=list)
    folder: list[str] = field(default_factory=list)
    scores_a: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))   # (pairs, M)
    scores_b: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))   # (pairs, M)
    votes_a: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # (pairs,)
    votes_b: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # (pairs,)

    def __len__(self) -> int:
        return len(self.pair_id)


def read_summary(run_dir: str) -> dict[str, Any]:
    """summary.json of a finished curation run; RunError when there is none (an unfinished run)."""
    uri = dio.join(run_dir, "summary.json")
    if not dio.file_exists(uri):
        raise RunError(f"{run_dir}: no summary.json; is this a finished curation run folder?")
    fs, path = dio.resolve(uri)
    with fs.open_input_stream(path) as stream:
        summary = json.loads(stream.read().decode("utf-8"))
    for key in ("experts", "tau", "pairs"):
        if key not in summary:
            raise RunError(f"{uri}: no '{key}' in the summary")
    return summary


def _class_rows(run_dir: str, cls: str) -> list[dict[str, Any]]:
    folder = dio.join(run_dir, cls)
    fs, path = dio.resolve(folder)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []   # a run with no pair of this class writes no folder
    try:
        files = dio.list_data_files(folder, "parquet")
    except dio.DataFormatError:
        return []
    rows: list[dict[str, Any]] = []
    for file in files:
        for batch in dio.iter_batches(file, "parquet", columns=PAIR_COLUMNS):
            rows += batch.to_pylist()
    return rows


def _score_matrix(rows: list[dict[str, Any]], column: str, n_experts: int) -> np.ndarray:
    for row in rows:
        scores = row[column]
        if scores is None or len(scores) != n_experts:
            raise RunError(f"pair {row['pair_id']}: {column} holds {0 if scores is None else len(scores)} "
                           f"scores, the run has {n_experts} experts")
    return np.array([row[column] for row in rows], dtype=float).reshape(len(rows), n_experts)


def read_pairs(run_dir: str, n_experts: int) -> CuratedPairs:
    """Every curated pair of `run_dir` (high, then low), with expert scores of shape (pairs, n_experts)."""
    rows = []
    for cls in CLASSES:
        rows += [{**row, "folder": cls} for row in _class_rows(run_dir, cls)]
    columns = {name: [row[name] for row in rows] for name in
               ("item_id", "pair_id", "response_a", "response_b", "judge_choice", "confidence",
                "low_reason", "label", "category", "folder")}
    return CuratedPairs(**columns,
                        scores_a=_score_matrix(rows, "expert_scores_a", n_experts),
                        scores_b=_score_matrix(rows, "expert_scores_b", n_experts),
                        votes_a=np.array([row["votes_a"] for row in rows], dtype=int),
                        votes_b=np.array([row["votes_b"] for row in rows], dtype=int))
