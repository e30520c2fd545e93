"""The last stage: scored item rows -> pair rows split into high / low confidence, plus quarantine rows.

Files are written into `_staging/<class>/` named after their work unit; the driver publishes them when
the unit is complete (`carevl.ledger.RunLedger.publish`). Each call returns one small receipt per
unit it touched: how many input rows it accounted for, the files it wrote and the unit's counters.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Sequence

import pyarrow as pa

from carevl.curation.columns import SCORE_PREFIX, SCORED_PREFIX, as_columns
from carevl.curation.pairs import distinct_indices, pair_rows
from carevl.curation.summary import _bump, empty_stats, pair_stats
from carevl.data.io import join, write_table
from carevl.ledger import STAGING_DIR
from carevl.schema import PAIR_SCHEMA

QUARANTINE_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("reason", pa.string()),
    ("row_json", pa.string()),
    ("row_index", pa.int64()),
])
RECEIPT_SCHEMA = pa.schema([
    ("unit_id", pa.string()),
    ("rows", pa.int64()),
    ("files", pa.string()),     # JSON list of {"class", "path", "rows"}
    ("stats", pa.string()),     # JSON counters (carevl.curation.summary)
])


def _late_row_json(item: dict[str, Any]) -> str:
    """What a row quarantined after validation keeps: its identity and text, not its image bytes."""
    keep = {k: item.get(k) for k in ("item_id", "image_path", "question", "responses", "response_models")}
    return json.dumps(keep, ensure_ascii=False)


def _write_parts(rows: list[dict], schema: pa.Schema, run_dir: str, cls: str, unit_id: str,
                 rows_per_file: int) -> list[dict[str, Any]]:
    files = []
    for start in range(0, len(rows), rows_per_file):
        chunk = rows[start:start + rows_per_file]
        path = join(run_dir, STAGING_DIR, cls, f"{unit_id}-{uuid.uuid4().hex[:12]}.parquet")
        write_table(pa.Table.from_pylist(chunk, schema=schema), path, "parquet")
        files.append({"class": cls, "path": path, "rows": len(chunk)})
    return files


def _unit_outputs(items: list[dict[str, Any]], experts: Sequence[str], tau: int) -> tuple[dict, dict]:
    stats = empty_stats()
    out: dict[str, list] = {"high": [], "low": [], "quarantine": []}
    for item in items:
        stats["input_rows"] += 1
        if item.get("reason") is not None:
            stats["quarantined"] += 1
            _bump(stats["quarantine_reasons"], item["reason"])
            out["quarantine"].append({"item_id": item.get("item_id"), "reason": item["reason"],
                                      "row_json": item.get("row_json") or _late_row_json(item),
                                      "row_index": item.get("row_index")})
            continue
        stats["items"] += 1
        pairs = pair_rows(item, experts, tau, SCORE_PREFIX)
        for p in pairs:
            out[p["confidence"]].append(p)
        pair_stats(stats, pairs, experts)
        for name in experts:
            _bump(stats["expert_forward_rows"], name, item.get(f"{SCORED_PREFIX}{name}") or 0)
        stats["unique_responses"] += len(distinct_indices(item["responses"]))
        _bump(stats["captions"], "from_column" if "caption_new" not in item
              else "generated" if item["caption_new"] else "reused")
        stats["judge_cache_hits"] += item.get("judge_cached") or 0
    return out, stats


def write_outputs(batch: pa.Table | dict, *, run_dir: str, experts: Sequence[str], tau: int,
                  rows_per_file: int) -> pa.Table:
    """Ray Data UDF: write one batch's pair and quarantine rows, return one receipt per unit."""
    columns = as_columns(batch)
    names = list(columns)
    by_unit: dict[str, list[dict]] = {}
    for values in zip(*columns.values()):
        item = dict(zip(names, values))
        by_unit.setdefault(item["unit_id"], []).append(item)
    receipts = []
    for unit_id, items in by_unit.items():
        out, stats = _unit_outputs(items, experts, tau)
        files = _write_parts(out["high"], PAIR_SCHEMA, run_dir, "high", unit_id, rows_per_file)
        files += _write_parts(out["low"], PAIR_SCHEMA, run_dir, "low", unit_id, rows_per_file)
        files += _write_parts(out["quarantine"], QUARANTINE_SCHEMA, run_dir, "quarantine", unit_id, rows_per_file)
        receipts.append({"unit_id": unit_id, "rows": len(items), "files": json.dumps(files),
                         "stats": json.dumps(stats)})
    return pa.Table.from_pylist(receipts, schema=RECEIPT_SCHEMA)
