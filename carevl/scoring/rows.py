"""Input rows of the scoring job, checked and put into one fixed shape; and their results.

An input row is either
  - a pair:  {question, response_a, response_b, image?, id?, label?, category?} (the pairwise files
    `ray_jobs.evaluate` reads, the synthetic held-out pairs included), or
  - a group: {question, candidates: [k answers], reference?, image?, id?}.
The image is `image` (a path, URI, data URL, raw bytes or a {bytes, path} struct) or the item columns
`image_path` / `image_bytes`; a relative path is read relative to the data file's folder.

`normalize_row` turns one row into the fixed `ROW_SCHEMA` record every later stage reads (a pair is a
group of two answers judged in both orders), or into a record with a `reason` that is quarantined.
`pair_result` and `group_result` turn the judge's p_first of each comparison into the output columns.
Pure functions: no model, no Ray.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from carevl.config import InputLimits
from carevl.evaluation.loaders import image_from_column, resolve_image_path
from carevl.judge.rules import (
    combine_swap,
    group_rewards,
    mean_win_probability,
    rank_from_rewards,
    reward_comparisons,
)

PAIR, GROUP = "pair", "group"
PAIR_COMPARISONS = [(0, 1), (1, 0)]   # (A, B) then (B, A)
STATUS_OK = "ok"

ROW_SCHEMA = pa.schema([
    ("unit_id", pa.string()), ("row_index", pa.int64()), ("id", pa.string()), ("kind", pa.string()),
    ("question", pa.string()), ("image_ref", pa.string()), ("image_bytes", pa.binary()),
    ("responses", pa.list_(pa.string())),     # a pair: [response_a, response_b]; a group: the candidates
    ("reference", pa.string()), ("label", pa.string()), ("category", pa.string()),
    ("reason", pa.string()), ("row_json", pa.string()),
])
# What the judge actor returns, one row per record (the writer splits it into the output classes).
_JUDGEMENT = pa.struct([("first", pa.int32()), ("second", pa.int32()), ("p_first", pa.float64()),
                        ("status", pa.string())])
RESULT_SCHEMA = pa.schema([
    ("unit_id", pa.string()), ("row_index", pa.int64()), ("id", pa.string()), ("kind", pa.string()),
    ("label", pa.string()), ("category", pa.string()), ("reason", pa.string()), ("row_json", pa.string()),
    ("p_a_ab", pa.float64()), ("p_a_ba", pa.float64()), ("p_a", pa.float64()), ("winner", pa.string()),
    ("swap_consistent", pa.bool_()),
    ("method", pa.string()), ("k", pa.int32()), ("rewards", pa.list_(pa.float64())),
    ("ranking", pa.list_(pa.int32())), ("best_index", pa.int32()), ("candidate_status", pa.list_(pa.string())),
    ("judgements", pa.list_(_JUDGEMENT)),
])
_LABELS = {"a": "A", "b": "B", "tie": "tie"}


class BadRow(ValueError):
    """A row that cannot be scored; the message names the field."""


def _text(row: dict[str, Any], field: str, limit: int, required: bool = True) -> str | None:
    value = row.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadRow(f"field '{field}' must be a string")
    if len(value) > limit:
        raise BadRow(f"field '{field}' has {len(value)} characters, over the limit of {limit}")
    return value


def _responses(row: dict[str, Any], limits: InputLimits, method: str) -> tuple[str, list[str]]:
    is_pair = "response_a" in row or "response_b" in row
    if "candidates" in row and is_pair:
        raise BadRow("row has both 'candidates' (a group) and 'response_a'/'response_b' (a pair)")
    if is_pair:
        answers = [_text(row, f, limits.max_response_chars) for f in ("response_a", "response_b")]
        return PAIR, answers  # type: ignore[return-value]
    candidates = row.get("candidates")
    if candidates is None:
        raise BadRow("row needs 'response_a' and 'response_b' (a pair) or 'candidates' (a group)")
    if not isinstance(candidates, (list, tuple)) or not all(isinstance(c, str) for c in candidates):
        raise BadRow("field 'candidates' must be a list of strings")
    least = 1 if method == "reference" else 2
    if not least <= len(candidates) <= limits.max_responses:
        raise BadRow(f"field 'candidates' has {len(candidates)} answers; score.method '{method}' needs "
                     f"{least} to {limits.max_responses} (limits.max_responses)")
    for i, c in enumerate(candidates):
        if len(c) > limits.max_response_chars:
            raise BadRow(f"field 'candidates' answer {i} has {len(c)} characters, over the limit of "
                         f"{limits.max_response_chars}")
    return GROUP, list(candidates)


def _image(row: dict[str, Any], base_dir: str | None) -> tuple[str | None, bytes | None]:
    try:
        ref, raw = image_from_column(row.get("image", row.get("image_path")))
    except TypeError as exc:
        raise BadRow(f"field 'image': {exc}") from None
    if raw is None and row.get("image_bytes"):
        raw = bytes(row["image_bytes"])
    return resolve_image_path(ref, Path(base_dir) if base_dir else None), raw


def quarantine_json(row: dict[str, Any]) -> str:
    """What a quarantined row keeps: its text fields and image reference, never image bytes or data URLs."""
    keep = {}
    for key, value in row.items():
        if isinstance(value, (bytes, bytearray)) or (isinstance(value, str) and value.startswith("data:")):
            value = f"<{len(value)} bytes>"
        elif isinstance(value, dict):
            value = {k: (f"<{len(v)} bytes>" if isinstance(v, (bytes, bytearray)) else v) for k, v in value.items()}
        keep[key] = value
    return json.dumps(keep, ensure_ascii=False, default=str)[:20_000]


def normalize_row(row: dict[str, Any], unit_id: str, row_index: int, base_dir: str | None,
                  limits: InputLimits, method: str) -> dict[str, Any]:
    """One input row -> a `ROW_SCHEMA` record; a row that cannot be scored gets `reason` set."""
    out: dict[str, Any] = {name: None for name in ROW_SCHEMA.names}
    out.update(unit_id=unit_id, row_index=row_index)
    if "_error" in row:  # a JSONL line that is not a JSON object (carevl.ledger.read_unit_rows)
        return {**out, "reason": str(row["_error"]), "row_json": str(row.get("_raw", ""))[:20_000]}
    raw_id = row.get("id", row.get("item_id"))
    out["id"] = None if raw_id is None else str(raw_id)
    try:
        out["question"] = _text(row, "question", limits.max_question_chars)
        out["kind"], out["responses"] = _responses(row, limits, method)
        if out["kind"] == GROUP:
            out["reference"] = _text(row, "reference", limits.max_response_chars, required=False)
            if method == "reference" and out["reference"] is None:
                raise BadRow("field 'reference' is required by score.method 'reference'")
        out["image_ref"], out["image_bytes"] = _image(row, base_dir)
        if row.get("label") is not None:
            out["label"] = _LABELS.get(str(row["label"]).strip().lower())
            if out["label"] is None:
                raise BadRow(f"field 'label' must be one of A, B, tie (got {row['label']!r})")
        out["category"] = None if row.get("category") is None else str(row["category"])
    except BadRow as exc:
        return {**out, "kind": None, "responses": None, "image_bytes": None, "reason": str(exc),
                "row_json": quarantine_json(row)}
    return out


def comparisons_of(record: dict[str, Any], method: str) -> tuple[list[str], list[tuple[int, int]]]:
    """(answers, ordered comparisons) of one record: a pair's two orders, or the group's comparisons
    for `method`, where answer index k is the reference."""
    responses = list(record["responses"])
    if record["kind"] == PAIR:
        return responses, PAIR_COMPARISONS
    if method == "reference":
        return responses + [record["reference"]], reward_comparisons(len(responses), "reference")
    return responses, reward_comparisons(len(responses), method)  # type: ignore[arg-type]


def pair_result(p_first: Sequence[float | None], statuses: Sequence[str],
                tie_on_disagreement: bool) -> dict[str, Any]:
    """A pair's columns from its two judgements ((A, B) then (B, A)): p_a_ab = P(A better) with A shown
    first, p_a_ba = P(A better) with B shown first, p_a their mean, winner, swap_consistent. A pair
    whose judgement failed in either order gets `reason` (the judge's status) instead."""
    failed = [s for s in statuses if s != STATUS_OK]
    if failed or any(p is None for p in p_first):
        return {"reason": failed[0] if failed else "judge_error"}
    forward, swapped = float(p_first[0]), float(p_first[1])  # type: ignore[arg-type]
    outcome = combine_swap(forward, swapped, tie_on_disagreement)
    return {"p_a_ab": forward, "p_a_ba": 1.0 - swapped, "p_a": outcome.p_a, "winner": outcome.winner,
            "swap_consistent": outcome.swap_consistent}


def group_result(k: int, method: str, comparisons: Sequence[tuple[int, int]], p_first: Sequence[float | None],
                 statuses: Sequence[str], tie_on_disagreement: bool) -> dict[str, Any]:
    """A group's columns: one reward per candidate (None where all its judgements failed, with that
    candidate's first failure in `candidate_status`), the ranking (the /v1/rank rule), every judgement.
    A group none of whose candidates got a reward gets `reason` instead."""
    rewards = group_rewards(k, method, comparisons, p_first,  # type: ignore[arg-type]
                            tie_on_disagreement=tie_on_disagreement)
    if all(r is None for r in rewards):
        failed = [s for s in statuses if s != STATUS_OK]
        return {"reason": failed[0] if failed else "judge_error"}
    tiebreak = mean_win_probability(k, comparisons, p_first, tie_on_disagreement) if method == "copeland" else None
    ranking = rank_from_rewards(rewards, tiebreak)
    candidate_status = []
    for c in range(k):
        mine = [s for (i, j), s in zip(comparisons, statuses) if c in (i, j) and s != STATUS_OK]
        candidate_status.append(STATUS_OK if rewards[c] is not None else (mine[0] if mine else "judge_error"))
    return {"method": method, "rewards": rewards, "ranking": ranking, "best_index": ranking[0],
            "candidate_status": candidate_status,
            "judgements": [{"first": i, "second": j, "p_first": p, "status": s}
                           for (i, j), p, s in zip(comparisons, p_first, statuses)]}
