"""Deterministic work units: the grain of reading, output files and resume.

The input (Parquet or JSONL files, local or cloud) is cut into units of at most `unit_items` rows per
file, in file order, so the same input and setting always give the same units. A unit's outputs are
staged under `_staging/` and published, together with a manifest in `_units/`, only once every one of
its rows is accounted for. A re-run skips units that have a manifest and deletes whatever a killed run
left of the others before redoing them, so each input row ends in exactly one output row set.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from carevl.curation.validate import id_hash
from carevl.data.io import detect_format, join, list_data_files, resolve

UNITS_DIR = "_units"
STAGING_DIR = "_staging"
OUTPUT_CLASSES = ("high", "low", "quarantine")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WorkUnit:
    """Rows [start, stop) of one input file; JSONL units also carry their byte range."""

    unit_id: str
    file: str
    format: str
    start: int
    stop: int
    first_global: int          # global index (over all files, in order) of row `start`
    byte_start: int = 0
    byte_stop: int = 0

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _item_id_of(line: bytes) -> tuple[Any, Any]:
    """(item_id, responses) of one JSONL line; (None, None) when it is not a JSON object."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, None
    return (row.get("item_id"), row.get("responses")) if isinstance(row, dict) else (None, None)


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
        value, responses = _item_id_of(line)
        without += int(not responses)
        if isinstance(value, str):
            hashes.append(id_hash(value))
            hash_rows.append(rows)
        rows += 1
    size = fs.get_file_info(path).size
    boundaries.append((rows, size))
    return FileScan(rows, boundaries, np.asarray(hashes, np.int64), np.asarray(hash_rows, np.int64), without)


def plan_units(files: list[str], scans: list[FileScan], unit_items: int) -> list[WorkUnit]:
    """The work units of all files, in order."""
    units, first_global = [], 0
    for f_index, (file, scan) in enumerate(zip(files, scans)):
        fmt = detect_format(file)
        for start in range(0, scan.rows, unit_items):
            stop = min(start + unit_items, scan.rows)
            byte_start = byte_stop = 0
            if fmt == "jsonl":
                k = start // unit_items
                byte_start, byte_stop = scan.boundaries[k][1], scan.boundaries[k + 1][1]
            units.append(WorkUnit(f"u{f_index:05d}-{start:010d}", file, fmt, start, stop,
                                  first_global + start, byte_start, byte_stop))
        first_global += scan.rows
    return units


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


# ------------------------------------------------------------------------------------------- reading

def read_unit_rows(unit: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw rows of one unit as dicts; a JSONL line that does not parse becomes an `_error` row."""
    fs, path = resolve(unit["file"])
    if unit["format"] == "parquet":
        with fs.open_input_file(path) as handle:
            pf = pq.ParquetFile(handle)
            groups, first, row = [], None, 0
            for g in range(pf.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if row + n > unit["start"] and row < unit["stop"]:
                    groups.append(g)
                    first = row if first is None else first
                row += n
            table = pf.read_row_groups(groups)
        return table.slice(unit["start"] - first, unit["stop"] - unit["start"]).to_pylist()
    with fs.open_input_file(path) as handle:
        handle.seek(unit["byte_start"])
        data = handle.read(unit["byte_stop"] - unit["byte_start"])
    rows = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append(row if isinstance(row, dict) else
                        {"_error": "not_an_object", "_raw": line.decode("utf-8", "replace")})
        except (json.JSONDecodeError, UnicodeDecodeError):
            rows.append({"_error": "invalid_json", "_raw": line.decode("utf-8", "replace")})
    if len(rows) != unit["stop"] - unit["start"]:
        raise RuntimeError(f"{unit['file']}: unit {unit['unit_id']} expected {unit['stop'] - unit['start']} "
                           f"rows, read {len(rows)}; the file changed since it was planned")
    return rows


# ------------------------------------------------------------------------------- manifests and resume

def write_text_atomic(uri: str, text: str) -> None:
    """Write a small text file under a hidden temporary name, then rename it into place."""
    fs, path = resolve(uri)
    parent, name = posixpath.split(path)
    fs.create_dir(parent, recursive=True)
    tmp = posixpath.join(parent, f".{name}.tmp")
    with fs.open_output_stream(tmp) as out:
        out.write(text.encode("utf-8"))
    fs.move(tmp, path)


def read_text(uri: str) -> str:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read().decode("utf-8")


def _list(run_dir: str, folder: str) -> list[pafs.FileInfo]:
    fs, path = resolve(join(run_dir, folder))
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    return [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=False)) if i.type == pafs.FileType.File]


def completed_units(run_dir: str) -> dict[str, dict[str, Any]]:
    """unit_id -> manifest of every unit a previous run finished."""
    done = {}
    for info in _list(run_dir, UNITS_DIR):
        if info.base_name.endswith(".json") and not info.base_name.startswith("."):
            manifest = json.loads(read_text(_with_scheme(run_dir, info.path)))
            done[manifest["unit_id"]] = manifest
    return done


def _with_scheme(run_dir: str, path: str) -> str:
    return f"{run_dir.split('://', 1)[0]}://{path}" if "://" in run_dir else path


def remove_unfinished(run_dir: str, done: set[str]) -> int:
    """Delete everything staged, and published files of units without a manifest (a killed run's
    leftovers); staged files of finished units were moved out already, so what remains is stale."""
    fs, _ = resolve(run_dir)
    removed = 0
    for folder in OUTPUT_CLASSES + tuple(posixpath.join(STAGING_DIR, c) for c in OUTPUT_CLASSES):
        staged = folder.startswith(STAGING_DIR)
        for info in _list(run_dir, folder):
            unit_id = info.base_name.split(".", 1)[0].rsplit("-", 1)[0]
            if staged or info.base_name.startswith(".") or unit_id not in done:
                fs.delete_file(info.path)
                removed += 1
    return removed


def publish_unit(run_dir: str, unit: WorkUnit, files: list[dict[str, Any]], stats: dict[str, Any]) -> dict:
    """Move a finished unit's staged files into place, then write its manifest (the commit point)."""
    fs, _ = resolve(run_dir)
    for cls in {f["class"] for f in files}:
        fs.create_dir(resolve(join(run_dir, cls))[1], recursive=True)
    published = []
    for f in files:
        target = join(run_dir, f["class"], posixpath.basename(f["path"]))
        fs.move(resolve(f["path"])[1], resolve(target)[1])
        published.append({**f, "path": target})
    manifest = {"unit_id": unit.unit_id, "file": unit.file, "start": unit.start, "stop": unit.stop,
                "rows": unit.rows, "files": published, "stats": stats}
    write_text_atomic(join(run_dir, UNITS_DIR, f"{unit.unit_id}.json"), json.dumps(manifest))
    return manifest
