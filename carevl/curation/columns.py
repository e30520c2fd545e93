"""Item-level rows as they travel between curation stages, and the base class of every stage.

Rows stay at item level (one row per image-question item) through all model stages, so each unique
response of an item is scored once per expert by construction; pairs are only formed at the end.
A row that failed a check carries a non-null `reason` and passes through later stages untouched
until it is written to `quarantine/`.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pyarrow as pa
from PIL import Image

from carevl.config.stages import InputLimits
from carevl.data.images import ImageError, load_image

SCORE_PREFIX = "score__"     # score__<expert>: one score per response, aligned with `responses`
SCORED_PREFIX = "scored__"   # scored__<expert>: rows of this item in that expert's forward passes

# Known item-level columns and their Arrow types; columns not listed are inferred.
WORK_TYPES: dict[str, pa.DataType] = {
    "unit_id": pa.string(),
    "row_index": pa.int64(),
    "reason": pa.string(),
    "row_json": pa.string(),
    "item_id": pa.string(),
    "image_path": pa.string(),
    "image_bytes": pa.binary(),
    "image_key": pa.string(),
    "question": pa.string(),
    "category": pa.string(),
    "responses": pa.list_(pa.string()),
    "response_models": pa.list_(pa.string()),
    "needs_candidates": pa.bool_(),
    "pairs_a": pa.list_(pa.int32()),
    "pairs_b": pa.list_(pa.int32()),
    "judge_choices": pa.list_(pa.string()),
    "judge_explanations": pa.list_(pa.string()),
    "judge_statuses": pa.list_(pa.string()),
    "judge_cached": pa.int32(),
    "caption": pa.string(),
    "caption_new": pa.bool_(),
}


def column_type(name: str) -> pa.DataType | None:
    if name in WORK_TYPES:
        return WORK_TYPES[name]
    if name.startswith(SCORE_PREFIX):
        return pa.list_(pa.float64())
    if name.startswith(SCORED_PREFIX):
        return pa.int32()
    return None


def as_columns(batch: pa.Table | dict[str, Any]) -> dict[str, list]:
    """A batch (Arrow table, or dict of numpy arrays / lists) as a dict of plain Python lists."""
    if isinstance(batch, pa.Table):
        return batch.to_pydict()
    out = {}
    for name, values in batch.items():
        out[name] = values.tolist() if isinstance(values, np.ndarray) else list(values)
    return out


def to_table(columns: dict[str, list]) -> pa.Table:
    """Dict of lists -> Arrow table with the known column types (so nested lists never become tensors)."""
    arrays, names = [], []
    for name, values in columns.items():
        arrays.append(pa.array(values, type=column_type(name)))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def num_rows(columns: dict[str, list]) -> int:
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns have different lengths: { {k: len(v) for k, v in columns.items()} }")
    return lengths.pop() if lengths else 0


def active_rows(columns: dict[str, list]) -> list[int]:
    """Indices of rows still in play (not quarantined)."""
    reasons = columns.get("reason") or [None] * num_rows(columns)
    return [i for i, r in enumerate(reasons) if r is None]


class ItemStage:
    """Base of every item-level stage: a batch in, the same rows out, with new or updated columns.

    Subclasses set `required` and implement `process(columns) -> columns`. The same object works as a
    Ray Data `map_batches` UDF (batch_format "pyarrow") and on a plain dict batch in a unit test.
    """

    required: tuple[str, ...] = ()

    def __call__(self, batch: pa.Table | dict[str, Any]) -> pa.Table:
        columns = as_columns(batch)
        missing = [c for c in self.required if c not in columns]
        if missing:
            raise KeyError(f"{type(self).__name__}: batch lacks required column(s) {missing}; "
                           f"has {sorted(columns)}")
        n = num_rows(columns)
        columns.setdefault("reason", [None] * n)
        out = self.process(columns)
        if num_rows(out) != n:
            raise RuntimeError(f"{type(self).__name__} returned {num_rows(out)} rows for {n}: rows were lost")
        return to_table(out)

    def process(self, columns: dict[str, list]) -> dict[str, list]:
        raise NotImplementedError


def set_reason(columns: dict[str, list], index: int, reason: str) -> None:
    """Send one row to quarantine with `reason` (the first reason recorded wins)."""
    if columns["reason"][index] is None:
        columns["reason"][index] = reason


def load_row_images(columns: dict[str, list], rows: Iterable[int], limits: InputLimits,
                    allow_remote: bool) -> dict[int, Image.Image]:
    """Decode the image of each listed row; a row whose image fails is quarantined with the reason."""
    images = {}
    for i in rows:
        try:
            images[i] = load_image(columns["image_path"][i], columns["image_bytes"][i], limits,
                                   allow_remote=allow_remote)
        except ImageError as exc:
            set_reason(columns, i, exc.reason)
    return images
