"""Stage 1 rules: decide for one raw input row whether it can be curated, and why not.

Every row ends either as a clean item row or as a quarantine row with a short `reason` code; nothing is
dropped. Checks run cheapest first: structure and types, duplicates, text limits, then the image
(read and decoded under the configured byte and pixel limits).
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from carevl.config.stages import InputLimits
from carevl.errors import ReasonError
from carevl.curation.pairs import JUDGE_MISSING, column_choice, distinct_indices, item_pairs
from carevl.data.images import image_key, load_image
from carevl.data.io import normalize_row
from carevl.schema import ITEM_SCHEMA

# Reason codes of this stage (image reasons come from carevl.data.images).
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_ITEM_ID = "missing_item_id"
DUPLICATE_ITEM_ID = "duplicate_item_id"
EMPTY_QUESTION = "empty_question"
QUESTION_TOO_LONG = "question_too_long"
RESPONSE_TOO_LONG = "response_too_long"
EMPTY_RESPONSE = "empty_response"
TOO_MANY_RESPONSES = "too_many_responses"
NO_RESPONSES = "no_responses"
TOO_FEW_DISTINCT = "too_few_distinct_responses"
CAPTION_MISSING = "caption_missing"
CAPTION_TOO_LONG = "caption_too_long"


def wrong_type(column: str) -> str:
    return f"wrong_type:{column}"


def id_hash(item_id: str) -> int:
    """A signed 64-bit hash of an item id (duplicate detection keeps only these, not the ids)."""
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


@dataclass
class ValidationContext:
    """What a row is checked against. `first_row` maps the id hash of every duplicated item id to the
    global index of its first occurrence; any later occurrence is quarantined."""

    limits: InputLimits
    has_candidates: bool = False
    judge_from_column: bool = True
    allow_remote_images: bool = False
    captions_from_column: bool = False     # `curation.caption_backend: column`: each row brings its caption
    first_row: dict[int, int] = field(default_factory=dict)


class Rejected(ReasonError):
    """A row that breaks a stage-1 rule; the reason code says which."""


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return repr(value)


def row_json(raw: dict[str, Any], limits: InputLimits) -> str:
    """The original row as JSON for the quarantine file; an oversized binary is replaced by a note."""
    slim = {}
    for key, value in raw.items():
        if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > limits.max_image_bytes:
            value = f"<{len(value)} bytes omitted>"
        elif isinstance(value, str) and len(value) > 4 * limits.max_image_bytes:
            value = f"<{len(value)} characters omitted>"
        slim[key] = value
    return json.dumps(slim, ensure_ascii=False, default=_json_default)


def _check_types(row: dict[str, Any]) -> None:
    item_id = row.get("item_id")
    if item_id is None or (isinstance(item_id, str) and not item_id.strip()):
        raise Rejected(MISSING_ITEM_ID)
    for name in ("item_id", "question", "category", "image_path", "caption"):
        if row.get(name) is not None and not isinstance(row[name], str):
            raise Rejected(wrong_type(name))
    if row.get("image_bytes") is not None and not isinstance(row["image_bytes"], (bytes, bytearray)):
        raise Rejected(wrong_type("image_bytes"))
    for name in ("responses", "response_models"):
        value = row.get(name)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise Rejected(wrong_type(name))
    judgements = row.get("judgements")
    if judgements is not None and (not isinstance(judgements, list)
                                   or not all(isinstance(j, dict) for j in judgements)):
        raise Rejected(wrong_type("judgements"))
    models = row.get("response_models")
    if models is not None and len(models) != len(row.get("responses") or []):
        raise Rejected(wrong_type("response_models"))


def _check_text(row: dict[str, Any], ctx: ValidationContext) -> bool:
    """Text limits; returns True when the item has no responses and needs candidates (paper 3.1)."""
    question = row.get("question")
    if question is None or not question.strip():
        raise Rejected(EMPTY_QUESTION)
    if len(question) > ctx.limits.max_question_chars:
        raise Rejected(QUESTION_TOO_LONG)
    responses = row.get("responses") or []
    if not responses:
        if not ctx.has_candidates:
            raise Rejected(NO_RESPONSES)
        return True
    check_responses(responses, ctx.limits)
    return False


def _check_caption(row: dict[str, Any], ctx: ValidationContext) -> None:
    """A shipped caption is required with the column caption backend, and bounded like any text."""
    caption = row.get("caption")
    if ctx.captions_from_column and (caption is None or not caption.strip()):
        raise Rejected(CAPTION_MISSING)
    if caption is not None and len(caption) > ctx.limits.max_caption_chars:
        raise Rejected(CAPTION_TOO_LONG)


def check_responses(responses: list[str], limits: InputLimits) -> None:
    """The response rules, for shipped responses and generated candidates alike (raises Rejected)."""
    if len(responses) > limits.max_responses:
        raise Rejected(TOO_MANY_RESPONSES)
    if any(not r.strip() for r in responses):
        raise Rejected(EMPTY_RESPONSE)
    if any(len(r) > limits.max_response_chars for r in responses):
        raise Rejected(RESPONSE_TOO_LONG)
    if len(distinct_indices(responses)) < 2:
        raise Rejected(TOO_FEW_DISTINCT)


def attach_pairs(row: dict[str, Any], judge_from_column: bool) -> None:
    """Add the item's pair columns; with the `column` judge backend also its verdicts (paper 3.2)."""
    specs = item_pairs(row["responses"], row.get("judgements"))
    row["pairs_a"] = [s.a for s in specs]
    row["pairs_b"] = [s.b for s in specs]
    if judge_from_column:
        read = [column_choice(s.given_choice) for s in specs]
        row["judge_choices"] = [c for c, _ in read]
        row["judge_statuses"] = [status for _, status in read]
        row["judge_explanations"] = [s.given_explanation for s in specs]
    else:
        row["judge_choices"] = [None] * len(specs)
        row["judge_statuses"] = [JUDGE_MISSING] * len(specs)
        row["judge_explanations"] = [None] * len(specs)


def validate_row(raw: dict[str, Any], index: int, ctx: ValidationContext) -> tuple[dict | None, str | None]:
    """(clean item row, None) or (None, reason) for one raw row with global row index `index`."""
    if "_error" in raw:  # a JSONL line that did not parse, marked by the reader
        return None, raw["_error"]
    try:
        row = normalize_row(raw, ITEM_SCHEMA)
        _check_types(row)
        if ctx.first_row.get(id_hash(row["item_id"]), index) != index:
            raise Rejected(DUPLICATE_ITEM_ID)
        needs_candidates = _check_text(row, ctx)
        _check_caption(row, ctx)
        load_image(row.get("image_path"), row.get("image_bytes"), ctx.limits,
                   allow_remote=ctx.allow_remote_images)
        row["image_key"] = image_key(row.get("image_path"), row.get("image_bytes"))
        row["needs_candidates"] = needs_candidates
        if needs_candidates:
            row["responses"], row["response_models"] = [], []
        else:
            attach_pairs(row, ctx.judge_from_column)
    except ReasonError as exc:  # Rejected, RowError, ImageError, PairError
        return None, exc.reason
    if row.get("response_models") is None:
        row["response_models"] = [None] * len(row["responses"])
    row.pop("judgements", None)
    row.pop("gold_scores", None)
    return row, None
