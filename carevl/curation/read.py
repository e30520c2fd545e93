"""Stage 1 as a Ray Data UDF: read whole work units and validate every row.

Input rows are work-unit descriptors (`carevl.ledger.WorkUnit.to_dict()`); output rows are
items, one per input row, each either clean or carrying its quarantine `reason` and original JSON.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from carevl.curation.columns import as_columns, to_table
from carevl.ledger import read_unit_rows
from carevl.curation.validate import ValidationContext, row_json, validate_row

ITEM_COLUMNS = ("unit_id", "row_index", "reason", "row_json", "item_id", "image_path", "image_bytes",
                "image_key", "question", "category", "responses", "response_models", "needs_candidates",
                "pairs_a", "pairs_b", "judge_choices", "judge_explanations", "judge_statuses", "caption")


def _quarantine_row(raw: dict[str, Any], reason: str, ctx: ValidationContext) -> dict[str, Any]:
    item_id = raw.get("item_id")
    text = raw["_raw"] if "_raw" in raw else row_json(raw, ctx.limits)
    return {"item_id": item_id if isinstance(item_id, str) else None, "reason": reason, "row_json": text}


def read_and_validate(batch: pa.Table | dict, *, ctx: ValidationContext) -> pa.Table:
    """Ray Data UDF: unit descriptors in, validated item rows out (quarantined ones included)."""
    out: dict[str, list] = {name: [] for name in ITEM_COLUMNS}
    units = as_columns(batch)
    for values in zip(*units.values()):
        unit = dict(zip(units, values))
        for offset, raw in enumerate(read_unit_rows(unit)):
            index = unit["first_global"] + offset
            row, reason = validate_row(raw, index, ctx)
            if row is None:
                row = _quarantine_row(raw, reason, ctx)
            row.update(unit_id=unit["unit_id"], row_index=index, reason=reason)
            for name in ITEM_COLUMNS:
                out[name].append(row.get(name))
    return to_table(out)
