"""Bias report functions on hand-built cases."""
from __future__ import annotations

import pytest

from carevl.evaluation.bias import (
    accuracy_by_length_bucket,
    first_position_rate,
    length_bias,
    position_consistency,
    tie_rate,
)


def test_position_consistency_skips_incomplete_pairs():
    r = position_consistency(["A", "B", "A", None], ["A", "A", "A", "B"])
    assert r == {"rate": pytest.approx(2 / 3), "n_pairs": 3, "n_incomplete": 1}


def test_first_position_rate_counts_shown_order():
    assert first_position_rate(["A", "A", "A", "B", None]) == {"rate": 0.75, "n": 4}
    assert first_position_rate([None])["rate"] is None


def test_length_bias_judge_prefers_longer():
    len_a = [10, 50, 30, 20, 40]
    len_b = [40, 20, 30, 60, 10]
    labels = ["A", "A", "A", "B", "tie"]       # equal lengths and tie labels are not counted
    preds = ["B", "A", "A", "B", "A"]
    r = length_bias(len_a, len_b, labels, preds)
    assert r["n"] == 3
    assert r["judge_picks_longer"] == 1.0        # always the longer one
    assert r["label_picks_longer"] == pytest.approx(2 / 3)


def test_tie_rate():
    r = tie_rate(["A", "tie", None, "B"], labels=["A", "tie", "tie", "B"])
    assert r["rate"] == pytest.approx(1 / 3)
    assert r["n"] == 3
    assert r["label_rate"] == 0.5


def test_accuracy_by_length_bucket():
    rows = accuracy_by_length_bucket([5, 50, 150, 150, 5000], [True, False, True, False, True], [100, 1000])
    assert [b["bucket"] for b in rows] == ["<100", "100-999", ">=1000"]
    assert [b["n"] for b in rows] == [2, 2, 1]
    assert [b["accuracy"] for b in rows] == [0.5, 0.5, 1.0]
    assert accuracy_by_length_bucket([1], [True], [10, 20])[1]["accuracy"] is None
    with pytest.raises(ValueError):
        accuracy_by_length_bucket([1], [True], [20, 10])
