"""The vote, split and relabel rules (paper 3.2, 3.4) on hand-built cases, M = 3 and M = 5."""
from __future__ import annotations

import itertools

import pytest

from carevl.curation.votes import (
    HIGH, JUDGE_DISAGREES, LOW, NO_JUDGE, SPLIT_VOTE, SplitDecision, confidence_split, count_votes,
    expert_vote, majority, relabel_target,
)


def test_expert_vote_higher_score_wins_and_tie_abstains():
    assert expert_vote(0.3, -1.0) == "A"
    assert expert_vote(-2.0, 1.5) == "B"
    assert expert_vote(0.25, 0.25) is None


def test_count_votes_with_ties_sums_below_m():
    # M = 5: two for A, one for B, two exact ties.
    scores_a = [1.0, 2.0, 0.0, 0.5, -1.0]
    scores_b = [0.0, 1.0, 1.0, 0.5, -1.0]
    assert count_votes(scores_a, scores_b) == (2, 1)


def test_count_votes_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 scores for A but 2"):
        count_votes([1, 2, 3], [1, 2])


# ----------------------------------------------------------------------------------------- the table

@pytest.mark.parametrize("m,tau", [(3, 2), (5, 4)])
def test_every_row_of_the_table(m, tau):
    """Row by row for tau = M-1, with explicit vote counts."""
    # max >= tau and the majority agrees with the judge -> high, judge's verdict.
    assert confidence_split(tau, m - tau, "A", tau) == SplitDecision(HIGH, None, "A")
    assert confidence_split(0, m, "B", tau) == SplitDecision(HIGH, None, "B")
    # max >= tau and the judge disagrees -> low, relabelled to the majority.
    assert confidence_split(m, 0, "B", tau) == SplitDecision(LOW, JUDGE_DISAGREES, "A")
    assert confidence_split(0, tau, "A", tau) == SplitDecision(LOW, JUDGE_DISAGREES, "B")
    # max < tau -> low split vote, judge's verdict kept.
    assert confidence_split(tau - 1, 1, "B", tau) == SplitDecision(LOW, SPLIT_VOTE, "B")
    assert confidence_split(tau - 1, 1, "A", tau) == SplitDecision(LOW, SPLIT_VOTE, "A")
    # No judge: majority if decisive, else no label.
    assert confidence_split(tau, 0, None, tau) == SplitDecision(LOW, NO_JUDGE, "A")
    assert confidence_split(1, m - 1, None, tau) == SplitDecision(LOW, NO_JUDGE, "B")
    assert confidence_split(tau - 1, 1, None, tau) == SplitDecision(LOW, NO_JUDGE, None)


def test_ties_push_a_pair_below_tau():
    # M = 5, tau = 4: A wins 3 experts, two tie -> v = (3, 0) < tau, a split vote even though B got nothing.
    va, vb = count_votes([2.0, 2.0, 2.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0])
    assert (va, vb) == (3, 0)
    assert confidence_split(va, vb, "A", 4) == SplitDecision(LOW, SPLIT_VOTE, "A")
    # M = 3, tau = 2: all three tie -> no votes at all.
    assert count_votes([0.5] * 3, [0.5] * 3) == (0, 0)
    assert confidence_split(0, 0, "B", 2) == SplitDecision(LOW, SPLIT_VOTE, "B")
    assert confidence_split(0, 0, None, 2) == SplitDecision(LOW, NO_JUDGE, None)


def _oracle(va: int, vb: int, judge, tau: int) -> tuple:
    """The issue's table, written independently of the implementation."""
    top = max(va, vb)
    maj = None if top < tau else ("A" if va > vb else "B")
    if judge is None:
        return ("low", "no_judge", maj)
    if top >= tau and maj == judge:
        return ("high", None, judge)
    if top >= tau:
        return ("low", "judge_disagrees", maj)
    return ("low", "split_vote", judge)


@pytest.mark.parametrize("m", [3, 5])
def test_exhaustive_against_the_table(m):
    """Every vote split with abstentions (v_A + v_B <= M), every judge outcome, every valid tau."""
    seen = set()
    for tau in range(m // 2 + 1, m + 1):
        for va, vb in itertools.product(range(m + 1), repeat=2):
            if va + vb > m:
                continue
            for judge in ("A", "B", None):
                got = confidence_split(va, vb, judge, tau)
                assert (got.confidence, got.low_reason, got.label) == _oracle(va, vb, judge, tau), (va, vb, judge, tau)
                seen.add(got.low_reason)
    assert seen == {None, JUDGE_DISAGREES, SPLIT_VOTE, NO_JUDGE}


def test_relabel_target_paper_3_4():
    # Split vote keeps the judge; decisive vote overrides it.
    assert relabel_target(2, 1, "B", 4) == "B"
    assert relabel_target(4, 1, "B", 4) == "A"
    assert relabel_target(0, 5, "A", 4) == "B"


def test_majority_refuses_a_tau_without_a_unique_majority():
    assert majority(2, 1, 2) == "A"
    assert majority(1, 1, 2) is None
    with pytest.raises(ValueError, match="tau must exceed M/2"):
        majority(2, 2, 2)


def test_confidence_split_rejects_unknown_verdict():
    with pytest.raises(ValueError, match="judge_choice"):
        confidence_split(4, 0, "C", 4)
