"""Benchmark metrics as small pure functions over plain lists (paper 4.1, A.2, Tables 1 and 2).

Inputs are parallel sequences with one entry per judgement (an item judged in one run): `ids`,
`categories`, `correct` and so on. An item judged k times is first averaged over its runs (paper A.2:
five inferences per item, results averaged), then items are averaged. Accuracies are fractions in
[0, 1]; reports print VL-RewardBench in percent as Table 1 does.

A judgement whose verdict could not be parsed has prediction None: it is wrong, never a coin flip.
"""
from __future__ import annotations

from collections import defaultdict
from statistics import fmean, pstdev
from typing import Literal, Sequence

from carevl.evaluation.loaders import VL_REWARDBENCH_CATEGORIES

Label = Literal["A", "B", "tie"]


def tie_prediction(
    verdict: str | None,
    verdict_swapped: str | None = None,
    p_a: float | None = None,
    p_a_swapped: float | None = None,
    tie_margin: float = 0.0,
) -> Label | None:
    """Three-way prediction for MLLM-as-a-Judge's "Pair w. Tie" setting (paper 4.4.2, Table 2).

    All arguments are in the item's own A/B order (a swapped-order verdict already mapped back).
    The judge only ever answers A or B, so a tie is inferred:
      - the two orders disagree (a position-inconsistent judge has no real preference), or
      - the probability that A is better, averaged over the orders judged, lies within
        `tie_margin` of 0.5 (verdict mode only; explain mode has no probability).
    A verdict of None with a probability (p_a exactly 0.5: no preference) is a tie as well.
    Returns None when the primary verdict is unparseable (counted wrong by the caller).
    """
    probs = [p for p in (p_a, p_a_swapped) if p is not None]
    near_half = bool(probs) and abs(fmean(probs) - 0.5) <= tie_margin
    if verdict is None:
        return "tie" if near_half else None
    if (verdict_swapped is not None and verdict_swapped != verdict) or near_half:
        return "tie"
    return verdict  # type: ignore[return-value]


def is_correct(prediction: str | None, label: str) -> bool:
    """A prediction scores only when it equals the label; None (unparseable) is always wrong."""
    return prediction is not None and prediction == label


def item_scores(ids: Sequence[str], correct: Sequence[bool]) -> dict[str, float]:
    """Mean correctness of each item over its runs (paper A.2). Shapes: len(ids) == len(correct)."""
    if len(ids) != len(correct):
        raise ValueError(f"ids and correct differ in length ({len(ids)} vs {len(correct)})")
    per_item: dict[str, list[bool]] = defaultdict(list)
    for item_id, ok in zip(ids, correct):
        per_item[item_id].append(bool(ok))
    return {item_id: fmean(oks) for item_id, oks in per_item.items()}


def accuracy_summary(
    ids: Sequence[str],
    categories: Sequence[str],
    correct: Sequence[bool],
    expected_categories: Sequence[str] | None = None,
) -> dict:
    """Per-category accuracy, overall accuracy (over all items) and macro accuracy (mean of the
    category accuracies), as in paper Table 1's last two columns.

    `expected_categories` fixes the category list and order; a category with no items gets None
    and is left out of the macro mean (the item counts in the result show it).
    Returns {"per_category": {cat: acc|None}, "overall": acc|None, "macro": acc|None,
             "n_items": {cat: n}, "n_items_total": n}.
    """
    if len(categories) != len(ids):
        raise ValueError(f"ids and categories differ in length ({len(ids)} vs {len(categories)})")
    scores = item_scores(ids, correct)
    category_of: dict[str, str] = {}
    for item_id, category in zip(ids, categories):
        if category_of.setdefault(item_id, category) != category:
            raise ValueError(f"item {item_id!r} appears with two categories")
    by_category: dict[str, list[float]] = defaultdict(list)
    for item_id, score in scores.items():
        by_category[category_of[item_id]].append(score)
    names = list(expected_categories) if expected_categories else sorted(by_category)
    per_category = {c: (fmean(by_category[c]) if by_category.get(c) else None) for c in names}
    present = [acc for acc in per_category.values() if acc is not None]
    return {
        "per_category": per_category,
        "overall": fmean(scores.values()) if scores else None,
        "macro": fmean(present) if present else None,
        "n_items": {c: len(by_category.get(c, [])) for c in names},
        "n_items_total": len(scores),
    }


