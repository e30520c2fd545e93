"""Curated pairs (PAIR_SCHEMA) made straight from synthetic items, for training tests and the learning
benchmark when the curation job is not part of the run; and refinement-style DPO rows made from them
when the refinement job is not part of the run either.

The synthetic items carry a noisy strong-judge verdict per pair and a known quality per response.
Here the known quality stands in for the expert vote (paper 3.2): a pair whose judge verdict agrees
with it is high-confidence; one that disagrees is low-confidence (`judge_disagrees`) and relabelled
to the better response (paper 3.4). Pairs of equal quality are left out (no preference to learn).
"""
from __future__ import annotations

from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from carevl.data import io as dio
from carevl.data.synth import SynthSpec, iter_items
from carevl.judge_format import format_judgement, swap_choice
from carevl.schema import PAIR_SCHEMA, pair_id


def pairs_of_item(item: dict[str, Any], num_experts: int = 5) -> Iterator[dict[str, Any]]:
    """PAIR_SCHEMA rows for every judged pair of one synthetic item with a real preference."""
    gold = item["gold_scores"]
    for judged in item["judgements"] or []:
        a, b = judged["a"], judged["b"]
        if gold[a] == gold[b]:
            continue
        better = "A" if gold[a] > gold[b] else "B"
        agrees = judged["choice"] == better
        votes_better = num_experts if agrees else num_experts - 1
        votes = (votes_better, num_experts - votes_better) if better == "A" else \
            (num_experts - votes_better, votes_better)
        yield {
            "item_id": item["item_id"], "pair_id": pair_id(item["item_id"], a, b),
            "question": item["question"], "image_path": item["image_path"], "image_bytes": item["image_bytes"],
            "caption": None, "response_a": item["responses"][a], "response_b": item["responses"][b],
            "judge_choice": judged["choice"], "judge_explanation": judged["explanation"], "judge_status": "ok",
            "expert_scores_a": [float(gold[a])] * num_experts, "expert_scores_b": [float(gold[b])] * num_experts,
            "votes_a": votes[0], "votes_b": votes[1],
            "confidence": "high" if agrees else "low", "low_reason": None if agrees else "judge_disagrees",
            "label": better, "category": item["category"],
        }


def write_synthetic_pairs(run_dir: str, n_items: int, seed: int, spec: SynthSpec = SynthSpec()) -> dict[str, int]:
    """Write `run_dir/high` and `run_dir/low` Parquet like the curation job does; returns row counts."""
    rows: dict[str, list[dict[str, Any]]] = {"high": [], "low": []}
    for item in iter_items(n_items, seed, spec):
        for row in pairs_of_item(item):
            rows[row["confidence"]].append(row)
    for split, split_rows in rows.items():
        table = pa.Table.from_pylist(split_rows, schema=PAIR_SCHEMA)
        dio.write_table(table, dio.join(run_dir, split, dio.shard_name(0, "parquet")))
    return {split: len(r) for split, r in rows.items()}


def write_synthetic_dpo_rows(run_dir: str, out_dir: str) -> int:
    """Write `out_dir/dpo` rows like the refinement job does, one per low-confidence pair of `run_dir`:
    a critique naming the relabelled answer (paper 3.4) chosen over a vague one naming the other
    (paper 3.5's best against worse, in its plainest form). Returns the row count."""
    keep = ("pair_id", "item_id", "question", "image_path", "image_bytes", "response_a", "response_b", "label")
    rows = []
    for pair in pq.read_table(dio.join(run_dir, "low")).to_pylist():
        label = pair["label"]
        rows.append({**{k: pair[k] for k in keep},
                     "chosen": format_judgement(label, f"Answer {label} matches what the image shows."),
                     "rejected": format_judgement(swap_choice(label), "It seems better."),
                     "chosen_score": 80.0, "rejected_score": 20.0})
    dio.write_table(pa.Table.from_pylist(rows), dio.join(out_dir, "dpo", dio.shard_name(0, "parquet")))
    return len(rows)
