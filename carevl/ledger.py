"""The run ledger: what every batch stage records in its output folder so that a re-run is safe.

Curation, refinement, evaluation, SFT/DPO and the pipeline all keep their outputs the same way:

- a **run record** (`_run.json`) holding the run's fingerprint: the input's fingerprint (its files'
  names, sizes and modification times), the stage's effective config, and the code version. A re-run
  with the same fingerprint resumes; any difference is refused with a message naming what changed and
  how to start afresh, so outputs of two different runs never mix;
- **work units** (rows [start, stop) of one input file, planned deterministically): a unit's files are
  written under `_staging/` and published, then its manifest is written to `_units/` (the commit
  point). A re-run skips units with a manifest and deletes whatever a killed run left of the others;
- a **completion mark** in the run record for stages that finish as a whole (training, evaluation,
  pipeline stages).
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import pyarrow.fs as pafs
import pyarrow.parquet as pq

import carevl
from carevl.config import REPO_ROOT
from carevl.data.io import detect_format, join, list_data_files, resolve

RUN_RECORD = "_run.json"
UNITS_DIR = "_units"
STAGING_DIR = "_staging"


class StaleRunError(ValueError):
    """The output folder holds a run made with other input, config or code."""


# ------------------------------------------------------------------------------------------ small files

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


def _is_file(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


# ------------------------------------------------------------------------------------------ fingerprints

def absolute(uri: str) -> str:
    """A local path made absolute (a URI is kept as is), so two spellings of one input compare equal."""
    return uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))


def input_fingerprint(uri: str) -> dict[str, Any]:
    """What identifies an input file or folder without reading it: its files' relative names, sizes and
    modification times, digested. Rewriting, adding or removing a file changes it."""
    uri = absolute(str(uri))
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input not found: {uri}")
    infos = [info] if info.type == pafs.FileType.File else [
        i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File
        and not any(part.startswith((".", "_")) for part in posixpath.relpath(i.path, path).split("/"))]
    listing = sorted((posixpath.relpath(i.path, path) if i.path != path else i.base_name, i.size,
                      i.mtime_ns or 0) for i in infos)
    digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    return {"uri": uri, "files": len(listing), "bytes": sum(s for _, s, _ in listing), "digest": digest}


def code_version() -> str:
    """The package version plus the git commit of the checkout it runs from (when there is one)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{carevl.__version__}+{commit}" if commit else carevl.__version__


