"""Negative sampling over a batch and DPO-row expansion (no Ray, no models)."""
import pyarrow as pa

from carevl.refine.critiques import is_correct
from carevl.refine.pipeline import apply_strategy, dpo_rows


def _batch():
    return pa.table({
        "pair_id": ["p0", "p1", "p2"],
        "critiques": [["Verdict: A\nExplanation: x", "Verdict: B\nExplanation: y", "Verdict: A\nExplanation: z"],
                      ["Verdict: B", "junk"], []],
        "verdicts": [["A", "B", "A"], ["B", None], []],
        "correct": [[True, False, True], [False, False], []],
        "scores": pa.array([[60.0, 90.0, 75.0], [None, None], []], pa.list_(pa.float64())),
        "skip_reason": pa.array([None, "no_correct", "no_label"], pa.string()),
        "label": ["A", "A", None],
    })


def test_apply_strategy_selects_and_keeps_earlier_skips():
    out = apply_strategy(_batch(), "best_to_worse").to_pylist()
    assert out[0]["chosen_index"] == 2 and out[0]["rejected_indices"] == [0, 1] and out[0]["skip_reason"] is None
    assert out[1]["chosen_index"] is None and out[1]["skip_reason"] == "no_correct"
    assert out[2]["skip_reason"] == "no_label"


def test_dpo_rows_carry_texts_scores_and_flags():
    pair = apply_strategy(_batch(), "best_to_worse").to_pylist()[0]
    rows = dpo_rows(pair, "best_to_worse")
    assert [(r["chosen_index"], r["rejected_index"]) for r in rows] == [(2, 0), (2, 1)]
    assert rows[0]["chosen"] == "Verdict: A\nExplanation: z" and rows[0]["rejected_correct"] is True
    assert rows[1]["rejected_score"] == 90.0 and rows[1]["rejected_verdict"] == "B"
    assert all(r["chosen_score"] == 75.0 and r["strategy"] == "best_to_worse" for r in rows)
    assert dpo_rows(apply_strategy(_batch(), "best_to_worse").to_pylist()[1], "best_to_worse") == []


def test_correct_means_equal_to_label():
    assert is_correct("A", "A") and not is_correct("B", "A") and not is_correct(None, "A")
