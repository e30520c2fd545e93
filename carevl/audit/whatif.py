"""What-if table: the confidence split re-run on the stored expert scores under other settings.

No model runs: a curated pair stores every expert's score of both responses and the strong judge's
verdict, which is all the split rule (paper 3.2) and the relabelling rule (paper 3.4) read. For the
full panel of M experts and for each panel with one expert left out, every threshold tau with a
well-defined majority (floor(m/2)+1 .. m) is applied, giving the size of the high-confidence set, its
label accuracy and the accuracy of the final labels (high + relabelled low) under that rule.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from carevl.audit.metrics import select, tally
from carevl.curation.votes import HIGH, SplitDecision, confidence_split, count_votes_matrix


def tau_range(m: int) -> range:
    """Every threshold for m experts under which at most one side can win: floor(m/2)+1 .. m (paper 3.2
    requires tau > m/2 and uses tau = m-1)."""
    if m < 1:
        raise ValueError(f"need at least one expert, got m={m}")
    return range(m // 2 + 1, m + 1)


def expert_panels(experts: Sequence[str]) -> list[tuple[str | None, list[int]]]:
    """(left-out expert or None, column indices kept): the full panel first, then each panel of M-1
    experts in config order. With a single expert there is no smaller panel."""
    panels: list[tuple[str | None, list[int]]] = [(None, list(range(len(experts))))]
    if len(experts) > 1:
        panels += [(name, [j for j in range(len(experts)) if j != i]) for i, name in enumerate(experts)]
    return panels


def apply_split(votes_a: Sequence[int], votes_b: Sequence[int], judge: Sequence[str | None],
                tau: int) -> list[SplitDecision]:
    """`confidence_split` for every pair (parallel sequences of shape (pairs,)). The rule is evaluated
    once per distinct (v_A, v_B, verdict), of which there are at most 3 (m+1)^2, so the cost does not
    grow with the rule's cost per pair."""
    if not len(votes_a) == len(votes_b) == len(judge):
        raise ValueError("votes_a, votes_b and judge must have the same length")
    decisions: dict[tuple[int, int, str | None], SplitDecision] = {}
    out = []
    for key in zip((int(v) for v in votes_a), (int(v) for v in votes_b), judge):
        if key not in decisions:
            decisions[key] = confidence_split(key[0], key[1], key[2], tau)  # type: ignore[arg-type]
        out.append(decisions[key])
    return out


def rule_outcome(scores_a: np.ndarray, scores_b: np.ndarray, judge: Sequence[str | None],
                 gold: Sequence[str | None], tau: int) -> dict[str, Any]:
    """High-set size and accuracies when the split runs on these experts' scores, shape (pairs, m)."""
    votes_a, votes_b = count_votes_matrix(scores_a, scores_b)
    decisions = apply_split(votes_a, votes_b, judge, tau)
    labels = [d.label for d in decisions]
    high = [d.confidence == HIGH for d in decisions]
    return {"high_size": sum(high), "low_size": len(high) - sum(high),
            "high": tally(select(labels, high), select(gold, high)), "final": tally(labels, gold)}


def what_if_table(scores_a: np.ndarray, scores_b: np.ndarray, judge: Sequence[str | None],
                  gold: Sequence[str | None], experts: Sequence[str], configured_tau: int) -> list[dict[str, Any]]:
    """One row per (panel, tau): {experts, left_out, m, tau, configured, high_size, low_size, high, final},
    `high` and `final` being `tally` blocks. Scores have shape (pairs, M), columns in `experts` order;
    the row with the full panel at `configured_tau` is marked `configured` (it should reproduce the run)."""
    scores_a, scores_b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if scores_a.ndim != 2 or scores_a.shape[1] != len(experts) or scores_a.shape != scores_b.shape:
        raise ValueError(f"need scores of shape (pairs, {len(experts)}), got {scores_a.shape} and {scores_b.shape}")
    rows = []
    for left_out, columns in expert_panels(experts):
        for tau in tau_range(len(columns)):
            outcome = rule_outcome(scores_a[:, columns], scores_b[:, columns], judge, gold, tau)
            rows.append({"experts": [experts[j] for j in columns], "left_out": left_out, "m": len(columns),
                         "tau": tau, "configured": left_out is None and tau == configured_tau, **outcome})
    return rows
