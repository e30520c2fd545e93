"""Judge bias report as small pure functions over plain lists (paper 4.4.2 discusses the judge's
trouble with ties; position and length are the usual biases of LVLM judges).

Verdicts here are "A" / "B" / None (unparseable). Unless a function says otherwise, every argument
is in the item's own A/B order, with swapped-order verdicts already mapped back (`swap_choice`).
"""
from __future__ import annotations

from statistics import fmean
from typing import Sequence


def _rate(hits: Sequence[bool]) -> float | None:
    return fmean(hits) if hits else None


def position_consistency(verdicts: Sequence[str | None], verdicts_swapped: Sequence[str | None]) -> dict:
    """How often the judge keeps its choice when the same item is shown in the other order.

    Only judgements where both orders parsed count; the rest are reported as `n_incomplete`.
    Returns {"rate": float|None, "n_pairs": int, "n_incomplete": int}.
    """
    if len(verdicts) != len(verdicts_swapped):
        raise ValueError("verdicts and verdicts_swapped differ in length")
    pairs = [(v, w) for v, w in zip(verdicts, verdicts_swapped) if v is not None and w is not None]
    return {
        "rate": _rate([v == w for v, w in pairs]),
        "n_pairs": len(pairs),
        "n_incomplete": len(verdicts) - len(pairs),
    }


def first_position_rate(shown_verdicts: Sequence[str | None]) -> dict:
    """How often the judge picks whichever answer it was shown first ("A" as displayed).

    Arguments are verdicts in the order the judge SAW the answers. With a fair random A/B order an
    unbiased judge scores near 0.5. Returns {"rate": float|None, "n": int}.
    """
    parsed = [v for v in shown_verdicts if v is not None]
    return {"rate": _rate([v == "A" for v in parsed]), "n": len(parsed)}


def length_bias(
    len_a: Sequence[int],
    len_b: Sequence[int],
    labels: Sequence[str],
    predictions: Sequence[str | None],
) -> dict:
    """How often the judge picks the longer answer, against how often the label does.

    Counted over judgements whose answers differ in length, whose label is A or B and whose
    prediction is A or B, so both rates share one denominator. A judge that prefers length
    shows `judge_picks_longer` well above `label_picks_longer`.
    Returns {"judge_picks_longer": float|None, "label_picks_longer": float|None, "n": int}.
    """
    if not (len(len_a) == len(len_b) == len(labels) == len(predictions)):
        raise ValueError("length_bias: all inputs must have the same length")
    judge_hits, label_hits = [], []
    for la, lb, label, pred in zip(len_a, len_b, labels, predictions):
        if la == lb or label not in ("A", "B") or pred not in ("A", "B"):
            continue
        longer = "A" if la > lb else "B"
        judge_hits.append(pred == longer)
        label_hits.append(label == longer)
    return {
        "judge_picks_longer": _rate(judge_hits),
        "label_picks_longer": _rate(label_hits),
        "n": len(judge_hits),
    }


def tie_rate(tie_predictions: Sequence[str | None], labels: Sequence[str] | None = None) -> dict:
    """Share of parsed three-way predictions that are ties (see metrics.tie_prediction), and, when
    labels are given, the share of labels that are ties.
    Returns {"rate": float|None, "n": int, "label_rate": float|None}.
    """
    parsed = [p for p in tie_predictions if p is not None]
    return {
        "rate": _rate([p == "tie" for p in parsed]),
        "n": len(parsed),
        "label_rate": _rate([lab == "tie" for lab in labels]) if labels is not None else None,
    }


def bucket_label(index: int, edges: Sequence[int]) -> str:
    """Name of length bucket `index` for sorted `edges`, e.g. edges [100, 300] -> "<100",
    "100-299", ">=300"."""
    if index == 0:
        return f"<{edges[0]}"
    if index == len(edges):
        return f">={edges[-1]}"
    return f"{edges[index - 1]}-{edges[index] - 1}"


def accuracy_by_length_bucket(lengths: Sequence[float], correct: Sequence[bool], edges: Sequence[int]) -> list[dict]:
    """Accuracy of judgements grouped by answer length (characters; the caller passes the mean length
    of the two answers). `edges` are sorted bucket boundaries: len(edges)+1 buckets, empty ones kept.
    Returns [{"bucket": str, "n": int, "accuracy": float|None}, ...] in length order.
    """
    if list(edges) != sorted(set(edges)) or not edges:
        raise ValueError(f"length bucket edges must be strictly increasing and non-empty, got {list(edges)}")
    if len(lengths) != len(correct):
        raise ValueError("lengths and correct differ in length")
    buckets: list[list[bool]] = [[] for _ in range(len(edges) + 1)]
    for length, ok in zip(lengths, correct):
        index = sum(length >= edge for edge in edges)
        buckets[index].append(bool(ok))
    return [
        {"bucket": bucket_label(i, edges), "n": len(hits), "accuracy": _rate(hits)}
        for i, hits in enumerate(buckets)
    ]
