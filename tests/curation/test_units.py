"""Work units: deterministic planning over Parquet and JSONL, duplicate ids, and cleanup for resume."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from carevl.curation.units import OUTPUT_CLASSES, duplicate_first_rows, plan_units, scan_file
from carevl.ledger import STAGING_DIR, RunLedger, read_unit_rows
from carevl.curation.validate import id_hash
from carevl.testing.items import write_jsonl


def _parquet(path, ids, row_group_size=3):
    table = pa.table({"item_id": ids, "question": [f"q{i}" for i in range(len(ids))],
                      "responses": [["a", "b"] if i % 4 else None for i in range(len(ids))]})
    pq.write_table(table, path, row_group_size=row_group_size)
    return str(path)


def test_parquet_units_read_exact_row_ranges_across_row_groups(tmp_path):
    path = _parquet(tmp_path / "a.parquet", [f"id{i}" for i in range(10)])
    scan = scan_file(path, unit_items=4)
    assert scan.rows == 10 and scan.without_responses == 3   # rows 0, 4, 8 have no responses
    units = plan_units([path], [scan], unit_items=4)
    assert [(u.start, u.stop) for u in units] == [(0, 4), (4, 8), (8, 10)]
    ids = [r["item_id"] for u in units for r in read_unit_rows(u.to_dict())]
    assert ids == [f"id{i}" for i in range(10)]


def test_jsonl_units_use_byte_ranges_and_skip_blank_lines(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"item_id": "x0"}, "", {"item_id": "x1"}, "not json",
                                              {"item_id": "x2"}])
    scan = scan_file(str(path), unit_items=2)
    units = plan_units([str(path)], [scan], unit_items=2)
    assert [u.rows for u in units] == [2, 2]
    rows = [r for u in units for r in read_unit_rows(u.to_dict())]
    assert [r.get("item_id", r.get("_error")) for r in rows] == ["x0", "x1", "invalid_json", "x2"]


def test_jsonl_scan_counts_items_without_responses_but_not_malformed_lines(tmp_path):
    # a line that is not a JSON object is quarantined, so it must not start the candidate pools
    path = write_jsonl(tmp_path / "a.jsonl", [{"item_id": "x0", "responses": ["a", "b"]}, '{"item_id": "x1", ',
                                              "[1, 2]", {"item_id": "x2", "responses": []}, {"item_id": "x3"}])
    scan = scan_file(str(path), unit_items=2)
    assert scan.rows == 5 and scan.without_responses == 2   # x2 (empty) and x3 (missing)


def test_duplicates_keep_the_first_occurrence_across_files(tmp_path):
    a = _parquet(tmp_path / "a.parquet", ["u", "dup", "v"])
    b = str(write_jsonl(tmp_path / "b.jsonl", [{"item_id": "w"}, {"item_id": "dup"}, {"item_id": "dup"}]))
    first = duplicate_first_rows([scan_file(a, 2), scan_file(b, 2)])
    assert first == {id_hash("dup"): 1}          # global rows 1 (file a), 4 and 5 (file b)
    units = plan_units([a, b], [scan_file(a, 2), scan_file(b, 2)], 2)
    assert [u.first_global for u in units] == [0, 2, 3, 5]


def test_remove_unfinished_keeps_only_published_units(tmp_path):
    run = str(tmp_path)
    for rel in ("high/u1-aaa.parquet", "high/u2-bbb.parquet", "low/.u1-tmp.parquet",
                f"{STAGING_DIR}/high/u1-ccc.parquet", f"{STAGING_DIR}/low/u3-ddd.parquet"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    removed = RunLedger(run, "curation").remove_unfinished({"u1"}, OUTPUT_CLASSES)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["high/u1-aaa.parquet"] and removed == 4


def test_publish_moves_staged_files_then_writes_the_manifest(tmp_path):
    from carevl.ledger import WorkUnit

    staged = tmp_path / STAGING_DIR / "low" / "u7-abc.parquet"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"x")
    unit = WorkUnit("u7", "in.jsonl", "jsonl", 0, 3, 0)
    led = RunLedger(str(tmp_path), "curation")
    led.publish(unit, [{"class": "low", "path": str(staged), "rows": 2}], {"input_rows": 3})
    assert (tmp_path / "low" / "u7-abc.parquet").exists() and not staged.exists()
    assert led.completed_units()["u7"]["files"][0]["path"] == str(tmp_path / "low" / "u7-abc.parquet")
