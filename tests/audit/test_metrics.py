"""The audit's pure metric functions on hand-made values."""
from __future__ import annotations

import math

import pytest

from carevl.audit.metrics import (
    NO_CATEGORY, gold_preference, select, tally, tally_by_category, vote_majority, wilson_interval,
)


@pytest.mark.parametrize("correct,n,low,high", [
    (8, 10, 0.4901625, 0.9433178),      # textbook value (e.g. statsmodels proportion_confint, method wilson)
    (81, 263, 0.2552885, 0.3662096),    # Wilson's interval for 81/263
    (5, 10, 0.2365931, 0.7634069),      # symmetric around 0.5
])
def test_wilson_interval_known_values(correct, n, low, high):
    lo, hi = wilson_interval(correct, n)
    assert lo == pytest.approx(low, abs=1e-6) and hi == pytest.approx(high, abs=1e-6)


def test_wilson_interval_edges_are_exact_and_closed_form():
    z2 = 1.959963984540054 ** 2
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2)))
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + z2)), 1.0)
    assert wilson_interval(0, 0) is None


def test_wilson_interval_narrows_with_n_and_widens_with_level():
    small, large = wilson_interval(7, 10), wilson_interval(700, 1000)
    assert (small[1] - small[0]) > (large[1] - large[0]) > 0
    ninety, ninety_nine = wilson_interval(7, 10, 0.90), wilson_interval(7, 10, 0.99)
    assert ninety_nine[0] < ninety[0] and ninety_nine[1] > ninety[1]


@pytest.mark.parametrize("correct,n", [(-1, 3), (4, 3)])
def test_wilson_interval_rejects_impossible_counts(correct, n):
    with pytest.raises(ValueError, match="correct <= n"):
        wilson_interval(correct, n)


def test_gold_preference():
    assert gold_preference(1.0, 0.0) == "A"
    assert gold_preference(-0.5, 0.8) == "B"
    assert gold_preference(0.3, 0.3) == "tie"
    assert gold_preference(None, 1.0) is None
    assert gold_preference(math.nan, 1.0) is None


def test_vote_majority_compares_vote_counts():
    assert vote_majority(3, 1) == "A"
    assert vote_majority(0, 2) == "B"
    assert vote_majority(2, 2) is None


def test_tally_counts_every_pair_once():
    predictions = ["A", "B", None, "A", "B", None, "A"]
    gold = ["A", "A", "B", "tie", None, None, "B"]
    block = tally(predictions, gold)
    assert block["n"] == 3 and block["correct"] == 1
    assert block["accuracy"] == pytest.approx(1 / 3)
    assert (block["abstained"], block["gold_ties"], block["no_gold"]) == (1, 1, 2)
    assert block["pairs"] == block["n"] + block["abstained"] + block["gold_ties"] + block["no_gold"] == 7
    assert block["ci95"] == pytest.approx(list(wilson_interval(1, 3)))


def test_tally_with_nothing_scored():
    block = tally([None, "A"], ["A", None])
    assert block["n"] == 0 and block["accuracy"] is None and block["ci95"] is None


def test_a_flipped_label_drops_accuracy():
    gold = ["A", "B", "A", "B", "A", "B"]
    right = list(gold)
    flipped = list(gold)
    flipped[2] = "B"
    assert tally(right, gold)["accuracy"] == 1.0
    assert tally(flipped, gold)["accuracy"] == pytest.approx(5 / 6)
    inverted = [{"A": "B", "B": "A"}[g] for g in gold]   # an inverted rule gets everything wrong
    assert tally(inverted, gold)["accuracy"] == 0.0


def test_tally_rejects_bad_values():
    with pytest.raises(ValueError, match="same|predictions"):
        tally(["A"], ["A", "B"])
    with pytest.raises(ValueError, match="gold label"):
        tally(["A"], ["yes"])
    with pytest.raises(ValueError, match="prediction"):
        tally(["left"], ["A"])


def test_tally_by_category_splits_and_sums():
    predictions = ["A", "B", "A", "A", None]
    gold = ["A", "A", "B", "A", "B"]
    categories = ["color", "color", "counting", None, "counting"]
    out = tally_by_category(predictions, gold, categories)
    assert out["overall"]["n"] == 4 and out["overall"]["correct"] == 2
    per = out["per_category"]
    assert list(per) == [NO_CATEGORY, "color", "counting"]
    assert (per["color"]["n"], per["color"]["correct"]) == (2, 1)
    assert (per["counting"]["n"], per["counting"]["abstained"]) == (1, 1)
    assert per[NO_CATEGORY]["accuracy"] == 1.0
    assert sum(b["pairs"] for b in per.values()) == out["overall"]["pairs"]


def test_select():
    assert select(["a", "b", "c"], [True, False, True]) == ["a", "c"]
    with pytest.raises(ValueError):
        select([1, 2], [True])
