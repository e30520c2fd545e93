"""The what-if table: the split rule re-applied to stored scores for every tau and expert panel."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from carevl.audit.whatif import apply_split, expert_panels, rule_outcome, tau_range, what_if_table
from carevl.curation.votes import confidence_split, count_votes


def test_tau_range_keeps_a_unique_majority():
    assert list(tau_range(5)) == [3, 4, 5]
    assert list(tau_range(4)) == [3, 4]
    assert list(tau_range(1)) == [1]
    for m in range(1, 8):
        assert all(2 * tau > m for tau in tau_range(m))
    with pytest.raises(ValueError):
        tau_range(0)


def test_expert_panels_full_then_leave_one_out():
    panels = expert_panels(["x", "y", "z"])
    assert panels == [(None, [0, 1, 2]), ("x", [1, 2]), ("y", [0, 2]), ("z", [0, 1])]
    assert expert_panels(["only"]) == [(None, [0])]


def test_apply_split_equals_the_rule_pair_by_pair():
    m, tau = 5, 4
    cases = [(va, vb, j) for va in range(m + 1) for vb in range(m + 1 - va) for j in ("A", "B", None)]
    votes_a, votes_b, judge = zip(*cases)
    assert apply_split(votes_a, votes_b, judge, tau) == [confidence_split(*c, tau) for c in cases]


def _scores(rng, pairs, m):
    # Small integers: many exact ties, so abstentions are exercised.
    return rng.integers(0, 3, size=(pairs, m)).astype(float), rng.integers(0, 3, size=(pairs, m)).astype(float)


def test_the_configured_row_reproduces_the_stored_split():
    rng = np.random.default_rng(1)
    experts, tau = ["e1", "e2", "e3", "e4", "e5"], 4
    scores_a, scores_b = _scores(rng, 300, 5)
    judge = list(rng.choice(np.array(["A", "B", None], dtype=object), size=300))
    gold = list(rng.choice(np.array(["A", "B", "tie"], dtype=object), size=300))
    stored = [confidence_split(*count_votes(a, b), j, tau) for a, b, j in zip(scores_a, scores_b, judge)]
    table = what_if_table(scores_a, scores_b, judge, gold, experts, tau)
    assert [(r["left_out"], r["tau"]) for r in table] == (
        [(None, 3), (None, 4), (None, 5)] + [(e, t) for e in experts for t in (3, 4)])
    configured = [r for r in table if r["configured"]]
    assert len(configured) == 1 and configured[0]["tau"] == tau
    assert configured[0]["high_size"] == sum(s.confidence == "high" for s in stored)
    assert configured[0]["high_size"] + configured[0]["low_size"] == 300
    high_gold = [g for g, s in zip(gold, stored) if s.confidence == "high"]
    high_correct = sum(g == s.label for g, s in zip(gold, stored) if s.confidence == "high")
    assert configured[0]["high"]["correct"] == high_correct
    assert configured[0]["high"]["n"] == sum(g in ("A", "B") for g in high_gold)
    # A higher bar never keeps more pairs.
    full = [r for r in table if r["left_out"] is None]
    assert [r["high_size"] for r in full] == sorted((r["high_size"] for r in full), reverse=True)


def test_leaving_out_an_expert_is_the_same_as_never_having_it():
    rng = np.random.default_rng(2)
    scores_a, scores_b = _scores(rng, 120, 4)
    judge = list(rng.choice(np.array(["A", "B"], dtype=object), size=120))
    gold = list(rng.choice(np.array(["A", "B"], dtype=object), size=120))
    table = what_if_table(scores_a, scores_b, judge, gold, ["a", "b", "c", "d"], 3)
    without_b = [r for r in table if r["left_out"] == "b"]
    for row in without_b:
        direct = rule_outcome(scores_a[:, [0, 2, 3]], scores_b[:, [0, 2, 3]], judge, gold, row["tau"])
        assert (row["high_size"], row["high"], row["final"]) == (direct["high_size"], direct["high"], direct["final"])


def test_an_inverted_expert_lowers_high_set_accuracy():
    """Experts that mostly agree with gold; inverting one expert's vote (a sign bug) must show."""
    rng = np.random.default_rng(3)
    pairs, m = 400, 5
    gold = list(rng.choice(np.array(["A", "B"], dtype=object), size=pairs))
    sign = np.array([1.0 if g == "A" else -1.0 for g in gold])[:, None]
    noise = rng.normal(size=(pairs, m))
    scores_a = sign * 0.8 + noise            # each expert right about 80% of the time
    scores_b = np.zeros((pairs, m))
    judge = [g if rng.random() < 0.75 else {"A": "B", "B": "A"}[g] for g in gold]
    experts = [f"e{i}" for i in range(m)]
    good = what_if_table(scores_a, scores_b, judge, gold, experts, 4)
    inverted_a = scores_a.copy()
    inverted_a[:, 0] = -inverted_a[:, 0]
    bad = what_if_table(inverted_a, scores_b, judge, gold, experts, 4)
    pick = lambda table: next(r for r in table if r["configured"])  # noqa: E731
    assert pick(good)["high"]["accuracy"] > 0.9
    assert pick(bad)["high_size"] < pick(good)["high_size"]
    assert pick(bad)["high"]["accuracy"] < pick(good)["high"]["accuracy"]
    assert pick(bad)["final"]["accuracy"] < pick(good)["final"]["accuracy"] - 0.03
    # The panel without the inverted expert is untouched by it, and the table shows it doing better.
    without = {t: next(r for r in table if r["left_out"] == "e0" and r["tau"] == 3) for t, table in
               (("good", good), ("bad", bad))}
    assert without["bad"] == without["good"]
    assert without["bad"]["final"]["accuracy"] > pick(bad)["final"]["accuracy"]


def test_what_if_table_checks_shapes():
    with pytest.raises(ValueError, match="shape"):
        what_if_table(np.zeros((3, 2)), np.zeros((3, 2)), ["A"] * 3, ["A"] * 3, ["a", "b", "c"], 2)


def test_all_combinations_of_a_tiny_panel():
    """M = 2: every possible pair of votes, checked by hand against the rule."""
    grid = list(itertools.product([0.0, 1.0], repeat=4))
    scores_a = np.array([[g[0], g[1]] for g in grid])
    scores_b = np.array([[g[2], g[3]] for g in grid])
    judge = ["A"] * len(grid)
    gold = ["A"] * len(grid)
    row = next(r for r in what_if_table(scores_a, scores_b, judge, gold, ["x", "y"], 2) if r["configured"])
    expected_high = sum(count_votes(a, b)[0] == 2 for a, b in zip(scores_a, scores_b))
    assert row["high_size"] == expected_high and row["high"]["accuracy"] == 1.0
