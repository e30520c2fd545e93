"""Scoring inputs: held-out synthetic pairs, groups built from them, and rows that must be quarantined."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from carevl.data.synth import synth_eval_pairs
from carevl.testing.items import write_jsonl

BAD_ROWS = [
    "{not json",
    {"id": "bad-missing", "question": "q", "response_a": "x"},
    {"id": "bad-image", "question": "q", "response_a": "x", "response_b": "y", "image": "data:image/png;base64,AAAA"},
    {"id": "bad-long", "question": "q", "response_a": "x " * 3000, "response_b": "y"},
]


def pair_rows(n: int, seed: int = 7) -> list[dict]:
    return list(synth_eval_pairs(n, seed))


def group_rows(n: int, k: int = 3, seed: int = 8) -> list[dict]:
    """Groups of k answers to held-out questions: both answers of a pair plus fillers; the better
    answer of the pair is the reference."""
    groups = []
    for p in synth_eval_pairs(n, seed):
        better = p["response_a"] if p["label"] == "A" else p["response_b"]
        candidates = [p["response_a"], p["response_b"], "I cannot see the image.", "Maybe."][:k]
        groups.append({"id": f"g-{p['id']}", "image": p["image"], "question": p["question"],
                       "candidates": candidates, "reference": better})
    return groups


def write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def mixed_input(tmp_path) -> tuple[Path, list]:
    """9 pairs, 3 groups and the bad rows, interleaved, in one JSONL file."""
    pairs, groups = pair_rows(9), group_rows(3)
    rows = pairs[:4] + BAD_ROWS[:2] + groups + pairs[4:] + BAD_ROWS[2:]
    return write_jsonl(tmp_path / "rows.jsonl", rows), rows
