"""Pure decision rules of the judge at inference time (paper 3.7): verdict probabilities, the
swap-order check, ties, and turning pairwise verdicts into a best-of-N ranking.

Everything here works on plain floats, strings and lists so it can be tested without a model.
Conventions: `p_a` is the probability that the answer shown first ("A") is the better one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Literal, Sequence

from carevl.judge_format import Choice, swap_choice

Winner = Literal["A", "B", "tie"]


def verdict_probability(logp_a: float, logp_b: float) -> float:
    """p_a from the log-probabilities of the two verdict tokens, renormalised over just those two
    (paper 3.7, verdict read at the position after `Verdict:`). Mass on any other token is ignored."""
    if not (math.isfinite(logp_a) or math.isfinite(logp_b)):
        return 0.5
    top = max(logp_a, logp_b)
    ea, eb = math.exp(logp_a - top), math.exp(logp_b - top)
    return ea / (ea + eb)


def winner_from_probability(p_a: float) -> Winner:
    """"A" when p_a > 0.5, "B" when p_a < 0.5, "tie" at exactly 0.5."""
    if p_a > 0.5:
        return "A"
    if p_a < 0.5:
        return "B"
    return "tie"


def p_a_from_samples(verdicts: Sequence[Choice | None]) -> float | None:
    """Share of parseable sampled verdicts that pick A; None when no sample has a readable verdict.

    Used in explain mode, where the verdict is read from generated text (one or more samples).
    """
    valid = [v for v in verdicts if v in ("A", "B")]
    if not valid:
        return None
    return sum(v == "A" for v in valid) / len(valid)


@dataclass(frozen=True)
class SwapOutcome:
    """The verdict for (A, B) after judging both orders."""

    winner: Winner
    p_a: float                # order-debiased probability that the original A is better
    swap_consistent: bool     # both orders named the same answer


def combine_swap(p_a_forward: float, p_a_swapped: float, tie_on_disagreement: bool = True) -> SwapOutcome:
    """Combine the judgement of (A, B) with the judgement of the swapped pair (B, A).

    `p_a_swapped` is the probability that the answer shown first in the swapped order (the original B)
    is better. The debiased p_a averages the two views. When the two orders name different answers
    (position bias), the result is a tie if `tie_on_disagreement`, else the debiased p_a decides.
    """
    p_a = 0.5 * (p_a_forward + (1.0 - p_a_swapped))
    forward = winner_from_probability(p_a_forward)
    swapped_back = _swap_winner(winner_from_probability(p_a_swapped))
    if forward == swapped_back:
        return SwapOutcome(forward, p_a, True)  # includes both orders being exact ties
    if tie_on_disagreement:
        return SwapOutcome("tie", p_a, False)
    return SwapOutcome(winner_from_probability(p_a), p_a, False)


def combine_swap_parsed(p_a_forward: float | None, p_a_swapped: float | None,
                        tie_on_disagreement: bool = True) -> SwapOutcome | None:
    """`combine_swap` for explain mode, where an order may have produced no readable verdict (None).

    A missing order cannot confirm the other, so the result counts as inconsistent; None when
    neither order has a verdict.
    """
    if p_a_forward is None and p_a_swapped is None:
        return None
    if p_a_forward is not None and p_a_swapped is not None:
        return combine_swap(p_a_forward, p_a_swapped, tie_on_disagreement)
    p_a = p_a_forward if p_a_forward is not None else 1.0 - p_a_swapped  # type: ignore[operator]
    return SwapOutcome("tie" if tie_on_disagreement else winner_from_probability(p_a), p_a, False)


def _swap_winner(winner: Winner) -> Winner:
    return "tie" if winner == "tie" else swap_choice(winner)  # type: ignore[return-value]


def round_robin_pairs(k: int) -> list[tuple[int, int]]:
    """All unordered candidate pairs (i, j), i < j, judged with i shown as A: k*(k-1)/2 pairs."""
    if k < 2:
        raise ValueError(f"ranking needs at least 2 candidates, got {k}")
    return list(combinations(range(k), 2))


@dataclass(frozen=True)
class Ranking:
    """Best-of-N result (IXC-2.5-Reward 4.2 best-of-N selection, 4.3 low scores flag bad data)."""

    ranking: list[int]          # candidate indices, best first
    best_index: int
    wins: list[float]           # Copeland score: 1 per pairwise win, 0.5 per tie
    scores: list[float]         # mean probability of beating each other candidate, in [0, 1]


def rank_from_pairwise(k: int, pairs: Sequence[tuple[int, int]], p_first: Sequence[float],
                       winners: Sequence[Winner]) -> Ranking:
    """Rank k candidates from pairwise results.

    pairs[n] = (i, j) was judged with i as A; `p_first[n]` is the probability that i is better and
    `winners[n]` the pairwise verdict ("A" = i, "B" = j, "tie"). Candidates are ordered by pairwise
    wins (Copeland), then by mean win probability, then by index, so the order never contradicts
    the verdicts it was built from: a candidate that beats every other one is ranked first, and
    for k = 2 the ranking is the verdict.
    """
    if not (len(pairs) == len(p_first) == len(winners)):
        raise ValueError("pairs, p_first and winners must have the same length")
    wins = [0.0] * k
    prob_sum = [0.0] * k
    games = [0] * k
    for (i, j), p, w in zip(pairs, p_first, winners):
        if not (0 <= i < k and 0 <= j < k and i != j):
            raise ValueError(f"bad pair {(i, j)} for k={k}")
        wins[i] += 1.0 if w == "A" else 0.5 if w == "tie" else 0.0
        wins[j] += 1.0 if w == "B" else 0.5 if w == "tie" else 0.0
        prob_sum[i] += p
        prob_sum[j] += 1.0 - p
        games[i] += 1
        games[j] += 1
    scores = [prob_sum[c] / games[c] if games[c] else 0.5 for c in range(k)]
    order = sorted(range(k), key=lambda c: (-wins[c], -scores[c], c))
    return Ranking(ranking=order, best_index=order[0], wins=wins, scores=scores)
