"""Choosing chosen/rejected critiques for DPO from m scored samples (paper 3.5 and 4.5.2).

Every strategy here is a pure function over two parallel sequences of length m:

- `correct[j]`: True when critique j's verdict equals the pair's relabelled target (paper 3.4);
  an unparseable verdict counts as incorrect.
- `scores[j]`: the rubric score of critique j in [0, 100], or None when the scorer's reply could not
  be parsed.

and returns a `Selection`: the index of the chosen critique, the indices of the rejected ones, and a
`skip_reason` when the pair yields no DPO row. All strategies share the same chosen critique (the
highest-scoring correct one, paper 4.5.2); they differ only in the rejected set.

Ties are broken by the lower index, so the result never depends on dict or set ordering.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

# Skip reasons, recorded per pair in the refinement summary.
NO_CORRECT = "no_correct"            # no critique agrees with the label
NO_SCORED_CORRECT = "no_scored_correct"  # correct critiques exist, but none has a parseable score
NO_REJECTED = "no_rejected"          # the strategy finds nothing to reject


@dataclass(frozen=True)
class Selection:
    """The outcome of negative sampling for one pair: one DPO row per index in `rejected`."""

    chosen: int | None
    rejected: tuple[int, ...] = field(default_factory=tuple)
    skip_reason: str | None = None

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(chosen, rejected) index pairs, one per DPO row."""
        return [] if self.chosen is None else [(self.chosen, r) for r in self.rejected]


def _check(correct: Sequence[bool], scores: Sequence[float | None]) -> None:
    if len(correct) != len(scores):
        raise ValueError(f"correct and scores differ in length: {len(correct)} != {len(scores)}")


def select_chosen(correct: Sequence[bool], scores: Sequence[float | None]) -> int | None:
    """r+ = the highest-scoring correct critique (paper 3.5); only scored critiques qualify.

    Returns None when no correct critique has a score. On equal scores the lower index wins.
    """
    _check(correct, scores)
    best: int | None = None
    for j, (ok, score) in enumerate(zip(correct, scores)):
        if ok and score is not None and (best is None or score > scores[best]):  # type: ignore[operator]
            best = j
    return best


def _select(correct: Sequence[bool], scores: Sequence[float | None],
            rejected_of: Callable[[int], list[int]]) -> Selection:
    """Shared frame: find r+, explain a skip, or return r+ with the strategy's rejected set."""
    _check(correct, scores)
    if not any(correct):
        return Selection(None, (), NO_CORRECT)
    chosen = select_chosen(correct, scores)
    if chosen is None:
        return Selection(None, (), NO_SCORED_CORRECT)
    rejected = rejected_of(chosen)
    if not rejected:
        return Selection(chosen, (), NO_REJECTED)
    return Selection(chosen, tuple(rejected))


def _incorrect(correct: Sequence[bool]) -> list[int]:
    return [j for j, ok in enumerate(correct) if not ok]


def best_to_worse(correct: Sequence[bool], scores: Sequence[float | None]) -> Selection:
    """Best-to-Worse (paper 3.5, Strategy 4 of 4.5.2): reject every incorrect critique and every
    correct critique scored strictly below r+.

    A correct critique scored equal to r+ is not rejected (the paper rejects correct samples "with
    scores lower than r+"; preferring one of two equally scored samples would be noise), and neither
    is a correct critique without a score, since nothing says it is worse. Incorrect critiques are
    rejected whatever their score, including unscored ones.
    """
    def rejected_of(chosen: int) -> list[int]:
        top = scores[chosen]
        return [j for j, (ok, s) in enumerate(zip(correct, scores))
                if j != chosen and (not ok or (s is not None and s < top))]  # type: ignore[operator]

    return _select(correct, scores, rejected_of)


def lowest_incorrect(correct: Sequence[bool], scores: Sequence[float | None]) -> Selection:
    """Strategy 1 of paper 4.5.2: the single lowest-scoring incorrect critique (scored ones only)."""
    def rejected_of(_chosen: int) -> list[int]:
        scored = [j for j in _incorrect(correct) if scores[j] is not None]
        return [min(scored, key=lambda j: (scores[j], j))] if scored else []

    return _select(correct, scores, rejected_of)


def highest_incorrect(correct: Sequence[bool], scores: Sequence[float | None]) -> Selection:
    """Strategy 2 of paper 4.5.2: the single highest-scoring ("hard") incorrect critique."""
    def rejected_of(_chosen: int) -> list[int]:
        scored = [j for j in _incorrect(correct) if scores[j] is not None]
        return [min(scored, key=lambda j: (-scores[j], j))] if scored else []  # type: ignore[operator]

    return _select(correct, scores, rejected_of)


def all_incorrect(correct: Sequence[bool], scores: Sequence[float | None]) -> Selection:
    """Strategy 3 of paper 4.5.2: every incorrect critique, scored or not."""
    return _select(correct, scores, lambda _chosen: _incorrect(correct))


STRATEGIES: dict[str, Callable[[Sequence[bool], Sequence[float | None]], Selection]] = {
    "best_to_worse": best_to_worse,
    "lowest_incorrect": lowest_incorrect,
    "highest_incorrect": highest_incorrect,
    "all_incorrect": all_incorrect,
}


# Strategies whose rejected set never depends on an incorrect critique's score: every incorrect critique
# is rejected whatever it scored (paper 3.5), so only the correct ones need the scorer.
_SCORES_CORRECT_ONLY = frozenset({"best_to_worse", "all_incorrect"})


def needs_score(strategy: str, correct: Sequence[bool]) -> list[bool]:
    """Which critiques the named strategy must have scored to make its selection.

    Best-to-Worse (paper 3.5) reads scores only to pick r+ among the correct critiques and to reject
    the correct ones below it; Strategy 3 (4.5.2) likewise. Strategies 1 and 2 rank the incorrect
    critiques by score, so they need every score. Skipping the others saves scorer calls, the costliest
    part of refinement.
    """
    strategy_fn(strategy)  # an unknown name fails loudly
    if strategy in _SCORES_CORRECT_ONLY:
        return [bool(ok) for ok in correct]
    return [True] * len(correct)


def strategy_fn(strategy: str) -> Callable[[Sequence[bool], Sequence[float | None]], Selection]:
    """The strategy named by config `refine.strategy`."""
    try:
        return STRATEGIES[strategy]
    except KeyError:
        raise ValueError(f"unknown negative-sampling strategy {strategy!r}; known: {sorted(STRATEGIES)}") from None


def select_pairs(strategy: str, correct: Sequence[bool], scores: Sequence[float | None]) -> Selection:
    """Apply the named strategy (config `refine.strategy`)."""
    return strategy_fn(strategy)(correct, scores)
