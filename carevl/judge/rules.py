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

import numpy as np

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
    for k = 2 the ranking is the verdict. The same rule as `group_rewards(..., "copeland")` with
    `rank_from_rewards`.
    """
    if not (len(pairs) == len(p_first) == len(winners)):
        raise ValueError("pairs, p_first and winners must have the same length")
    for i, j in pairs:
        if not (0 <= i < k and 0 <= j < k and i != j):
            raise ValueError(f"bad pair {(i, j)} for k={k}")
    wins, played, prob_sum = _copeland_tally(k, [(i, j, p, w) for (i, j), p, w in zip(pairs, p_first, winners)])
    scores = [prob_sum[c] / played[c] if played[c] else 0.5 for c in range(k)]
    # The Copeland reward of group_rewards (share of games won), mean win probability breaking ties.
    order = rank_from_rewards([wins[c] / played[c] if played[c] else None for c in range(k)], scores)
    return Ranking(ranking=order, best_index=order[0], wins=wins, scores=scores)


# ----- pairwise verdicts to one scalar reward per candidate ------------------------------------------
#
# A group is k candidate answers to one (image, question), optionally with a reference answer. Index k
# stands for the reference. `reward_comparisons` lists the ordered (first, second) pairs to judge;
# the judge's p_first for each (calibrated: carevl.judge.calibration) goes back into `group_rewards`.
#
# Cost and choice (forward passes of the judge per group of k):
#   reference      2k       each candidate against the reference, both orders. The reward is an
#                           absolute P(candidate beats the reference): comparable across groups and
#                           prompts, so fit for offline filtering, best-of-N thresholds and PPO-style
#                           rewards. Needs a reference answer for every prompt.
#   bradley_terry  k(k-1)   every ordered pair within the group; strengths fitted to the round robin.
#   copeland       k(k-1)   the same comparisons; share of games won (the /v1/rank rule).
# Within-group rewards are relative (they say which candidates of this group are better, not how good
# the group is), which is what GRPO uses anyway: its advantages are normalised within each group.
# At k = 8 the within-group methods cost 56 passes against 16 for the reference method.

RewardMethod = Literal["reference", "bradley_terry", "copeland"]
REWARD_METHODS: tuple[str, ...] = ("reference", "bradley_terry", "copeland")
BT_PRIOR = 0.01  # Gaussian prior precision on Bradley-Terry log-strengths (keeps a clean sweep finite)


def reward_comparisons(k: int, method: RewardMethod) -> list[tuple[int, int]]:
    """The ordered (first, second) comparisons to judge for a group of k candidates.

    Index k stands for the reference answer. "reference": (i, k) then (k, i) for each candidate i,
    2k comparisons. "bradley_terry" / "copeland": (i, j) then (j, i) for each i < j of
    `round_robin_pairs(k)`, k(k-1) comparisons (every pair in both orders, so position bias cancels).
    """
    if method == "reference":
        if k < 1:
            raise ValueError(f"the reference method needs at least 1 candidate, got {k}")
        return [c for i in range(k) for c in ((i, k), (k, i))]
    if method in ("bradley_terry", "copeland"):
        if k < 2:
            raise ValueError(f"the {method} method needs at least 2 candidates, got {k}")
        return [c for i, j in round_robin_pairs(k) for c in ((i, j), (j, i))]
    raise ValueError(f"unknown reward method {method!r}; choose one of {list(REWARD_METHODS)}")


def _check_comparisons(k: int, players: int, comparisons: Sequence[tuple[int, int]],
                       p_first: Sequence[float | None]) -> None:
    if len(comparisons) != len(p_first):
        raise ValueError(f"{len(comparisons)} comparisons but {len(p_first)} probabilities")
    for (i, j), p in zip(comparisons, p_first):
        if not (0 <= i < players and 0 <= j < players and i != j):
            raise ValueError(f"bad comparison {(i, j)} for k={k}")
        if p is not None and not (0.0 <= p <= 1.0 and math.isfinite(p)):
            raise ValueError(f"probability {p} of comparison {(i, j)} is not in [0, 1]")


def pair_probabilities(comparisons: Sequence[tuple[int, int]],
                       p_first: Sequence[float | None]) -> dict[tuple[int, int], list[float]]:
    """P(i beats j) for each unordered pair (i, j), i < j, one entry per successful judgement.

    A comparison (i, j) with p contributes p; (j, i) contributes 1 - p. Failed judgements (None) are left
    out, so a pair judged in one order only is decided by that order.
    """
    views: dict[tuple[int, int], list[float]] = {}
    for (i, j), p in zip(comparisons, p_first):
        if p is None:
            continue
        key, value = ((i, j), p) if i < j else ((j, i), 1.0 - p)
        views.setdefault(key, []).append(float(value))
    return views


def _pair_games(comparisons: Sequence[tuple[int, int]], p_first: Sequence[float | None],
                tie_on_disagreement: bool) -> list[tuple[int, int, float, Winner]]:
    """One game per unordered pair: (i, j, debiased P(i beats j), winner from i's side as "A")."""
    games = []
    for (i, j), views in pair_probabilities(comparisons, p_first).items():
        if len(views) == 2:  # both orders: the swap check of /v1/judge (views[1] is already flipped)
            out = combine_swap(views[0], 1.0 - views[1], tie_on_disagreement)
            games.append((i, j, out.p_a, out.winner))
        else:
            p = sum(views) / len(views)
            games.append((i, j, p, winner_from_probability(p)))
    return games


def _copeland_tally(k: int, games: Sequence[tuple[int, int, float, Winner]]
                    ) -> tuple[list[float], list[int], list[float]]:
    """(wins, games played, summed win probability) per candidate: 1 per win, 0.5 per tie."""
    wins, played, prob_sum = [0.0] * k, [0] * k, [0.0] * k
    for i, j, p, w in games:
        wins[i] += 1.0 if w == "A" else 0.5 if w == "tie" else 0.0
        wins[j] += 1.0 if w == "B" else 0.5 if w == "tie" else 0.0
        prob_sum[i] += p
        prob_sum[j] += 1.0 - p
        played[i] += 1
        played[j] += 1
    return wins, played, prob_sum


def mean_win_probability(k: int, comparisons: Sequence[tuple[int, int]], p_first: Sequence[float | None],
                         tie_on_disagreement: bool = True) -> list[float | None]:
    """Each candidate's mean debiased probability of beating the others it was compared with (the
    score /v1/rank reports and its tie-break between equal Copeland rewards); None when unjudged."""
    _check_comparisons(k, k, comparisons, p_first)
    _, played, prob_sum = _copeland_tally(k, _pair_games(comparisons, p_first, tie_on_disagreement))
    return [prob_sum[c] / played[c] if played[c] else None for c in range(k)]


def group_rewards(k: int, method: RewardMethod, comparisons: Sequence[tuple[int, int]],
                  p_first: Sequence[float | None], *, tie_on_disagreement: bool = True,
                  prior: float = BT_PRIOR) -> list[float | None]:
    """One reward per candidate (list of k, candidate order) from judged comparisons.

    `comparisons[n] = (first, second)` (index k = the reference) and `p_first[n]` = P(first beats
    second), already calibrated; None marks a failed judgement and is left out. A candidate none of
    whose judgements succeeded gets None, never a made-up 0. Meaning of the reward, all in [0, 1]:

    - "reference": P(candidate beats the reference), the two orders averaged (one order when the other
      failed). 0.5 = as good as the reference. Absolute: comparable across groups.
    - "bradley_terry": sigmoid(theta_i), theta the log-strengths of a Bradley-Terry model
      (P(i beats j) = sigmoid(theta_i - theta_j)) fitted by maximum likelihood with soft win counts and
      a Gaussian prior of precision `prior`; the thetas sum to 0, so the reward is the probability of
      beating a candidate of the group's average strength. Relative to the group.
    - "copeland": share of its pairwise games won (ties 1/2; a game is a pair judged in both orders,
      combined as the swap check does with `tie_on_disagreement`); the rule /v1/rank ranks by
      (`rank_from_rewards` with `mean_win_probability` as tie-break). Relative to the group.
    """
    reference = method == "reference"
    if method not in REWARD_METHODS:
        raise ValueError(f"unknown reward method {method!r}; choose one of {list(REWARD_METHODS)}")
    if k < (1 if reference else 2):
        raise ValueError(f"the {method} method needs at least {1 if reference else 2} candidates, got {k}")
    _check_comparisons(k, k + 1 if reference else k, comparisons, p_first)
    if reference:
        views: list[list[float]] = [[] for _ in range(k)]
        for (i, j), p in zip(comparisons, p_first):
            if p is None:
                continue
            if j == k:
                views[i].append(float(p))
            elif i == k:
                views[j].append(1.0 - float(p))
            else:
                raise ValueError(f"comparison {(i, j)} does not involve the reference (index {k})")
        return [sum(v) / len(v) if v else None for v in views]
    if method == "copeland":
        wins, played, _ = _copeland_tally(k, _pair_games(comparisons, p_first, tie_on_disagreement))
        return [wins[c] / played[c] if played[c] else None for c in range(k)]
    theta, judged = bradley_terry_strengths(k, comparisons, p_first, prior)
    return [1.0 / (1.0 + math.exp(-t)) if ok else None for t, ok in zip(theta, judged)]


def bradley_terry_strengths(k: int, comparisons: Sequence[tuple[int, int]], p_first: Sequence[float | None],
                            prior: float = BT_PRIOR, tol: float = 1e-10,
                            max_steps: int = 100) -> tuple[list[float], list[bool]]:
    """Bradley-Terry log-strengths theta (length k) and whether each candidate was judged at all.

    Maximises sum_n [p_n log s(theta_f - theta_s) + (1 - p_n) log s(theta_s - theta_f)]
    - prior/2 * |theta|^2 (s = sigmoid; soft win counts, so a probability of 0.7 counts as 0.7 of a
    win) by Newton steps with step halving. The objective is strictly concave for prior > 0, so the
    optimum is unique; its gradient summed over candidates is -prior * sum(theta), so sum(theta) = 0.
    Unjudged candidates stay at theta = 0 (and are flagged False).
    """
    if prior <= 0:
        raise ValueError("the Bradley-Terry prior must be > 0 (it keeps a clean sweep finite)")
    _check_comparisons(k, k, comparisons, p_first)
    wins = np.zeros((k, k))   # (k, k): soft wins of i over j
    for (i, j), p in zip(comparisons, p_first):
        if p is not None:
            wins[i, j] += p
            wins[j, i] += 1.0 - p
    games = wins + wins.T     # (k, k): comparisons between i and j
    judged = games.sum(axis=1) > 0

    def objective(theta: np.ndarray) -> float:
        diff = theta[:, None] - theta[None, :]
        return float(-(wins * np.logaddexp(0.0, -diff)).sum() - 0.5 * prior * theta @ theta)

    theta = np.zeros(k)
    value = objective(theta)
    for _ in range(max_steps):
        expected = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))  # (k, k): s(theta_i - theta_j)
        grad = (wins - games * expected).sum(axis=1) - prior * theta
        weight = games * expected * expected.T                               # (k, k): n_ij s (1 - s)
        hessian = weight - np.diag(weight.sum(axis=1)) - prior * np.eye(k)   # negative definite
        step = np.linalg.solve(hessian, -grad)
        if np.abs(grad).max() < tol:
            break
        scale, new_value = 1.0, -math.inf
        while scale > 1e-6:  # halve the step until the objective does not drop (concave: soon)
            candidate = theta + scale * step
            new_value = objective(candidate)
            if new_value >= value - 1e-12:
                break
            scale *= 0.5
        if new_value < value - 1e-12:
            break
        theta, value = candidate, new_value
    return [float(t) for t in theta], [bool(j) for j in judged]


def rank_from_rewards(rewards: Sequence[float | None],
                      tiebreak: Sequence[float | None] | None = None) -> list[int]:
    """Candidate indices best first: by reward, then by `tiebreak` (higher first), then by index;
    candidates without a reward (None) come last. The one ordering rule of /v1/rank and the rewards."""
    def key(c: int) -> tuple:
        r = rewards[c]
        t = tiebreak[c] if tiebreak is not None else None
        return (r is None, -(r or 0.0), t is None, -(t or 0.0), c)
    if tiebreak is not None and len(tiebreak) != len(rewards):
        raise ValueError("rewards and tiebreak must have the same length")
    return sorted(range(len(rewards)), key=key)
