"""The run ledger: fingerprints, refusal with what changed, units staged and published, completion."""
from __future__ import annotations

import json

import pytest

from carevl import ledger
from carevl.ledger import RunLedger, StaleRunError, WorkUnit


def _fingerprint(folder, **config):
    return ledger.run_fingerprint({"items": ledger.input_fingerprint(str(folder))}, config)


def test_input_fingerprint_follows_the_files_not_the_spelling(tmp_path, monkeypatch):
    data = tmp_path / "items"
    data.mkdir()
    (data / "a.parquet").write_bytes(b"x" * 10)
    (data / ".a.parquet.tmp").write_bytes(b"partial")      # hidden files are not part of the input
    first = ledger.input_fingerprint(str(data))
    monkeypatch.chdir(tmp_path)
    assert ledger.input_fingerprint("items") == first       # relative and absolute spellings agree
    assert (first["files"], first["bytes"]) == (1, 10)
    (data / "b.parquet").write_bytes(b"y")
    assert ledger.input_fingerprint(str(data))["digest"] != first["digest"]
    with pytest.raises(FileNotFoundError):
        ledger.input_fingerprint(str(tmp_path / "missing"))


def test_claim_resumes_the_same_run_and_refuses_another_naming_the_change(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rows.jsonl").write_text("{}\n")
    out = str(tmp_path / "out")
    assert RunLedger(out, "refine").claim(_fingerprint(tmp_path / "in", strategy="best_to_worse")) is False
    assert RunLedger(out, "refine").claim(_fingerprint(tmp_path / "in", strategy="best_to_worse")) is True
    with pytest.raises(StaleRunError) as err:
        RunLedger(out, "refine").claim(_fingerprint(tmp_path / "in", strategy="all_incorrect"))
    message = str(err.value)
    assert 'config.strategy: "best_to_worse" -> "all_incorrect"' in message
    assert f"To start afresh, delete {out} or choose another output folder" in message
    (tmp_path / "in" / "rows.jsonl").write_text("{}\n{}\n")
    with pytest.raises(StaleRunError, match=r"input\.items\.bytes: 3 -> 6"):
        RunLedger(out, "refine").claim(_fingerprint(tmp_path / "in", strategy="best_to_worse"))


def test_code_version_is_part_of_the_fingerprint(tmp_path):
    fp = ledger.run_fingerprint({}, {})
    assert fp["code"].startswith(__import__("carevl").__version__)
    RunLedger(str(tmp_path), "sft").claim({**fp, "code": "0.0.1+old"})
    with pytest.raises(StaleRunError, match=r"code: \"0.0.1\+old\" -> "):
        RunLedger(str(tmp_path), "sft").claim(fp)


def test_completion_is_recorded_with_the_fingerprint(tmp_path):
    led = RunLedger(str(tmp_path), "sft")
    fp = ledger.run_fingerprint({}, {"lr": 1})
    led.claim(fp)
    assert not led.is_complete()
    led.mark_complete({"global_step": 3})
    assert led.is_complete() and led.is_complete(fp)
    assert not led.is_complete(ledger.run_fingerprint({}, {"lr": 2}))
    assert json.loads((tmp_path / "_run.json").read_text())["summary"] == {"global_step": 3}


def test_units_are_staged_then_published_with_a_manifest(tmp_path):
    led = RunLedger(str(tmp_path), "refine")
    unit = WorkUnit("u00000-0000000000", "in.parquet", "parquet", 0, 2, 0)
    staged = led.staged("dpo", f"{unit.unit_id}-abc.parquet")
    (tmp_path / "_staging" / "dpo").mkdir(parents=True)
    open(staged, "wb").write(b"x")
    led.publish(unit, [{"class": "dpo", "path": staged, "rows": 2}], {"pairs": 2})
    assert (tmp_path / "dpo" / f"{unit.unit_id}-abc.parquet").is_file()
    assert led.completed_units()[unit.unit_id]["stats"] == {"pairs": 2}
    # An unpublished unit's file (no manifest) is what a killed run left: removed on resume.
    (tmp_path / "dpo" / "u00000-0000000002-def.parquet").write_bytes(b"y")
    assert led.remove_unfinished(set(led.completed_units()), ("dpo",)) == 1
    assert sorted(p.name for p in (tmp_path / "dpo").iterdir()) == [f"{unit.unit_id}-abc.parquet"]


def test_plan_units_cuts_files_in_order():
    units = ledger.plan_units(["a.parquet", "b.parquet"], [5, 2], unit_rows=2)
    assert [(u.file, u.start, u.stop, u.first_global) for u in units] == [
        ("a.parquet", 0, 2, 0), ("a.parquet", 2, 4, 2), ("a.parquet", 4, 5, 4), ("b.parquet", 0, 2, 5)]
