"""Parquet/JSONL round trips, URIs, atomic shards and row normalisation."""
from __future__ import annotations

import base64
import json

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from carevl.data import io as dio
from carevl.schema import ITEM_SCHEMA


def _write_rows(rows: list[dict], out_dir: str, schema, rows_per_file: int, fmt: str = "parquet",
                filesystem=None) -> list[str]:
    """Numbered part files of `rows_per_file` rows each, written with the atomic single-file writer."""
    files = []
    for k, start in enumerate(range(0, len(rows), rows_per_file)):
        table = pa.Table.from_pylist(rows[start:start + rows_per_file], schema=schema)
        files.append(dio.write_table(table, dio.join(out_dir, dio.shard_name(k, fmt)), filesystem=filesystem))
    return files


def _rows(n: int) -> list[dict]:
    return [{"item_id": f"i{i}", "image_path": None, "image_bytes": bytes([i % 256, 0, 255]),
             "question": f"q{i} é", "responses": ["a", f"b{i}"], "response_models": ["m1", "m2"],
             "judgements": [{"a": 0, "b": 1, "choice": "A", "explanation": "because"}],
             "gold_scores": [1.0, 0.0], "category": "counting", "caption": None} for i in range(n)]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
@pytest.mark.parametrize("as_uri", [False, True])
def test_round_trip_local_and_file_uri(tmp_path, fmt, as_uri):
    out = ("file://" if as_uri else "") + str(tmp_path / "ds")
    files = _write_rows(_rows(25), out, ITEM_SCHEMA, rows_per_file=10, fmt=fmt)
    assert len(files) == 3 and all(f.startswith("file://") == as_uri for f in files)
    assert dio.list_data_files(out) == files
    table = dio.read_table(out, schema=ITEM_SCHEMA)
    assert table.schema == ITEM_SCHEMA
    assert table.to_pylist() == _rows(25)
    batches = list(dio.iter_batches(out, schema=ITEM_SCHEMA, batch_size=4))
    assert max(b.num_rows for b in batches) == 4 and sum(b.num_rows for b in batches) == 25


def test_jsonl_stores_bytes_as_base64(tmp_path):
    path = str(tmp_path / "x.jsonl")
    dio.write_table(pa.Table.from_pylist(_rows(1), schema=ITEM_SCHEMA), path)
    line = json.loads(open(path).readline())
    assert base64.b64decode(line["image_bytes"]) == bytes([0, 0, 255])


def test_jsonl_item_normalisation(tmp_path):
    path = tmp_path / "items.jsonl"
    b64 = base64.b64encode(b"\x89PNGxx").decode()
    path.write_text(
        json.dumps({"item_id": "1", "image": "http://x/y.png", "question": "q", "extra": 5}) + "\n\n"
        + json.dumps({"item_id": "2", "image_bytes": b64, "question": "q"}) + "\n"
        + json.dumps({"item_id": "3", "image": f"data:image/png;base64,{b64}", "question": "q"}) + "\n")
    rows = dio.read_table(str(path), schema=ITEM_SCHEMA).to_pylist()
    assert [r["image_path"] for r in rows] == ["http://x/y.png", None, f"data:image/png;base64,{b64}"]
    assert rows[1]["image_bytes"] == b"\x89PNGxx"
    assert "extra" not in rows[0] and rows[0]["responses"] is None


def test_normalize_row_errors():
    with pytest.raises(dio.RowError) as err:
        dio.normalize_row({"image": "a.png", "image_path": "b.png"}, ITEM_SCHEMA)
    assert err.value.reason == "ambiguous_image"
    with pytest.raises(dio.RowError) as err:
        dio.normalize_row({"image_bytes": "not base64!!"}, ITEM_SCHEMA)
    assert err.value.reason == "bad_base64"
    with pytest.raises(dio.RowError) as err:
        dio.rows_to_table([{"item_id": "1", "responses": "not a list"}], ITEM_SCHEMA)
    assert err.value.reason == "wrong_type"