def run_fingerprint(inputs: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint of one run: input fingerprints, the stage's effective config, the code version."""
    return json.loads(json.dumps({"input": inputs, "config": config, "code": code_version()}, default=str))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Readable `key: old -> new` lines for every leaf that differs between two fingerprints."""
    old, new = _flatten(before), _flatten(after)
    lines = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            shown = [json.dumps(v, default=str)[:80] for v in (old.get(key, "<unset>"), new.get(key, "<unset>"))]
            lines.append(f"{key}: {shown[0]} -> {shown[1]}")
    return lines


# ------------------------------------------------------------------------------------------ work units

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


def plan_units(files: Sequence[str], rows: Sequence[int], unit_rows: int,
               byte_bounds: Sequence[Sequence[int]] | None = None) -> list[WorkUnit]:
    """The work units of all files, in file order: at most `unit_rows` rows each.

    `byte_bounds[f]` lists the byte offset of every unit start in file f plus its end (JSONL files).
    """
    units, first_global = [], 0
    for f_index, (file, n) in enumerate(zip(files, rows)):
        jsonl = detect_format(file) == "jsonl"
        for k, start in enumerate(range(0, n, unit_rows)):
            b0, b1 = (byte_bounds[f_index][k], byte_bounds[f_index][k + 1]) if byte_bounds and jsonl else (0, 0)
            units.append(WorkUnit(f"u{f_index:05d}-{start:010d}", file, "jsonl" if jsonl else "parquet", start,
                                  min(start + unit_rows, n), first_global + start, b0, b1))
        first_global += n
    return units


def parquet_units(input_uri: str, unit_rows: int) -> list[WorkUnit]:
    """Work units over the Parquet files of `input_uri` (row counts from file metadata)."""
    files = list_data_files(input_uri, "parquet")
    counts = []
    for file in files:
        fs, path = resolve(file)
        with fs.open_input_file(path) as handle:
            counts.append(pq.ParquetFile(handle).metadata.num_rows)
    return plan_units(files, counts, unit_rows)


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


# ------------------------------------------------------------------------------------------ the ledger

class RunLedger:
    """The run record and unit manifests of one output folder (local path or URI)."""

    def __init__(self, root: str, stage: str, record: str = RUN_RECORD):
        self.root, self.stage = root, stage
        self.record_uri = join(root, record)

    def record(self) -> dict[str, Any] | None:
        return json.loads(read_text(self.record_uri)) if _is_file(self.record_uri) else None

    def claim(self, fingerprint: dict[str, Any]) -> bool:
        """Take the folder for this run; True when it resumes an earlier run with the same fingerprint.

        Raises StaleRunError naming every difference when the folder holds another run.
        """
        previous = self.record()
        if previous is not None:
            diff = changes(previous.get("fingerprint", {}), fingerprint)
            if diff:
                raise StaleRunError(
                    f"{self.root} holds a {previous.get('stage', self.stage)} run made with other settings ("
                    + "; ".join(diff) + f"). To start afresh, delete {self.root} or choose another output "
                    "folder; to continue that run, use its input, config and code again")
            return True
        fs, path = resolve(self.root)
        fs.create_dir(path, recursive=True)
        self._write({"stage": self.stage, "fingerprint": fingerprint, "complete": False})
        return False

    def _write(self, record: dict[str, Any]) -> None:
        write_text_atomic(self.record_uri, json.dumps(record, indent=1, default=str))

    def is_complete(self, fingerprint: dict[str, Any] | None = None) -> bool:
        """True when the folder's run finished (and, if given, has this fingerprint)."""
        record = self.record()
        return bool(record and record.get("complete")
                    and (fingerprint is None or not changes(record.get("fingerprint", {}), fingerprint)))

    def mark_complete(self, summary: dict[str, Any] | None = None) -> None:
        """Record that the run finished (written last by the stage)."""
        record = self.record() or {"stage": self.stage, "fingerprint": {}}
        self._write({**record, "complete": True, "summary": summary})

    # ----------------------------------------------------------------------------------- units

    def staged(self, cls: str, name: str) -> str:
        """Where a unit's file of output class `cls` is written before it is published."""
        return join(self.root, STAGING_DIR, cls, name)

    def _list(self, folder: str) -> list[pafs.FileInfo]:
        fs, path = resolve(join(self.root, folder))
        if fs.get_file_info(path).type != pafs.FileType.Directory:
            return []
        return [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=False))
                if i.type == pafs.FileType.File]

    def _uri(self, path: str) -> str:
        return f"{self.root.split('://', 1)[0]}://{path}" if "://" in self.root else path

    def completed_units(self) -> dict[str, dict[str, Any]]:
        """unit_id -> manifest of every unit a previous run finished."""
        done = {}
        for info in self._list(UNITS_DIR):
            if info.base_name.endswith(".json") and not info.base_name.startswith("."):
                manifest = json.loads(read_text(self._uri(info.path)))
                done[manifest["unit_id"]] = manifest
        return done

    def remove_unfinished(self, done: set[str], classes: Sequence[str]) -> int:
        """Delete everything staged, and published files of units without a manifest (a killed run's
        leftovers); staged files of finished units were moved out already, so what remains is stale."""
        fs, _ = resolve(self.root)
        removed = 0
        for folder in tuple(classes) + tuple(posixpath.join(STAGING_DIR, c) for c in classes):
            staged = folder.startswith(STAGING_DIR)
            for info in self._list(folder):
                unit_id = info.base_name.split(".", 1)[0].rsplit("-", 1)[0]
                if staged or info.base_name.startswith(".") or unit_id not in done:
                    fs.delete_file(info.path)
                    removed += 1
        return removed

    def publish(self, unit: WorkUnit, files: list[dict[str, Any]], stats: dict[str, Any]) -> dict[str, Any]:
        """Move a finished unit's staged files ({"class", "path", "rows"}) into place, then write its
        manifest (the commit point)."""
        fs, _ = resolve(self.root)
        for cls in {f["class"] for f in files}:
            fs.create_dir(resolve(join(self.root, cls))[1], recursive=True)
        published = []
        for f in files:
            target = join(self.root, f["class"], posixpath.basename(f["path"]))
            fs.move(resolve(f["path"])[1], resolve(target)[1])
            published.append({**f, "path": target})
        manifest = {"unit_id": unit.unit_id, "file": unit.file, "start": unit.start, "stop": unit.stop,
                    "rows": unit.rows, "files": published, "stats": stats}
        write_text_atomic(join(self.root, UNITS_DIR, f"{unit.unit_id}.json"), json.dumps(manifest))
        return manifest


@dataclass
class UnitProgress:
    """A streaming job driver's view of its work units: the written pieces of each unfinished unit,
    the units finished, the rows seen, and when progress was last logged.

    The writer's batches do not line up with units, so a unit arrives in pieces: one receipt per unit
    a writer call touched ({unit_id, rows, files (JSON list), stats (JSON)}). A unit is published
    (files moved into place, manifest written) as soon as all its rows are in.
    """

    units: dict[str, WorkUnit]
    interval_s: float
    start: float = field(default_factory=time.monotonic)
    last_log: float = field(default_factory=time.monotonic)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    finished: int = 0
    rows: int = 0

    def add(self, led: RunLedger, receipt: dict[str, Any], empty_stats: Callable[[], Any],
            merge_stats: Callable[[Any, dict[str, Any]], None]) -> dict[str, Any]:
        """Take one receipt, publish its unit if this completed it; returns the receipt's counters."""
        unit = self.units[receipt["unit_id"]]
        stats = json.loads(receipt["stats"])
        self.rows += receipt["rows"]
        slot = self.pending.setdefault(unit.unit_id, {"rows": 0, "files": [], "stats": empty_stats()})
        slot["rows"] += receipt["rows"]
        slot["files"] += json.loads(receipt["files"])
        merge_stats(slot["stats"], stats)
        if slot["rows"] > unit.rows:
            raise RuntimeError(f"unit {unit.unit_id}: {slot['rows']} rows written for {unit.rows} input rows")
        if slot["rows"] == unit.rows:
            led.publish(unit, slot["files"], slot["stats"])
            del self.pending[unit.unit_id]
            self.finished += 1
        return stats

    def log_due(self) -> float | None:
        """Seconds since the start when a progress line is due (every `interval_s`), else None."""
        now = time.monotonic()
        if now - self.last_log < self.interval_s:
            return None
        self.last_log = now
        return now - self.start
