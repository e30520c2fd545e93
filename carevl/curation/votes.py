"""The paper's voting rules as small pure functions over plain values (paper 3.2 and 3.4).

M experts each score the two responses of a pair; an expert votes for the response it scores higher
and abstains on an exact tie, so `votes_a + votes_b <= M`. With a threshold `tau > M/2` (paper: M-1)
at most one side can reach it, which makes "the majority" well defined whenever it exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np


Choice = Literal["A", "B"]
Confidence = Literal["high", "low"]
LowReason = Literal["judge_disagrees", "split_vote", "no_judge"]

HIGH: Confidence = "high"
LOW: Confidence = "low"
JUDGE_DISAGREES: LowReason = "judge_disagrees"
SPLIT_VOTE: LowReason = "split_vote"
NO_JUDGE: LowReason = "no_judge"
LOW_REASONS: tuple[LowReason, ...] = (JUDGE_DISAGREES, SPLIT_VOTE, NO_JUDGE)


@dataclass(frozen=True)
class SplitDecision:
    """Where one pair lands: `confidence`, why it is low (None when high) and its training `label`."""

    confidence: Confidence
    low_reason: LowReason | None
    label: Choice | None


def expert_vote(score_a: float, score_b: float) -> Choice | None:
    """One expert's vote on a pair from its two scores: the higher score wins, a tie abstains (paper 3.2)."""
    if score_a > score_b:
        return "A"
    if score_b > score_a:
        return "B"
    return None


def count_votes(scores_a: Sequence[float], scores_b: Sequence[float]) -> tuple[int, int]:
    """(v_A, v_B) from the M experts' scores of each side, listed in the same expert order (paper 3.2).

    Ties abstain, so v_A + v_B <= M.
    """
    if len(scores_a) != len(scores_b):
        raise ValueError(f"got {len(scores_a)} scores for A but {len(scores_b)} for B")
    votes = [expert_vote(a, b) for a, b in zip(scores_a, scores_b)]
    return votes.count("A"), votes.count("B")


def count_votes_matrix(scores_a: np.ndarray, scores_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `count_votes` for a whole run (the label audit): scores of shape (pairs, M) ->
    (v_A, v_B), each of shape (pairs,). Ties abstain, as in `expert_vote` (paper 3.2)."""
    scores_a, scores_b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if scores_a.shape != scores_b.shape or scores_a.ndim != 2:
        raise ValueError(f"need two (pairs, M) arrays of one shape, got {scores_a.shape} and {scores_b.shape}")
    return (scores_a > scores_b).sum(axis=1), (scores_b > scores_a).sum(axis=1)


def majority(votes_a: int, votes_b: int, tau: int) -> Choice | None:
    """The side holding at least `tau` votes, or None when neither does (a split vote; paper 3.2)."""
    if votes_a >= tau and votes_b >= tau:
        raise ValueError(f"both sides reach tau={tau} ({votes_a}, {votes_b}): tau must exceed M/2")
    if votes_a >= tau:
        return "A"
    if votes_b >= tau:
        return "B"
    return None


def relabel_target(votes_a: int, votes_b: int, judge_choice: Choice | None, tau: int) -> Choice | None:
    """The label a low-confidence pair is trained towards (paper 3.4).

    A split vote (max(v_A, v_B) < tau) keeps the strong judge's verdict; a decisive vote that the judge
    contradicts is relabelled to the majority. Without a usable verdict only a decisive vote can label.
    """
    decided = majority(votes_a, votes_b, tau)
    return decided if decided is not None else judge_choice


def confidence_split(votes_a: int, votes_b: int, judge_choice: Choice | None, tau: int) -> SplitDecision:
    """Classify one pair as high or low confidence and give its label (paper 3.2, relabel per 3.4).

    | votes                          | judge        | confidence | low_reason      | label           |
    | max >= tau, majority == judge  | verdict      | high       |                 | judge's verdict |
    | max >= tau, majority != judge  | verdict      | low        | judge_disagrees | majority        |
    | max < tau                      | verdict      | low        | split_vote      | judge's verdict |
    | any                            | none         | low        | no_judge        | majority or None|
    """
    if judge_choice not in (None, "A", "B"):
        raise ValueError(f"judge_choice must be 'A', 'B' or None, got {judge_choice!r}")
    decided = majority(votes_a, votes_b, tau)
    if judge_choice is None:
        return SplitDecision(LOW, NO_JUDGE, decided)
    if decided is None:
        return SplitDecision(LOW, SPLIT_VOTE, relabel_target(votes_a, votes_b, judge_choice, tau))
    if decided == judge_choice:
        return SplitDecision(HIGH, None, judge_choice)
    return SplitDecision(LOW, JUDGE_DISAGREES, relabel_target(votes_a, votes_b, judge_choice, tau))
