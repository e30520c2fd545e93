"""Which pairs an item contributes, and the curated pair rows built from stored scores (paper 3.2).

Pairs are all unordered pairs of an item's distinct responses, or the pairs the input's strong-judge
judgements name; response A is always the earlier one. Scores are stored per response, so a pair's
expert scores are two look-ups, never a second forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Sequence

from carevl.curation.votes import confidence_split, count_votes
from carevl.judge_format import parse_explanation, parse_verdict, swap_answer_mentions, swap_choice
from carevl.schema import pair_id
from carevl.errors import ReasonError

# Judge status values recorded on every pair.
JUDGE_OK, JUDGE_MISSING, JUDGE_UNPARSEABLE, JUDGE_ERROR = "ok", "missing", "unparseable", "error"


class PairError(ReasonError):
    """Given judgements that do not describe valid pairs; `reason` is a quarantine code."""


@dataclass(frozen=True)
class PairSpec:
    """One pair of response indices (a < b) and the verdict shipped with the input, if any."""

    a: int
    b: int
    given_choice: str | None = None
    given_explanation: str | None = None


def response_key(text: str) -> str:
    """Responses that differ only in surrounding whitespace are the same response."""
    return text.strip()


def first_occurrence(responses: Sequence[str]) -> list[int]:
    """For each response index, the index of the first response with the same text."""
    seen: dict[str, int] = {}
    return [seen.setdefault(response_key(r), i) for i, r in enumerate(responses)]


def distinct_indices(responses: Sequence[str]) -> list[int]:
    """Indices of the distinct responses, in input order (each text's first occurrence)."""
    return sorted(set(first_occurrence(responses)))


def item_pairs(responses: Sequence[str], judgements: Sequence[dict] | None) -> list[PairSpec]:
    """The pairs of one item: every unordered pair of distinct responses, or exactly the judged pairs.

    A judged pair given as (b, a) with b > a is turned round: its verdict and the answer mentions in its
    explanation are swapped. Raises PairError for
    an index out of range, a pair of identical responses, or the same pair judged twice.
    """
    if not judgements:
        return [PairSpec(a, b) for a, b in combinations(distinct_indices(responses), 2)]
    n, rep = len(responses), first_occurrence(responses)
    specs, seen = [], set()
    for k, j in enumerate(judgements):
        a, b = j.get("a"), j.get("b")
        if not isinstance(a, int) or not isinstance(b, int) or not (0 <= a < n and 0 <= b < n):
            raise PairError("bad_judgement_index", f"judgement {k} names responses ({a}, {b}) of {n}")
        if rep[a] == rep[b]:
            raise PairError("bad_judgement_index", f"judgement {k} compares a response with itself ({a}, {b})")
        choice, explanation = j.get("choice"), given_explanation(j)
        if a > b:
            # Re-told for the (a, b) order: the verdict and the explanation's answer mentions both flip,
            # so the explanation still argues for the answer the verdict names.
            a, b = b, a
            normalized = column_choice(choice)[0]
            choice = swap_choice(normalized) if normalized else choice
            explanation = swap_answer_mentions(explanation) if explanation else explanation
        if (a, b) in seen:
            raise PairError("duplicate_judgement", f"responses ({a}, {b}) are judged twice")
        seen.add((a, b))
        specs.append(PairSpec(a, b, choice, explanation))
    return specs


def given_explanation(judgement: dict) -> str | None:
    """The explanation shipped with one input judgement: its `explanation` field, or, when `choice`
    holds a full judgement text (verdict line, then explanation), the explanation inside it."""
    explanation = judgement.get("explanation")
    if isinstance(explanation, str) and explanation.strip():
        return explanation
    choice = judgement.get("choice")
    if isinstance(choice, str) and parse_verdict(choice):
        return parse_explanation(choice) or explanation
    return explanation


def column_choice(choice: Any) -> tuple[str | None, str]:
    """Strictly read a verdict shipped in the input: (choice, status).

    Accepts 'A' / 'B' (any case, surrounding space) or a full judgement text whose first line is the
    verdict line of `carevl.judge_format`. Anything else is unparseable; null or empty is missing.
    """
    if choice is None or (isinstance(choice, str) and not choice.strip()):
        return None, JUDGE_MISSING
    if not isinstance(choice, str):
        return None, JUDGE_UNPARSEABLE
    bare = choice.strip().upper()
    if bare in ("A", "B"):
        return bare, JUDGE_OK
    parsed = parse_verdict(choice)
    return (parsed, JUDGE_OK) if parsed else (None, JUDGE_UNPARSEABLE)


def pair_rows(item: dict[str, Any], experts: Sequence[str], tau: int, score_prefix: str) -> list[dict]:
    """The curated pair rows (PAIR_SCHEMA columns) of one scored, judged item row."""
    scores = [item[f"{score_prefix}{e}"] for e in experts]  # per expert: one score per response
    rows = []
    for k, (a, b) in enumerate(zip(item["pairs_a"], item["pairs_b"])):
        scores_a = [float(s[a]) for s in scores]
        scores_b = [float(s[b]) for s in scores]
        votes_a, votes_b = count_votes(scores_a, scores_b)
        choice = item["judge_choices"][k]
        split = confidence_split(votes_a, votes_b, choice, tau)
        rows.append({
            "item_id": item["item_id"],
            "pair_id": pair_id(item["item_id"], a, b),
            "question": item["question"],
            "image_path": item.get("image_path"),
            "image_bytes": item.get("image_bytes"),
            "caption": item.get("caption"),
            "response_a": item["responses"][a],
            "response_b": item["responses"][b],
            "judge_choice": choice,
            "judge_explanation": item["judge_explanations"][k],
            "judge_status": item["judge_statuses"][k],
            "expert_scores_a": scores_a,
            "expert_scores_b": scores_b,
            "votes_a": votes_a,
            "votes_b": votes_b,
            "confidence": split.confidence,
            "low_reason": split.low_reason,
            "label": split.label,
            "category": item.get("category"),
        })
    return rows
