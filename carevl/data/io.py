"""Reading and writing tables as Parquet or JSONL, on local disk or any pyarrow filesystem.

Paths are plain local paths or URIs (`file:///...`, `s3://bucket/key`, `gs://bucket/key`); both are
resolved through `pyarrow.fs.FileSystem.from_uri`, so the same code reads a laptop folder and a bucket.
A dataset is one file or a folder of part files. Readers stream record batches; writers publish each
file atomically (write under a hidden temporary name, then rename), so a job killed mid-write never
leaves a file that looks complete.

JSONL conventions for item rows: binary columns (`image_bytes`) travel as base64 text, and an `image`
key holding a path, URL or data URL is read as `image_path`.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import posixpath
import uuid
from typing import Any, Iterable, Iterator, Literal

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from carevl.errors import ReasonError

Format = Literal["parquet", "jsonl"]
FORMATS: tuple[str, ...] = ("parquet", "jsonl")
_EXTENSIONS = {"parquet": (".parquet",), "jsonl": (".jsonl", ".json", ".ndjson")}
_READ_CHUNK = 1 << 20


class DataFormatError(ValueError):
    """A file or row that cannot be read as expected; the message names the file (and line)."""


class RowError(ReasonError):
    """One row that does not fit the schema; `reason` is a short code for a quarantine row."""


# ---------------------------------------------------------------------------------------------- paths

def resolve(uri: str, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or URI; an explicit `filesystem` takes `uri` as is."""
    if filesystem is not None:
        return filesystem, uri
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def _with_scheme(original: str, path: str, filesystem: pafs.FileSystem | None) -> str:
    """Give a path found inside a filesystem the same form (scheme or not) as the user's URI."""
    if filesystem is None and "://" in original:
        return f"{original.split('://', 1)[0]}://{path}"
    return path


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI with forward slashes."""
    return posixpath.join(uri, *parts) if "://" in uri else os.path.join(uri, *parts)


def detect_format(path: str) -> Format:
    """'parquet' or 'jsonl' from a file name's extension."""
    lower = path.lower()
    for fmt, exts in _EXTENSIONS.items():
        if lower.endswith(exts):
            return fmt  # type: ignore[return-value]
    raise DataFormatError(f"{path}: cannot tell the format from the extension (want .parquet or .jsonl)")


def _is_visible(path: str) -> bool:
    # Temporary files of an unfinished write and markers like _SUCCESS start with '.' or '_'.
    return not posixpath.basename(path).startswith((".", "_"))


def list_data_files(uri: str, format: Format | None = None,
                    filesystem: pafs.FileSystem | None = None) -> list[str]:
    """The data files of a dataset (one file, or a folder searched recursively), sorted.

    Returned paths keep the URI scheme of `uri`, so they can be handed to `ray.data.read_parquet` /
    `read_json` directly. Hidden and temporary files are skipped. Raises FileNotFoundError for a
    missing path and DataFormatError for a folder with no data files or mixed formats.
    """
    fs, path = resolve(uri, filesystem)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such file or folder: {uri}")
    if info.type == pafs.FileType.File:
        if format is None:
            detect_format(path)
        return [_with_scheme(uri, path, filesystem)]
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and _is_visible(i.path))
    wanted = _EXTENSIONS[format] if format else sum(_EXTENSIONS.values(), ())
    files = [f for f in files if f.lower().endswith(wanted)]
    if not files:
        raise DataFormatError(f"{uri}: no .parquet or .jsonl files found")
    if format is None and len({detect_format(f) for f in files}) > 1:
        raise DataFormatError(f"{uri}: mixes Parquet and JSONL files; pass format explicitly")
    return [_with_scheme(uri, f, filesystem) for f in files]


def dataset_format(uri: str, filesystem: pafs.FileSystem | None = None) -> Format:
    """The format of a dataset (file or folder)."""
    return detect_format(list_data_files(uri, filesystem=filesystem)[0])


# ------------------------------------------------------------------------------------ row conversion

def _decode_base64(value: str, column: str) -> bytes:
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RowError("bad_base64", f"column '{column}' is not valid base64") from None


