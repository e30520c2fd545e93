"""Accuracy of curated labels against gold, as small pure functions over parallel lists.

Every source audited (the strong judge, one expert, the vote majority, the high-confidence labels, ...)
is a list of predictions, one per curated pair in the pair's own A/B order: "A", "B" or None (an
abstention: no verdict, an expert's exact tie, an equal vote, a pair left without a label). Gold is a
parallel list of "A", "B", "tie" or None (no gold for that pair).

Only pairs with an A/B gold and a prediction are scored; each of the other pairs falls into exactly one
counter (no_gold, gold_ties, abstained), so `pairs == n + abstained + gold_ties + no_gold` always holds.
"""
from __future__ import annotations

import math
from collections import defaultdict
from statistics import NormalDist
from typing import Any, Literal, Sequence

from carevl.curation.votes import Choice, expert_vote

GoldLabel = Literal["A", "B", "tie"]
GOLD_LABELS: tuple[str, ...] = ("A", "B", "tie")
NO_CATEGORY = "(none)"


def wilson_interval(correct: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion `correct / n` at confidence `level`.

    Unlike the normal approximation it stays inside [0, 1] and is usable at small n and at 0 or n
    successes. None when n == 0 (nothing was scored). The closed form is a few lines over the standard
    library's NormalDist; statsmodels / scipy, which also have it, are not dependencies of this project.
    """
    if n < 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n == 0:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 or n successes the bound is exactly 0 or 1; the formula leaves rounding dust there.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def gold_preference(score_a: float | None, score_b: float | None) -> GoldLabel | None:
    """The gold label of a pair from the known quality of its two responses (higher is better).

    Equal scores are a gold tie; a missing or NaN score gives no gold.
    """
    if score_a is None or score_b is None or math.isnan(score_a) or math.isnan(score_b):
        return None
    if score_a == score_b:
        return "tie"
    return "A" if score_a > score_b else "B"


def vote_majority(votes_a: int, votes_b: int) -> Choice | None:
    """The side with more expert votes, or None on equal votes (paper 3.2's v_A against v_B, without
    the tau threshold): the same comparison one expert makes between its two scores."""
    return expert_vote(votes_a, votes_b)


def tally(predictions: Sequence[str | None], gold: Sequence[str | None], level: float = 0.95) -> dict[str, Any]:
    """Accuracy of `predictions` against `gold` (parallel lists; see the module docstring).

    Returns {pairs, n, correct, accuracy, ci95: [low, high], abstained, gold_ties, no_gold}; accuracy
    and ci95 are None when n == 0.
    """
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions but {len(gold)} gold labels")
    counts = {"no_gold": 0, "gold_ties": 0, "abstained": 0, "n": 0, "correct": 0}
    for prediction, truth in zip(predictions, gold):
        if truth is None:
            counts["no_gold"] += 1
        elif truth == "tie":
            counts["gold_ties"] += 1
        elif truth not in ("A", "B"):
            raise ValueError(f"gold label must be 'A', 'B', 'tie' or None, got {truth!r}")
        elif prediction is None:
            counts["abstained"] += 1
        elif prediction not in ("A", "B"):
            raise ValueError(f"prediction must be 'A', 'B' or None, got {prediction!r}")
        else:
            counts["n"] += 1
            counts["correct"] += int(prediction == truth)
    n, correct = counts["n"], counts["correct"]
    interval = wilson_interval(correct, n, level)
    return {"pairs": len(gold), "n": n, "correct": correct, "accuracy": correct / n if n else None,
            "ci95": list(interval) if interval else None, "abstained": counts["abstained"],
            "gold_ties": counts["gold_ties"], "no_gold": counts["no_gold"]}


def tally_by_category(predictions: Sequence[str | None], gold: Sequence[str | None],
                      categories: Sequence[str | None]) -> dict[str, Any]:
    """`tally` over all pairs ("overall") and per category ("per_category", sorted by name); a pair
    without a category counts under NO_CATEGORY."""
    if not len(predictions) == len(gold) == len(categories):
        raise ValueError("predictions, gold and categories must have the same length")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, category in enumerate(categories):
        groups[category if category is not None else NO_CATEGORY].append(i)
    per_category = {c: tally([predictions[i] for i in rows], [gold[i] for i in rows])
                    for c, rows in sorted(groups.items())}
    return {"overall": tally(predictions, gold), "per_category": per_category}


def select(values: Sequence[Any], mask: Sequence[bool]) -> list[Any]:
    """The entries of `values` where `mask` is true (parallel lists)."""
    if len(values) != len(mask):
        raise ValueError(f"{len(values)} values but a mask of {len(mask)}")
    return [v for v, keep in zip(values, mask) if keep]
