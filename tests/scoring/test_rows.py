"""Scoring rows (pure): checking input rows into one shape, and a pair's and a group's results."""
from __future__ import annotations

import json

import pytest

from carevl.config import InputLimits
from carevl.judge.rules import group_rewards, reward_comparisons
from carevl.scoring.rows import (
    GROUP,
    PAIR,
    PAIR_COMPARISONS,
    comparisons_of,
    group_result,
    normalize_row,
    pair_result,
)

LIMITS = InputLimits(max_response_chars=50, max_responses=4)


def _norm(row, method="bradley_terry", base_dir=None):
    return normalize_row(row, "u1", 7, base_dir, LIMITS, method)


def test_a_pair_row_keeps_its_fields_and_resolves_a_relative_image(tmp_path):
    record = _norm({"id": 3, "question": "q", "response_a": "a", "response_b": "b", "image": "img/x.png",
                    "label": "b", "category": "color"}, base_dir=str(tmp_path))
    assert record["reason"] is None and record["kind"] == PAIR and record["responses"] == ["a", "b"]
    assert record["id"] == "3" and record["label"] == "B" and record["row_index"] == 7
    assert record["image_ref"] == str(tmp_path / "img/x.png")


def test_a_group_row_with_reference_and_image_bytes():
    record = _norm({"question": "q", "candidates": ["x", "y", "z"], "reference": "r",
                    "image": {"bytes": b"\x89PNG...", "path": None}}, method="reference")
    assert record["kind"] == GROUP and record["responses"] == ["x", "y", "z"] and record["reference"] == "r"
    assert record["image_bytes"] == b"\x89PNG..." and record["id"] is None


@pytest.mark.parametrize("row, method, needle", [
    ({"question": "q", "response_a": "a"}, "bradley_terry", "'response_b' must be a string"),
    ({"question": "q", "candidates": ["a", "b"], "response_a": "a", "response_b": "b"}, "copeland", "both"),
    ({"question": "q"}, "copeland", "needs 'response_a' and 'response_b'"),
    ({"question": "q", "candidates": ["only"]}, "copeland", "needs 2 to 4"),
    ({"question": "q", "candidates": ["a", "b", "c", "d", "e"]}, "copeland", "needs 2 to 4"),
    ({"question": "q", "candidates": ["a", 3]}, "copeland", "list of strings"),
    ({"question": "q", "candidates": ["a", "b"]}, "reference", "'reference' is required"),
    ({"question": "q", "candidates": ["a", "x" * 51]}, "copeland", "answer 1 has 51 characters"),
    ({"question": 5, "response_a": "a", "response_b": "b"}, "copeland", "'question' must be a string"),
    ({"question": "q", "response_a": "a", "response_b": "b", "label": "C"}, "copeland", "'label'"),
    ({"question": "q", "response_a": "a", "response_b": "b", "image": 12}, "copeland", "field 'image'"),
])
def test_bad_rows_get_a_reason_naming_the_field(row, method, needle):
    record = _norm(row, method=method)
    assert record["reason"] is not None and needle in record["reason"]
    assert record["kind"] is None and json.loads(record["row_json"])["question"] == row["question"]


def test_a_broken_jsonl_line_and_data_urls_are_kept_short_in_quarantine():
    assert _norm({"_error": "invalid_json", "_raw": "{nope"})["reason"] == "invalid_json"
    record = _norm({"question": "q", "response_a": "a", "image": "data:image/png;base64," + "A" * 1000})
    assert "AAAA" not in record["row_json"] and "bytes>" in record["row_json"]


def test_comparisons_of_a_pair_and_of_each_group_method():
    pair = _norm({"question": "q", "response_a": "a", "response_b": "b"})
    assert comparisons_of(pair, "copeland") == (["a", "b"], PAIR_COMPARISONS)
    group = _norm({"question": "q", "candidates": ["x", "y", "z"], "reference": "r"}, method="reference")
    answers, comparisons = comparisons_of(group, "reference")
    assert answers == ["x", "y", "z", "r"] and comparisons == reward_comparisons(3, "reference")
    assert comparisons_of(group, "bradley_terry")[1] == reward_comparisons(3, "bradley_terry")


def test_pair_result_reports_both_orders_in_the_pairs_own_a_b_order():
    out = pair_result([0.8, 0.3], ["ok", "ok"], tie_on_disagreement=True)
    # (B, A) says the answer shown first (B) wins with 0.3, so P(A better) in that order is 0.7.
    assert out["p_a_ab"] == 0.8 and out["p_a_ba"] == pytest.approx(0.7) and out["p_a"] == pytest.approx(0.75)
    assert out["winner"] == "A" and out["swap_consistent"]
    biased = pair_result([0.8, 0.8], ["ok", "ok"], tie_on_disagreement=True)
    assert biased["winner"] == "tie" and not biased["swap_consistent"]
    assert pair_result([0.8, None], ["ok", "prompt_too_long"], True) == {"reason": "prompt_too_long"}


def test_group_result_gives_none_to_a_candidate_whose_judgements_all_failed():
    comparisons = reward_comparisons(3, "copeland")
    p = [None if 2 in c else (0.9 if c == (0, 1) else 0.2) for c in comparisons]
    statuses = ["prompt_too_long" if 2 in c else "ok" for c in comparisons]
    out = group_result(3, "copeland", comparisons, p, statuses, tie_on_disagreement=True)
    assert out["rewards"] == [1.0, 0.0, None] and out["ranking"] == [0, 1, 2] and out["best_index"] == 0
    assert out["candidate_status"] == ["ok", "ok", "prompt_too_long"]
    assert len(out["judgements"]) == 6 and out["judgements"][0] == {"first": 0, "second": 1, "p_first": 0.9,
                                                                    "status": "ok"}
    everything_failed = group_result(3, "copeland", comparisons, [None] * 6, ["reserved_token"] * 6, True)
    assert everything_failed == {"reason": "reserved_token"}


def test_group_result_rewards_are_the_rules_rewards():
    comparisons = reward_comparisons(3, "bradley_terry")
    p = [0.7, 0.4, 0.9, 0.2, 0.6, 0.35]
    out = group_result(3, "bradley_terry", comparisons, p, ["ok"] * 6, True)
    assert out["rewards"] == group_rewards(3, "bradley_terry", comparisons, p)
    assert out["ranking"][0] == 0
