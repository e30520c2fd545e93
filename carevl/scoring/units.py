"""The light tasks of the scoring job: read a work unit into checked records, write the judged rows.

Kept apart from the judge actor's module so the workers that run them never import torch.
"""
from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from carevl import ledger
from carevl.config import InputLimits
from carevl.data.io import join, write_table
from carevl.scoring.rows import GROUP, PAIR, RESULT_SCHEMA, ROW_SCHEMA, normalize_row

OUTPUT_CLASSES = ("pairs", "groups", "quarantine")
OUTPUT_COLUMNS = {
    "pairs": ("row_index", "id", "label", "category", "p_a_ab", "p_a_ba", "p_a", "winner", "swap_consistent"),
    "groups": ("row_index", "id", "method", "k", "rewards", "ranking", "best_index", "candidate_status",
               "judgements"),
    "quarantine": ("row_index", "id", "reason", "row_json"),
}
RECEIPT_SCHEMA = pa.schema([("unit_id", pa.string()), ("rows", pa.int64()), ("files", pa.string()),
                            ("stats", pa.string())])


def read_unit(batch: pa.Table | dict, *, limits: InputLimits, method: str) -> pa.Table:
    """Ray Data task: the rows of one work unit as checked `ROW_SCHEMA` records."""
    units = batch.to_pylist() if isinstance(batch, pa.Table) else pa.table(batch).to_pylist()
    records = []
    for unit in units:
        local = "://" not in unit["file"]
        base_dir = os.path.dirname(os.path.abspath(unit["file"])) if local else None
        for offset, row in enumerate(ledger.read_unit_rows(unit)):
            records.append(normalize_row(row, unit["unit_id"], unit["first_global"] + offset, base_dir, limits,
                                         method))
    return pa.Table.from_pylist(records, schema=ROW_SCHEMA)


def unit_stats(table: pa.Table) -> dict[str, Any]:
    """A unit's counters (summed into summary.json) from its result rows."""
    rows = table.to_pylist()
    ok = [r for r in rows if r["reason"] is None]
    judgements = [j for r in ok if r["kind"] == GROUP for j in r["judgements"]]
    return {"rows": len(rows), "pairs": sum(r["kind"] == PAIR for r in ok),
            "groups": sum(r["kind"] == GROUP for r in ok), "quarantined": len(rows) - len(ok),
            "quarantine_reasons": dict(Counter(r["reason"] for r in rows if r["reason"] is not None)),
            "swap_consistent": sum(bool(r["swap_consistent"]) for r in ok if r["kind"] == PAIR),
            "judgements": 2 * sum(r["kind"] == PAIR for r in ok) + len(judgements),
            "failed_judgements": sum(j["status"] != "ok" for j in judgements),
            "rewards_none": sum(x is None for r in ok if r["kind"] == GROUP for x in r["rewards"])}


def write_scores(batch: pa.Table | dict, *, run_dir: str) -> pa.Table:
    """Ray Data task: stage each unit's rows of this batch as one file per output class; one receipt
    per unit touched (rows accounted for, files, counters)."""
    table = batch if isinstance(batch, pa.Table) else pa.table(batch)
    table = table.cast(RESULT_SCHEMA)
    receipts = []
    for unit_id in pc.unique(table["unit_id"]).to_pylist():
        part = table.filter(pc.equal(table["unit_id"], unit_id))
        quarantined = pc.invert(pc.is_null(part["reason"]))
        split = {"quarantine": part.filter(quarantined)}
        kept = part.filter(pc.is_null(part["reason"]))
        for cls, kind in (("pairs", PAIR), ("groups", GROUP)):
            split[cls] = kept.filter(pc.equal(kept["kind"], kind))
        files = []
        for cls, rows in split.items():
            if rows.num_rows:
                path = join(run_dir, ledger.STAGING_DIR, cls, f"{unit_id}-{uuid.uuid4().hex[:12]}.parquet")
                write_table(rows.select(list(OUTPUT_COLUMNS[cls])), path, "parquet")
                files.append({"class": cls, "path": path, "rows": rows.num_rows})
        receipts.append({"unit_id": unit_id, "rows": part.num_rows, "files": json.dumps(files),
                         "stats": json.dumps(unit_stats(part))})
    return pa.Table.from_pylist(receipts, schema=RECEIPT_SCHEMA)
