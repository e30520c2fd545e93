"""Curation's input scan: row counts, unit boundaries, item-id hashes and items without responses.

The input (Parquet or JSONL files, local or cloud) is cut into work units of at most `unit_items` rows
per file, in file order (`carevl.ledger`), so the same input and setting always give the same units.
Staging, publishing, manifests and resume are the run ledger's (`carevl.ledger.RunLedger`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from carevl.curation.validate import id_hash
from carevl.data.io import detect_format, list_data_files, resolve
from carevl.ledger import WorkUnit
from carevl.ledger import plan_units as ledger_plan_units

OUTPUT_CLASSES = ("high", "low", "quarantine")
_CHUNK = 1 << 20


@dataclass
class FileScan:
    """One file's row count, unit boundaries (row, byte offset) and the id hash of each row."""

    rows: int
    boundaries: list[tuple[int, int]]
    hashes: np.ndarray        # (rows_with_string_id,) int64
    hash_rows: np.ndarray     # (rows_with_string_id,) row index within the file
    without_responses: int = 0  # rows whose `responses` is missing or empty (they need candidates)


def _jsonl_lines(fs: pafs.FileSystem, path: str) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) for every line of a file, streamed."""
    offset, tail = 0, b""
    with fs.open_input_stream(path) as stream:
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                break
            parts = (tail + chunk).split(b"\n")
            tail = parts.pop()
            for line in parts:
                yield offset, line
                offset += len(line) + 1
    if tail:
        yield offset, tail


def _item_id_of(line: bytes) -> tuple[Any, bool]:
    """(item_id, needs candidates) of one JSONL line. A line that is not a JSON object is quarantined
    by validation, so it never needs candidates (nor starts a candidate pool)."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, False
    return (row.get("item_id"), not row.get("responses")) if isinstance(row, dict) else (None, False)


def scan_file(file: str, unit_items: int) -> FileScan:
    """Count rows, find unit boundaries and hash item ids of one file (reads only what it needs)."""
    fs, path = resolve(file)
    hashes, hash_rows, boundaries = [], [], []
    if detect_format(path) == "parquet":
        with fs.open_input_file(path) as handle:
            pf = pq.ParquetFile(handle)
            rows = pf.metadata.num_rows
            boundaries = [(r, 0) for r in range(0, rows, unit_items)]
            without = 0
            if "responses" in pf.schema_arrow.names:
                for batch in pf.iter_batches(columns=["responses"], batch_size=65536):
                    column = batch.column(0)
                    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
                        lengths = pc.fill_null(pc.list_value_length(column), 0)
                        without += int(pc.sum(pc.equal(lengths, 0)).as_py() or 0)
            else:
                without = rows
            if "item_id" in pf.schema_arrow.names:
                row = 0
                for batch in pf.iter_batches(columns=["item_id"], batch_size=65536):
                    for value in batch.column(0).to_pylist():
                        if isinstance(value, str):
                            hashes.append(id_hash(value))
                            hash_rows.append(row)
                        row += 1
        return FileScan(rows, boundaries, np.asarray(hashes, np.int64), np.asarray(hash_rows, np.int64), without)
    rows = without = 0
    for offset, line in _jsonl_lines(fs, path):
        if not line.strip():
            continue
        if rows % unit_items == 0:
            boundaries.append((rows, offset))
        value, needs_candidates = _item_id_of(line)
        without += int(needs_candidates)
        if isinstance(value, str):
            hashes.append(id_hash(value))
            hash_rows.append(rows)
        rows += 1
    size = fs.get_file_info(path).size
    boundaries.append((rows, size))
    return FileScan(rows, boundaries, np.asarray(hashes, np.int64), np.asarray(hash_rows, np.int64), without)


def plan_units(files: list[str], scans: list[FileScan], unit_items: int) -> list[WorkUnit]:
    """The work units of all files, in order (JSONL units carry their byte ranges)."""
    bounds = [[offset for _, offset in scan.boundaries] for scan in scans]
    return ledger_plan_units(files, [scan.rows for scan in scans], unit_items, bounds)


def duplicate_first_rows(scans: list[FileScan]) -> dict[int, int]:
    """For each item-id hash seen more than once: the global index of its first occurrence."""
    offsets = np.cumsum([0] + [s.rows for s in scans[:-1]]) if scans else []
    hashes = np.concatenate([s.hashes for s in scans]) if scans else np.zeros(0, np.int64)
    rows = np.concatenate([s.hash_rows + off for s, off in zip(scans, offsets)]) if scans else hashes
    if hashes.size == 0:
        return {}
    order = np.lexsort((rows, hashes))  # by hash, then by global row
    hashes, rows = hashes[order], rows[order]
    first = np.ones(hashes.size, bool)
    first[1:] = hashes[1:] != hashes[:-1]
    counts = np.diff(np.append(np.flatnonzero(first), hashes.size))
    repeated = first.copy()
    repeated[first] = counts > 1
    return {int(h): int(r) for h, r in zip(hashes[repeated], rows[repeated])}


def list_input_files(uri: str) -> list[str]:
    return list_data_files(uri)