def normalize_row(row: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """Map one JSON object onto `schema`: `image` -> `image_path`, base64 text -> bytes in binary
    columns, missing columns -> None. Keys the schema does not know are left out.

    Raises RowError (reason `ambiguous_image` or `bad_base64`) for a row that cannot be mapped.
    """
    if "image" in row and "image_path" in schema.names:
        if row.get("image_path") not in (None, ""):
            raise RowError("ambiguous_image", "row has both 'image' and 'image_path'")
        row = {**row, "image_path": row["image"]}
    out: dict[str, Any] = {}
    for field in schema:
        value = row.get(field.name)
        if isinstance(value, str) and pa.types.is_binary(field.type):
            value = _decode_base64(value, field.name)
        out[field.name] = value
    return out


def _fits(value: Any, typ: pa.DataType) -> bool:
    """Whether a JSON-like value has the arrow type's Python shape (arrow itself would coerce e.g. a
    string into a list of characters)."""
    if value is None:
        return True
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return isinstance(value, str)
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return isinstance(value, (bytes, bytearray, memoryview))
    if pa.types.is_boolean(typ):
        return isinstance(value, bool)
    if pa.types.is_integer(typ):
        return isinstance(value, int) and not isinstance(value, bool)
    if pa.types.is_floating(typ):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return isinstance(value, (list, tuple)) and all(_fits(v, typ.value_type) for v in value)
    if pa.types.is_struct(typ):
        return isinstance(value, dict) and all(_fits(value.get(f.name), f.type) for f in typ)
    return True


def check_row_types(row: dict[str, Any], schema: pa.Schema) -> None:
    """Raise RowError('wrong_type') naming the first column whose value has the wrong type."""
    for field in schema:
        if not _fits(row.get(field.name), field.type):
            raise RowError("wrong_type", f"column '{field.name}' should be {field.type}, "
                                         f"got {type(row.get(field.name)).__name__}")


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """A table from already-normalised rows; a value of the wrong type raises RowError."""
    for row in rows:
        check_row_types(row, schema)
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise RowError("wrong_type", str(exc)) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def row_to_json(row: dict[str, Any]) -> str:
    """One JSONL line (without newline); bytes become base64 text."""
    return json.dumps(row, ensure_ascii=False, default=_json_default)


# ------------------------------------------------------------------------------------------- readers

def iter_lines(fs: pafs.FileSystem, path: str, start: int = 0,
               stop: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line without newline) for each line of a file that begins in [start, stop),
    streamed in chunks. `start` must be 0 or the offset of a line start (e.g. one yielded earlier),
    which lets a job split a large JSONL file into byte ranges and resume from one."""
    offset, tail = start, b""
    with fs.open_input_file(path) as stream:
        if start:
            stream.seek(start)
        while stop is None or offset < stop:
            chunk = stream.read(_READ_CHUNK)
            if not chunk:
                break
            parts = (tail + chunk).split(b"\n")
            tail = parts.pop()
            for line in parts:
                if stop is not None and offset >= stop:
                    return
                yield offset, line
                offset += len(line) + 1
    if tail and (stop is None or offset < stop):
        yield offset, tail


def iter_jsonl_rows(uri: str, *, filesystem: pafs.FileSystem | None = None,
                    bad_lines: Literal["raise", "mark"] = "raise") -> Iterator[dict[str, Any]]:
    """Stream the JSON objects of a JSONL file or folder; blank lines are skipped.

    A line that is not a JSON object raises DataFormatError naming file and line, or with
    `bad_lines="mark"` is yielded as `{"_error": reason, "_source": "file:line", "_raw": text}` so a
    job can quarantine it instead of losing it.
    """
    for file in list_data_files(uri, "jsonl", filesystem):
        fs, path = resolve(file, filesystem)
        for line_no, (_, raw) in enumerate(iter_lines(fs, path), start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                error = None if isinstance(row, dict) else "not_an_object"
            except (json.JSONDecodeError, UnicodeDecodeError):
                row, error = None, "invalid_json"
            if error is None:
                yield row
            elif bad_lines == "mark":
                yield {"_error": error, "_source": f"{file}:{line_no}",
                       "_raw": raw.decode("utf-8", errors="replace")}
            else:
                raise DataFormatError(f"{file}:{line_no}: {error}")


def iter_batches(uri: str, format: Format | None = None, *, schema: pa.Schema | None = None,
                 batch_size: int = 1024, columns: list[str] | None = None,
                 filesystem: pafs.FileSystem | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a dataset as record batches of at most `batch_size` rows, file by file.

    With `schema`, every batch is conformed to it (JSONL rows normalised by `normalize_row`, Parquet
    columns reordered, cast and missing nullable columns filled with nulls). A row that does not fit
    raises DataFormatError naming the file.
    """
    files = list_data_files(uri, format, filesystem)
    fmt = format or detect_format(files[0])
    for file in files:
        fs, path = resolve(file, filesystem)
        if fmt == "parquet":
            with fs.open_input_file(path) as handle:
                reader = pq.ParquetFile(handle)
                for batch in reader.iter_batches(batch_size=batch_size, columns=columns):
                    yield conform(batch, schema, file) if schema is not None else batch
        else:
            yield from _jsonl_batches(file, schema, batch_size, columns, filesystem)


def _jsonl_batches(file: str, schema: pa.Schema | None, batch_size: int, columns: list[str] | None,
                   filesystem: pafs.FileSystem | None) -> Iterator[pa.RecordBatch]:
    def to_batch(rows: list[dict]) -> pa.RecordBatch:
        try:
            if schema is not None:
                table = rows_to_table([normalize_row(r, schema) for r in rows], schema)
            else:
                table = pa.Table.from_pylist(rows)
        except (RowError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataFormatError(f"{file}: {exc}") from None
        if columns is not None:
            table = table.select(columns)
        return table.combine_chunks().to_batches()[0]

    rows: list[dict] = []
    for row in iter_jsonl_rows(file, filesystem=filesystem):
        rows.append(row)
        if len(rows) >= batch_size:
            yield to_batch(rows)
            rows = []
    if rows:
        yield to_batch(rows)


def conform(batch: pa.RecordBatch, schema: pa.Schema, source: str = "<batch>") -> pa.RecordBatch:
    """Reorder and cast columns to `schema`, adding missing nullable columns as nulls."""
    arrays = []
    for field in schema:
        if field.name in batch.schema.names:
            column = batch.column(field.name)
            try:
                arrays.append(column.cast(field.type) if column.type != field.type else column)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataFormatError(f"{source}: column '{field.name}': {exc}") from None
        elif field.nullable:
            arrays.append(pa.nulls(batch.num_rows, field.type))
        else:
            raise DataFormatError(f"{source}: required column '{field.name}' is missing")
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def read_table(uri: str, format: Format | None = None, *, schema: pa.Schema | None = None,
               filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """The whole dataset as one table; for small data (tests, summaries). Prefer `iter_batches`."""
    batches = list(iter_batches(uri, format, schema=schema, filesystem=filesystem))
    if not batches:
        return schema.empty_table() if schema is not None else pa.table({})
    return pa.Table.from_batches(batches, schema=schema or batches[0].schema)


# ------------------------------------------------------------------------------------------- writers

def _write_stream(batches: Iterable[pa.RecordBatch | pa.Table], schema: pa.Schema, fs: pafs.FileSystem,
                  path: str, fmt: Format) -> int:
    rows = 0
    with fs.open_output_stream(path) as out:
        if fmt == "parquet":
            with pq.ParquetWriter(out, schema) as writer:
                for batch in batches:     # each batch becomes (at least) one row group
                    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                    writer.write_table(table)
                    rows += table.num_rows
            return rows
        for batch in batches:
            for chunk in (batch.to_batches(max_chunksize=1024) if isinstance(batch, pa.Table) else [batch]):
                out.write("".join(row_to_json(r) + "\n" for r in chunk.to_pylist()).encode("utf-8"))
                rows += chunk.num_rows
    return rows


def write_batches(batches: Iterable[pa.RecordBatch | pa.Table], uri: str, schema: pa.Schema,
                  format: Format | None = None, *, filesystem: pafs.FileSystem | None = None) -> int:
    """Stream batches into one file, published atomically: written under a hidden temporary name in the
    same folder, then renamed. Only one batch is held at a time. Returns the number of rows.

    Parent folders are created. On object stores the rename is a copy; readers skip hidden names
    either way, so a killed write never shows up as data.
    """
    fmt = format or detect_format(uri)
    fs, path = resolve(uri, filesystem)
    parent, name = posixpath.split(path)
    fs.create_dir(parent, recursive=True)
    tmp = posixpath.join(parent, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        rows = _write_stream(batches, schema, fs, tmp, fmt)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise
    return rows


def write_table(table: pa.Table, uri: str, format: Format | None = None, *,
                filesystem: pafs.FileSystem | None = None) -> str:
    """Write one table as one file, atomically (see `write_batches`); returns `uri`."""
    write_batches([table], uri, table.schema, format, filesystem=filesystem)
    return uri


def remove_temp_files(out_dir: str, filesystem: pafs.FileSystem | None = None) -> int:
    """Delete temporary files a killed writer left in `out_dir` (not recursive); returns how many.

    Only call this when no other writer is active in the folder.
    """
    fs, path = resolve(out_dir, filesystem)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return 0
    stale = [i.path for i in fs.get_file_info(pafs.FileSelector(path))
             if i.type == pafs.FileType.File and i.base_name.startswith(".") and ".tmp-" in i.base_name]
    for tmp in stale:
        fs.delete_file(tmp)
    return len(stale)


def shard_name(index: int, format: Format, prefix: str = "part") -> str:
    """File name of shard `index`: part-00000.parquet, part-00001.jsonl, ..."""
    return f"{prefix}-{index:05d}{_EXTENSIONS[format][0]}"


def file_exists(uri: str, filesystem: pafs.FileSystem | None = None) -> bool:
    fs, path = resolve(uri, filesystem)
    return fs.get_file_info(path).type == pafs.FileType.File
