"""How well the judge's p_a is calibrated on an evaluation's records (verdict mode).

Every record of an item labelled A or B gives up to two samples, one per order judged: the
probability that the item's A is better (already mapped back from the order shown) against the label
(1 = A better). Tie labels and orders without a probability (explain mode, errors) give none. Pure
functions over the records of predictions.jsonl; the formulas are carevl.judge.calibration's.
"""
from __future__ import annotations

from typing import Any, Sequence

from carevl.judge.calibration import expected_calibration_error, negative_log_likelihood, reliability_bins


def calibration_samples(records: Sequence[dict[str, Any]]) -> tuple[list[float], list[int], list[str]]:
    """(p, labels, item ids), one entry per order judged of each A/B-labelled record."""
    p, labels, ids = [], [], []
    for r in records:
        if r["label"] not in ("A", "B"):
            continue
        for value in (r.get("p_a"), r.get("p_a_swapped")):
            if value is not None:
                p.append(float(value))
                labels.append(int(r["label"] == "A"))
                ids.append(r["id"])
    return p, labels, ids


def debiased_samples(records: Sequence[dict[str, Any]]) -> tuple[list[float], list[int]]:
    """(mean of the two orders' p, label) per A/B-labelled record judged in both orders: the p_a a
    swap-checked /v1/judge call and the scoring job report."""
    pairs = [((r["p_a"] + r["p_a_swapped"]) / 2, int(r["label"] == "A")) for r in records
             if r["label"] in ("A", "B") and r.get("p_a") is not None and r.get("p_a_swapped") is not None]
    return [p for p, _ in pairs], [y for _, y in pairs]


def calibration_block(p: Sequence[float], labels: Sequence[int], bins: int) -> dict[str, Any] | None:
    """{ece, nll, n, bins} of one set of samples; None when there are none."""
    if not p:
        return None
    return {"ece": expected_calibration_error(p, labels, bins), "nll": negative_log_likelihood(p, labels),
            "n": len(p), "bins": reliability_bins(p, labels, bins)}


def calibration_report(records: Sequence[dict[str, Any]], bins: int,
                       temperature: float | None) -> dict[str, Any] | None:
    """The report's calibration section: per-order and debiased ECE with their reliability bins, and
    the temperature the judge applied (None when unknown, e.g. a service). None without samples."""
    p, labels, _ = calibration_samples(records)
    per_order = calibration_block(p, labels, bins)
    if per_order is None:
        return None
    return {"temperature": temperature, "per_order": per_order,
            "debiased": calibration_block(*debiased_samples(records), bins)}
