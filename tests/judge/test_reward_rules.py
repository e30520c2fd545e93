"""Pure reward rules: comparisons per method, reference / Bradley-Terry / Copeland rewards, ranking."""
from __future__ import annotations

import math
import random

import pytest

from carevl.judge.rules import (
    bradley_terry_strengths,
    combine_swap,
    group_rewards,
    mean_win_probability,
    rank_from_pairwise,
    rank_from_rewards,
    reward_comparisons,
    round_robin_pairs,
)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_comparisons_cost_2k_against_a_reference_and_k_k_minus_1_within_the_group():
    assert reward_comparisons(2, "reference") == [(0, 2), (2, 0), (1, 2), (2, 1)]
    within = reward_comparisons(3, "bradley_terry")
    assert within == [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)]
    assert reward_comparisons(3, "copeland") == within
    for k in (2, 5, 8):
        assert len(reward_comparisons(k, "reference")) == 2 * k
        ordered = reward_comparisons(k, "bradley_terry")
        assert len(ordered) == len(set(ordered)) == k * (k - 1)
    assert reward_comparisons(1, "reference") == [(0, 1), (1, 0)]
    with pytest.raises(ValueError):
        reward_comparisons(1, "copeland")
    with pytest.raises(ValueError):
        reward_comparisons(0, "reference")
    with pytest.raises(ValueError):
        reward_comparisons(3, "elo")  # type: ignore[arg-type]


def test_reference_reward_averages_both_orders():
    comparisons = reward_comparisons(2, "reference")
    # cand 0: 0.8 shown first, reference first says 0.3 -> (0.8 + 0.7) / 2; cand 1: (0.4 + 0.3) / 2.
    rewards = group_rewards(2, "reference", comparisons, [0.8, 0.3, 0.4, 0.7])
    assert rewards == pytest.approx([0.75, 0.35])


def test_reference_reward_uses_the_order_that_succeeded_and_none_when_both_failed():
    comparisons = reward_comparisons(2, "reference")
    assert group_rewards(2, "reference", comparisons, [None, 0.2, None, None]) == [pytest.approx(0.8), None]


def test_failed_comparisons_give_none_never_zero():
    for method in ("reference", "bradley_terry", "copeland"):
        comparisons = reward_comparisons(3, method)
        assert group_rewards(3, method, comparisons, [None] * len(comparisons)) == [None, None, None]


def test_a_candidate_whose_judgements_all_failed_gets_none_the_rest_a_reward():
    comparisons = reward_comparisons(3, "bradley_terry")
    p = [None if 2 in c else (0.7 if c == (0, 1) else 0.3) for c in comparisons]
    for method in ("bradley_terry", "copeland"):
        rewards = group_rewards(3, method, comparisons, p)
        assert rewards[2] is None and rewards[0] is not None and rewards[1] is not None
        assert rewards[0] > rewards[1]


def test_bradley_terry_recovers_known_strengths_from_noiseless_probabilities():
    theta = [1.2, 0.3, -0.5, -1.0]
    shift = sum(theta) / len(theta)
    comparisons = reward_comparisons(4, "bradley_terry")
    p = [_sigmoid(theta[i] - theta[j]) for i, j in comparisons]
    fitted, judged = bradley_terry_strengths(4, comparisons, p, prior=1e-9)
    assert all(judged)
    assert fitted == pytest.approx([t - shift for t in theta], abs=1e-5)  # identified up to a shift: sum 0
    # The default prior only pulls the strengths a little towards 0.
    default, _ = bradley_terry_strengths(4, comparisons, p)
    assert default == pytest.approx([t - shift for t in theta], abs=0.02)
    rewards = group_rewards(4, "bradley_terry", comparisons, p)
    assert rewards == pytest.approx([_sigmoid(t) for t in default])


def test_bradley_terry_two_candidates_by_hand():
    # 0 beats 1 with probability 0.75 in both orders: sigmoid(theta0 - theta1) = 0.75, theta0 = -theta1,
    # so theta0 = ln(3) / 2 and the reward sigmoid(theta0) = sqrt(3) / (1 + sqrt(3)).
    rewards = group_rewards(2, "bradley_terry", [(0, 1), (1, 0)], [0.75, 0.25], prior=1e-9)
    assert rewards[0] == pytest.approx(math.sqrt(3) / (1 + math.sqrt(3)), abs=1e-6)
    assert rewards[1] == pytest.approx(1 / (1 + math.sqrt(3)), abs=1e-6)


