"""Metric functions on hand-built cases (paper 4.1, A.2, Tables 1 and 2)."""
from __future__ import annotations

import pytest

from carevl.evaluation.metrics import (
    accuracy_summary,
    is_correct,
    item_scores,
    pairwise_metrics,
    per_run_spread,
    tie_prediction,
    vl_rewardbench_metrics,
)


def test_overall_and_macro_differ_when_categories_are_unbalanced():
    # general: 1 of 1 right; hallucination: 1 of 4 right; reasoning: 0 of 1 right.
    ids = ["g1", "h1", "h2", "h3", "h4", "r1"]
    cats = ["general", "hallucination", "hallucination", "hallucination", "hallucination", "reasoning"]
    correct = [True, True, False, False, False, False]
    m = vl_rewardbench_metrics(ids, cats, correct)
    assert m["general"] == 1.0
    assert m["hallucination"] == 0.25
    assert m["reasoning"] == 0.0
    assert m["overall"] == pytest.approx(2 / 6)
    assert m["macro"] == pytest.approx((1.0 + 0.25 + 0.0) / 3)
    assert m["overall"] != pytest.approx(m["macro"])


def test_k_runs_are_averaged_per_item_first():
    # item a: right in 1 of 2 runs, item b: right in both runs -> (0.5 + 1) / 2.
    ids = ["a", "a", "b", "b"]
    assert item_scores(ids, [True, False, True, True]) == {"a": 0.5, "b": 1.0}
    s = accuracy_summary(ids, ["x"] * 4, [True, False, True, True])
    assert s["overall"] == pytest.approx(0.75)
    assert s["n_items"] == {"x": 2}


def test_unparseable_verdict_counts_wrong_never_random():
    assert is_correct(None, "A") is False
    assert is_correct(None, "B") is False
    assert tie_prediction(None) is None
    m = vl_rewardbench_metrics(["g1", "g2"], ["general", "general"], [is_correct(None, "A"), is_correct("A", "A")])
    assert m["general"] == 0.5


def test_missing_category_is_none_and_left_out_of_macro():
    m = vl_rewardbench_metrics(["g1", "h1"], ["general", "hallucination"], [True, False])
    assert m["reasoning"] is None
    assert m["macro"] == pytest.approx(0.5)


def test_unknown_vl_rewardbench_category_is_rejected():
    with pytest.raises(ValueError, match="not VL-RewardBench"):
        vl_rewardbench_metrics(["x"], ["math"], [True])


def test_tie_prediction_rules():
    assert tie_prediction("A", "A") == "A"
    assert tie_prediction("A", "B") == "tie"          # swap-inconsistent
    assert tie_prediction("B", None) == "B"           # swapped order unparseable: no swap evidence
    assert tie_prediction("A", p_a=0.53, tie_margin=0.05) == "tie"
    assert tie_prediction("A", p_a=0.56, tie_margin=0.05) == "A"
    # averaged over both orders: (0.9 + 0.2) / 2 = 0.55 -> outside a 0.04 margin
    assert tie_prediction("A", "A", p_a=0.9, p_a_swapped=0.2, tie_margin=0.04) == "A"
    assert tie_prediction(None, p_a=0.5) == "tie"     # exact indifference
    assert tie_prediction("A", p_a=0.9, tie_margin=0.0) == "A"


def test_pairwise_with_and_without_tie():
    ids = ["c1", "c2", "c3", "m1", "m2"]
    cats = ["COCO", "COCO", "COCO", "Math", "Math"]
    labels = ["A", "tie", "B", "B", "A"]
    ties = ["A", "tie", "tie", "B", None]   # m2 unparseable
    verdicts = ["A", "B", "A", "B", None]
    m = pairwise_metrics(ids, cats, labels, ties, verdicts)
    wt = m["with_tie"]
    assert wt["per_category"] == {"COCO": pytest.approx(2 / 3), "Math": 0.5}
    assert wt["average"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert wt["overall"] == pytest.approx(3 / 5)
    wo = m["without_tie"]
    assert wo["n_items"] == {"COCO": 2, "Math": 2}       # the tie-labelled item is left out
    assert wo["per_category"] == {"COCO": 0.5, "Math": 0.5}
    assert wo["overall"] == 0.5


def test_swap_checked_counts_a_swap_tie_as_wrong():
    """A position-locked judge: right in its primary order on half the pairs, a swap tie on all of them."""
    ids, cats = ["p1", "p2", "p3", "p4"], ["COCO"] * 4
    labels = ["A", "B", "A", "B"]
    verdicts = ["A", "A", "A", "A"]                 # always the first answer shown
    ties = ["tie"] * 4                              # ... so the swapped order always disagrees
    m = pairwise_metrics(ids, cats, labels, ties, verdicts)
    assert m["without_tie"]["overall"] == 0.5
    assert m["swap_checked"]["overall"] == 0.0
    consistent = pairwise_metrics(ids, cats, labels, ["A", "B", "B", "B"], ["A", "B", "B", "B"])
    assert consistent["swap_checked"]["overall"] == 0.75


def test_per_run_spread():
    s = per_run_spread([0, 0, 1, 1], ["a", "b", "a", "b"], [True, True, True, False])
    assert s["per_run"] == {0: 1.0, 1: 0.5}
    assert s["mean"] == 0.75
    assert s["std"] == pytest.approx(0.25)


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        item_scores(["a"], [True, False])
    with pytest.raises(ValueError):
        accuracy_summary(["a", "a"], ["x", "y"], [True, True])
