"""Pure judge rules: verdict probabilities, swap check and ties, round-robin ranking (no model)."""
from __future__ import annotations

import math

import pytest

from carevl.judge.rules import (
    combine_swap,
    p_a_from_samples,
    rank_from_pairwise,
    round_robin_pairs,
    verdict_probability,
    winner_from_probability,
)


def test_verdict_probability_renormalises_over_the_two_tokens():
    # Token probs 0.3 (A) and 0.1 (B), the rest of the mass elsewhere: p_a = 0.3 / 0.4.
    assert verdict_probability(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert verdict_probability(-1000.0, -1000.0) == pytest.approx(0.5)
    assert verdict_probability(0.0, -float("inf")) == pytest.approx(1.0)
    assert verdict_probability(-float("inf"), -float("inf")) == 0.5


def test_winner_from_probability_ties_only_at_one_half():
    assert winner_from_probability(0.51) == "A"
    assert winner_from_probability(0.49) == "B"
    assert winner_from_probability(0.5) == "tie"


def test_p_a_from_samples_ignores_unparseable_samples():
    assert p_a_from_samples(["A", "B", "A", None]) == pytest.approx(2 / 3)
    assert p_a_from_samples([None, None]) is None
    assert p_a_from_samples(["B"]) == 0.0


def test_combine_swap_consistent_orders_keep_the_winner():
    # Forward says A (0.8); swapped order shows B first and says its first answer loses (0.3) -> A again.
    out = combine_swap(0.8, 0.3)
    assert out.winner == "A" and out.swap_consistent
    assert out.p_a == pytest.approx(0.75)


def test_combine_swap_disagreement_is_a_tie_when_configured():
    # Position bias: the judge prefers whichever answer is shown first.
    out = combine_swap(0.9, 0.7, tie_on_disagreement=True)
    assert out.winner == "tie" and not out.swap_consistent
    assert out.p_a == pytest.approx(0.6)


def test_combine_swap_disagreement_uses_debiased_probability_when_ties_are_off():
    assert combine_swap(0.9, 0.7, tie_on_disagreement=False).winner == "A"   # p_a 0.6
    assert combine_swap(0.6, 0.8, tie_on_disagreement=False).winner == "B"   # p_a 0.4
    assert combine_swap(0.7, 0.7, tie_on_disagreement=False).winner == "tie"  # p_a 0.5


def test_round_robin_pairs_cover_each_unordered_pair_once():
    pairs = round_robin_pairs(4)
    assert len(pairs) == 6 and len(set(pairs)) == 6
    assert all(i < j for i, j in pairs)
    with pytest.raises(ValueError):
        round_robin_pairs(1)


def test_rank_follows_a_transitive_order():
    # Hidden quality 2 > 0 > 3 > 1: every pairwise verdict agrees with it.
    quality = [0.6, 0.1, 0.9, 0.3]
    pairs = round_robin_pairs(4)
    p = [0.5 + (quality[i] - quality[j]) / 2 for i, j in pairs]
    winners = [winner_from_probability(x) for x in p]
    result = rank_from_pairwise(4, pairs, p, winners)
    assert result.ranking == [2, 0, 3, 1]
    assert result.best_index == 2
    assert result.wins == [2.0, 0.0, 3.0, 1.0]
    assert result.scores[2] > result.scores[0] > result.scores[3] > result.scores[1]


def test_rank_puts_the_candidate_that_beats_all_others_first_even_with_a_cycle():
    # 0 beats everyone; 1 > 2 > 3 > 1 is a cycle among the rest.
    pairs = round_robin_pairs(4)
    verdict = {(0, 1): "A", (0, 2): "A", (0, 3): "A", (1, 2): "A", (1, 3): "B", (2, 3): "A"}
    winners = [verdict[pq] for pq in pairs]
    p = [0.8 if w == "A" else 0.2 for w in winners]
    result = rank_from_pairwise(4, pairs, p, winners)
    assert result.best_index == 0
    assert sorted(result.ranking) == [0, 1, 2, 3]


def test_rank_of_two_is_the_verdict_and_ties_split_wins():
    assert rank_from_pairwise(2, [(0, 1)], [0.3], ["B"]).ranking == [1, 0]
    tied = rank_from_pairwise(2, [(0, 1)], [0.55], ["tie"])
    assert tied.wins == [0.5, 0.5] and tied.ranking == [0, 1]  # equal wins: probability decides


def test_rank_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        rank_from_pairwise(2, [(0, 1)], [0.3, 0.4], ["A"])
    with pytest.raises(ValueError):
        rank_from_pairwise(2, [(0, 2)], [0.3], ["A"])


def test_combine_swap_parsed_handles_missing_verdicts():
    from carevl.judge.rules import combine_swap_parsed

    assert combine_swap_parsed(None, None) is None
    both = combine_swap_parsed(1.0, 0.0)
    assert both.winner == "A" and both.swap_consistent
    only_swapped = combine_swap_parsed(None, 0.0, tie_on_disagreement=False)
    assert only_swapped.winner == "A" and only_swapped.p_a == 1.0 and not only_swapped.swap_consistent
    assert combine_swap_parsed(1.0, None, tie_on_disagreement=True).winner == "tie"
