"""Hand-made curation run folders for audit tests: pair rows built by curation's own `pair_rows` from
chosen scores and verdicts, written as curation writes them (high/, low/ Parquet and summary.json)."""
from __future__ import annotations

import json
import random
from itertools import combinations
from pathlib import Path

import pyarrow as pa
import pytest

from carevl.curation.pairs import pair_rows
from carevl.curation.summary import build_summary, empty_stats, pair_stats
from carevl.data.io import write_table
from carevl.schema import PAIR_SCHEMA

EXPERTS = ["e1", "e2", "e3"]
TAU = 2
PREFIX = "score:"


def make_items(n: int, seed: int = 0, expert_skill: float = 0.8, judge_skill: float = 0.7) -> list[dict]:
    """n items of 3 responses with gold scores, noisy expert scores and noisy judge verdicts."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        gold = [rng.choice([0.0, 0.5, 1.0]) for _ in range(3)]
        scores = {e: [g + rng.gauss(0, 0.4 / expert_skill) for g in gold] for e in EXPERTS}
        pairs = list(combinations(range(3), 2))
        choices = []
        for a, b in pairs:
            better = "A" if gold[a] > gold[b] else "B" if gold[b] > gold[a] else rng.choice("AB")
            choices.append(better if rng.random() < judge_skill else {"A": "B", "B": "A"}[better])
        if i % 7 == 3:
            choices[0] = None      # a missing verdict now and then
        items.append({"item_id": f"item-{i}", "question": "q?", "responses": [f"r{i}-{k}" for k in range(3)],
                      "gold_scores": gold, "category": ["color", "counting"][i % 2],
                      "pairs_a": [p[0] for p in pairs], "pairs_b": [p[1] for p in pairs], "judge_choices": choices,
                      "judge_explanations": ["because"] * 3,
                      "judge_statuses": ["ok" if c else "missing" for c in choices],
                      **{f"{PREFIX}{e}": s for e, s in scores.items()}})
    return items


def curated_rows(items: list[dict]) -> list[dict]:
    return [row for item in items for row in pair_rows(item, EXPERTS, TAU, PREFIX)]


def write_run(run_dir: Path, rows: list[dict]) -> Path:
    """A finished run folder holding `rows` (PAIR_SCHEMA dicts) split by their `confidence`."""
    for cls in ("high", "low"):
        part = [r for r in rows if r["confidence"] == cls]
        if part:
            write_table(pa.Table.from_pylist(part, schema=PAIR_SCHEMA), str(run_dir / cls / "u0-part.parquet"))
    stats = empty_stats()
    pair_stats(stats, rows, EXPERTS)
    summary = build_summary(stats, experts=EXPERTS, tau=TAU, model_ids={}, config_hash="test", run={})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def write_gold(path: Path, items: list[dict]) -> str:
    keep = ("item_id", "question", "responses", "gold_scores", "category")
    path.write_text("".join(json.dumps({k: item[k] for k in keep}) + "\n" for item in items))
    return str(path)


@pytest.fixture
def hand_run(tmp_path):
    items = make_items(40)
    rows = curated_rows(items)
    return {"items": items, "rows": rows, "run": write_run(tmp_path / "run", rows),
            "gold": write_gold(tmp_path / "gold.jsonl", items), "tmp": tmp_path}