def vl_rewardbench_metrics(ids: Sequence[str], categories: Sequence[str], correct: Sequence[bool]) -> dict:
    """Paper Table 1 metrics: general, hallucination, reasoning, overall, macro (fractions)."""
    unknown = set(categories) - set(VL_REWARDBENCH_CATEGORIES)
    if unknown:
        raise ValueError(f"not VL-RewardBench categories: {sorted(unknown)}")
    summary = accuracy_summary(ids, categories, correct, VL_REWARDBENCH_CATEGORIES)
    metrics = dict(summary["per_category"])
    metrics["overall"] = summary["overall"]
    metrics["macro"] = summary["macro"]
    return metrics


def pairwise_metrics(
    ids: Sequence[str],
    categories: Sequence[str],
    labels: Sequence[str],
    tie_predictions: Sequence[str | None],
    verdicts: Sequence[str | None],
) -> dict:
    """MLLM-as-a-Judge's two pair settings (paper 4.4.2, Table 2), per category and averaged.

    - "with_tie": every item; the three-way prediction (`tie_prediction`) against labels A/B/tie.
    - "without_tie": tie-labelled items left out; the judge's plain A/B verdict against the label.
    - "swap_checked": tie-labelled items left out; the three-way prediction against the label, so a judge
      whose verdict flips with the answer order (a swap tie) is wrong. A judge that always names the
      same position scores 0 here, where "without_tie" gives it about one half.
    "average" is the mean of the category accuracies (Table 2's Avg. column); "overall" is over items.
    """
    n = len(ids)
    if not (len(categories) == len(labels) == len(tie_predictions) == len(verdicts) == n):
        raise ValueError("pairwise_metrics: all inputs must have the same length")
    names = sorted(set(categories))
    with_tie = accuracy_summary(
        ids, categories, [is_correct(p, lab) for p, lab in zip(tie_predictions, labels)], names)
    keep = [i for i in range(n) if labels[i] != "tie"]
    without_tie = accuracy_summary(
        [ids[i] for i in keep], [categories[i] for i in keep],
        [is_correct(verdicts[i], labels[i]) for i in keep], names)
    swap_checked = accuracy_summary(
        [ids[i] for i in keep], [categories[i] for i in keep],
        [is_correct(tie_predictions[i], labels[i]) for i in keep], names)
    return {
        setting: {"per_category": s["per_category"], "average": s["macro"], "overall": s["overall"],
                  "n_items": s["n_items"], "n_items_total": s["n_items_total"]}
        for setting, s in (("with_tie", with_tie), ("without_tie", without_tie), ("swap_checked", swap_checked))
    }


def per_run_spread(runs: Sequence[int], ids: Sequence[str], correct: Sequence[bool]) -> dict:
    """Overall accuracy of each run separately and their spread (paper A.2 averages k runs).

    Returns {"per_run": {run: acc}, "mean": float|None, "std": float|None} (population std).
    """
    by_run: dict[int, tuple[list[str], list[bool]]] = defaultdict(lambda: ([], []))
    for run, item_id, ok in zip(runs, ids, correct):
        by_run[int(run)][0].append(item_id)
        by_run[int(run)][1].append(bool(ok))
    per_run = {run: fmean(item_scores(*by_run[run]).values()) for run in sorted(by_run)}
    values = list(per_run.values())
    return {
        "per_run": per_run,
        "mean": fmean(values) if values else None,
        "std": pstdev(values) if len(values) > 1 else (0.0 if values else None),
    }