def test_bad_jsonl_lines_raise_or_are_marked(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"item_id": "1"}\n{oops\n[1, 2]\n')
    with pytest.raises(dio.DataFormatError, match=r"bad.jsonl:2: invalid_json"):
        list(dio.iter_jsonl_rows(str(path)))
    rows = list(dio.iter_jsonl_rows(str(path), bad_lines="mark"))
    assert [r.get("_error") for r in rows] == [None, "invalid_json", "not_an_object"]
    assert rows[1]["_source"].endswith("bad.jsonl:2") and rows[1]["_raw"] == "{oops"


def test_long_jsonl_streams_across_read_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(dio, "_READ_CHUNK", 7)   # lines straddle many chunk borders
    path = str(tmp_path / "long.jsonl")
    dio.write_table(pa.Table.from_pylist(_rows(30), schema=ITEM_SCHEMA), path)
    assert dio.read_table(path, schema=ITEM_SCHEMA).to_pylist() == _rows(30)


def test_iter_lines_byte_ranges(tmp_path, monkeypatch):
    monkeypatch.setattr(dio, "_READ_CHUNK", 5)
    path = tmp_path / "lines.txt"
    path.write_bytes(b"alpha\nbe\n\ngamma-long-line\nend")    # no trailing newline
    fs, p = dio.resolve(str(path))
    lines = list(dio.iter_lines(fs, p))
    assert lines == [(0, b"alpha"), (6, b"be"), (9, b""), (10, b"gamma-long-line"), (26, b"end")]
    # Ranges split at any offsets cover every line exactly once.
    assert list(dio.iter_lines(fs, p, 0, 10)) + list(dio.iter_lines(fs, p, 10, None)) == lines
    assert list(dio.iter_lines(fs, p, 10, 27)) == lines[3:]


def test_parquet_conform_adds_missing_columns(tmp_path):
    path = str(tmp_path / "few.parquet")
    dio.write_table(pa.table({"question": ["q"], "item_id": ["1"]}), path)
    table = dio.read_table(path, schema=ITEM_SCHEMA)
    assert table.schema == ITEM_SCHEMA and table.to_pylist()[0]["item_id"] == "1"
    assert table.to_pylist()[0]["responses"] is None


def test_listing_skips_temp_files_and_rejects_mixed(tmp_path):
    _write_rows(_rows(3), str(tmp_path), ITEM_SCHEMA, 10, "parquet")
    (tmp_path / ".part-00001.parquet.tmp-abc").write_bytes(b"half a file")
    (tmp_path / "_SUCCESS").write_text("")
    assert [f.rsplit("/", 1)[1] for f in dio.list_data_files(str(tmp_path))] == ["part-00000.parquet"]
    _write_rows(_rows(3), str(tmp_path), ITEM_SCHEMA, 10, "jsonl")
    with pytest.raises(dio.DataFormatError, match="mixes"):
        dio.list_data_files(str(tmp_path))
    assert len(dio.list_data_files(str(tmp_path), "jsonl")) == 1
    with pytest.raises(FileNotFoundError):
        dio.list_data_files(str(tmp_path / "nope"))


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_killed_write_leaves_no_visible_file(tmp_path, fmt):
    def batches():
        yield pa.Table.from_pylist(_rows(2), schema=ITEM_SCHEMA)
        raise KeyboardInterrupt("killed mid-write")

    target = tmp_path / "out" / f"part-00000.{fmt}"
    with pytest.raises(KeyboardInterrupt):
        dio.write_batches(batches(), str(target), ITEM_SCHEMA)
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_write_batches_streams_into_row_groups(tmp_path):
    path = str(tmp_path / "x.parquet")
    chunks = (pa.Table.from_pylist(_rows(30)[i:i + 7], schema=ITEM_SCHEMA) for i in range(0, 30, 7))
    assert dio.write_batches(chunks, path, ITEM_SCHEMA) == 30
    assert dio.pq.ParquetFile(path).num_row_groups == 5
    assert dio.read_table(path).to_pylist() == _rows(30)


def test_non_local_filesystem(tmp_path):
    """The same code paths on a non-local pyarrow filesystem (the in-memory mock one)."""
    fs = pafs._MockFileSystem()
    files = _write_rows(_rows(5), "bucket/ds", ITEM_SCHEMA, 2, "jsonl", filesystem=fs)
    assert files == [f"bucket/ds/part-0000{i}.jsonl" for i in range(3)]
    assert dio.read_table("bucket/ds", schema=ITEM_SCHEMA, filesystem=fs).to_pylist() == _rows(5)
    infos = fs.get_file_info(pafs.FileSelector("bucket/ds"))
    assert not any(i.base_name.startswith(".") for i in infos)


def test_format_detection():
    assert dio.detect_format("s3://b/x.PARQUET") == "parquet"
    assert dio.detect_format("x.ndjson") == "jsonl"
    with pytest.raises(dio.DataFormatError):
        dio.detect_format("x.csv")
