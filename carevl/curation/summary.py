"""Counters of a curation run: computed per written batch, stored per work unit, merged for summary.json.

All counters are plain nested dicts of integers (or [agree, total] lists), so partial counts from any
number of batches, units and runs merge by addition and a resumed run reports the whole dataset.
"""
from __future__ import annotations

from itertools import combinations
from typing import Any, Sequence

from carevl.curation.votes import expert_vote


def _bump(counter: dict[str, Any], key: str, by: int = 1) -> None:
    counter[key] = counter.get(key, 0) + by


def _agree(counter: dict[str, list[int]], key: str, same: bool) -> None:
    cell = counter.setdefault(key, [0, 0])
    cell[0] += int(same)
    cell[1] += 1


def empty_stats() -> dict[str, Any]:
    return {"input_rows": 0, "items": 0, "quarantined": 0, "quarantine_reasons": {}, "pairs": {},
            "low_reasons": {}, "judge_status": {}, "labels": {}, "vote_histogram": {},
            "expert_judge_agreement": {}, "expert_pair_agreement": {}, "expert_forward_rows": {},
            "unique_responses": 0, "captions": {}, "judge_cache_hits": 0}


def pair_stats(stats: dict[str, Any], pairs: Sequence[dict[str, Any]], experts: Sequence[str]) -> None:
    """Add the counts of curated pair rows (PAIR_SCHEMA dicts) to `stats`."""
    for p in pairs:
        _bump(stats["pairs"], p["confidence"])
        _bump(stats["low_reasons"], p["low_reason"] or "none")
        _bump(stats["judge_status"], p["judge_status"])
        _bump(stats["labels"], p["label"] or "null")
        _bump(stats["vote_histogram"], f"{p['votes_a']}:{p['votes_b']}")
        votes = [expert_vote(a, b) for a, b in zip(p["expert_scores_a"], p["expert_scores_b"])]
        if p["judge_choice"] is not None:
            for name, vote in zip(experts, votes):
                _agree(stats["expert_judge_agreement"], name, vote == p["judge_choice"])
        for (i, a), (j, b) in combinations(enumerate(votes), 2):
            _agree(stats["expert_pair_agreement"], f"{experts[i]}|{experts[j]}", a == b)


def merge_stats(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Add `part` into `total` (in place) and return it."""
    for key, value in part.items():
        if isinstance(value, dict):
            merge_stats(total.setdefault(key, {}), value)
        elif isinstance(value, list):
            cell = total.setdefault(key, [0] * len(value))
            for i, v in enumerate(value):
                cell[i] += v
        else:
            total[key] = total.get(key, 0) + value
    return total


def _rates(cells: dict[str, list[int]]) -> dict[str, dict[str, float | int]]:
    return {k: {"agree": a, "total": t, "rate": round(a / t, 4) if t else None} for k, (a, t) in sorted(cells.items())}


def build_summary(stats: dict[str, Any], *, experts: Sequence[str], tau: int, model_ids: dict[str, str],
                  config_hash: str, run: dict[str, Any]) -> dict[str, Any]:
    """The summary.json document from merged counters and this run's timing."""
    pairs_total = sum(stats["pairs"].values())
    return {
        "input_rows": stats["input_rows"],
        "processed_items": stats["items"],
        "quarantined_items": stats["quarantined"],
        "rows_conserved": stats["input_rows"] == stats["items"] + stats["quarantined"],
        "quarantine_reasons": dict(sorted(stats["quarantine_reasons"].items())),
        "pairs": {"total": pairs_total, "high": stats["pairs"].get("high", 0), "low": stats["pairs"].get("low", 0)},
        "low_reasons": {k: v for k, v in sorted(stats["low_reasons"].items()) if k != "none"},
        "judge_status": dict(sorted(stats["judge_status"].items())),
        "labels": dict(sorted(stats["labels"].items())),
        "vote_histogram": dict(sorted(stats["vote_histogram"].items())),
        "expert_judge_agreement": _rates(stats["expert_judge_agreement"]),
        "expert_pair_agreement": _rates(stats["expert_pair_agreement"]),
        "expert_forward_rows": stats["expert_forward_rows"],
        "unique_responses": stats["unique_responses"],
        "captions": stats["captions"],
        "judge_cache_hits": stats["judge_cache_hits"],
        "experts": list(experts),
        "tau": tau,
        "model_ids": model_ids,
        "config_hash": config_hash,
        "run": run,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable report of summary.json."""
    p, run = summary["pairs"], summary["run"]
    lines = [
        f"input rows {summary['input_rows']}: {summary['processed_items']} processed, "
        f"{summary['quarantined_items']} quarantined"
        + ("" if summary["rows_conserved"] else "  (ROW COUNT MISMATCH)"),
        f"pairs {p['total']}: high {p['high']}, low {p['low']} "
        + " ".join(f"[{k} {v}]" for k, v in summary["low_reasons"].items()),
    ]
    if summary["quarantine_reasons"]:
        lines.append("quarantine: " + ", ".join(f"{k} {v}" for k, v in summary["quarantine_reasons"].items()))
    lines.append("votes (v_A:v_B): " + ", ".join(f"{k} x{v}" for k, v in summary["vote_histogram"].items()))
    lines.append("expert agreement with judge: " + ", ".join(
        f"{k} {v['rate']}" for k, v in summary["expert_judge_agreement"].items()))
    lines.append(f"this run: {run.get('units_run', 0)} units ({run.get('units_skipped', 0)} already done), "
                 f"{run.get('pairs', 0)} pairs in {run.get('seconds', 0):.1f}s "
                 f"= {run.get('pairs_per_second', 0):.1f} pairs/s")
    lines.append(f"config {summary['config_hash']}")
    return "\n".join(lines)