def test_bradley_terry_keeps_a_clean_sweep_finite_and_ordered():
    comparisons = reward_comparisons(3, "bradley_terry")
    order = {0: 2, 1: 0, 2: 1}  # quality rank of each candidate: 1 best, then 2, then 0
    p = [1.0 if order[i] < order[j] else 0.0 for i, j in comparisons]
    theta, _ = bradley_terry_strengths(3, comparisons, p)
    assert all(math.isfinite(t) for t in theta)
    rewards = group_rewards(3, "bradley_terry", comparisons, p)
    assert rewards[1] > rewards[2] > rewards[0]
    assert 0.0 < rewards[0] and rewards[1] < 1.0


def test_bradley_terry_rejects_a_non_positive_prior():
    with pytest.raises(ValueError):
        bradley_terry_strengths(2, [(0, 1)], [0.6], prior=0.0)


def test_copeland_by_hand_with_a_position_biased_pair():
    comparisons = reward_comparisons(3, "copeland")
    # 0 vs 1: the judge prefers whichever is shown first (0.9, 0.7): a tie, debiased P(0 beats 1) = 0.6.
    # 0 vs 2: 0 wins both orders. 1 vs 2: 1 wins both orders.
    p = {(0, 1): 0.9, (1, 0): 0.7, (0, 2): 0.8, (2, 0): 0.2, (1, 2): 0.6, (2, 1): 0.3}
    rewards = group_rewards(3, "copeland", comparisons, [p[c] for c in comparisons])
    assert rewards == pytest.approx([0.75, 0.75, 0.0])  # 1.5 of 2 games, 1.5 of 2, 0 of 2
    tiebreak = mean_win_probability(3, comparisons, [p[c] for c in comparisons])
    assert tiebreak == pytest.approx([(0.6 + 0.8) / 2, (0.4 + 0.65) / 2, (0.2 + 0.35) / 2])
    assert rank_from_rewards(rewards, tiebreak) == [0, 1, 2]
    strict = group_rewards(3, "copeland", comparisons, [p[c] for c in comparisons], tie_on_disagreement=False)
    assert strict == pytest.approx([1.0, 0.5, 0.0])


@pytest.mark.parametrize("seed", range(5))
def test_copeland_rewards_rank_exactly_like_rank_from_pairwise(seed):
    rng = random.Random(seed)
    k = 5
    comparisons = reward_comparisons(k, "copeland")
    p = {c: round(rng.random(), 2) for c in comparisons}
    # /v1/rank with swap_check: one game per unordered pair, both orders combined by combine_swap.
    pairs = round_robin_pairs(k)
    games = [combine_swap(p[(i, j)], p[(j, i)], True) for i, j in pairs]
    ranked = rank_from_pairwise(k, pairs, [g.p_a for g in games], [g.winner for g in games])
    flat = [p[c] for c in comparisons]
    rewards = group_rewards(k, "copeland", comparisons, flat)
    assert rewards == pytest.approx([w / (k - 1) for w in ranked.wins])
    assert rank_from_rewards(rewards, mean_win_probability(k, comparisons, flat)) == ranked.ranking


def test_rank_from_rewards_orders_by_reward_then_tiebreak_and_puts_none_last():
    assert rank_from_rewards([0.2, None, 0.9, 0.2]) == [2, 0, 3, 1]
    assert rank_from_rewards([0.2, None, 0.9, 0.2], [0.1, 0.9, 0.0, 0.5]) == [2, 3, 0, 1]
    with pytest.raises(ValueError):
        rank_from_rewards([0.1, 0.2], [0.3])


def test_group_rewards_rejects_bad_input():
    with pytest.raises(ValueError):
        group_rewards(2, "reference", [(0, 2)], [0.5, 0.5])          # length mismatch
    with pytest.raises(ValueError):
        group_rewards(2, "reference", [(0, 1)], [0.5])               # no reference in the comparison
    with pytest.raises(ValueError):
        group_rewards(2, "copeland", [(0, 2)], [0.5])                # index out of range
    with pytest.raises(ValueError):
        group_rewards(2, "bradley_terry", [(0, 1)], [1.5])           # not a probability
    with pytest.raises(ValueError):
        group_rewards(2, "mean", [(0, 1)], [0.5])  # type: ignore[arg-type]
