"""A curation job really killed midway, then re-run with the same command, ends with exactly one row per
pair and does not redo the units it had finished."""
from __future__ import annotations

import sys

import pyarrow.parquet as pq
import pytest

from carevl.testing.items import synth_rows, tiny_overrides, write_jsonl

from tests.jobs import kill_after_first_unit_then_rerun, unit_manifests

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_killed_run_resumes_to_exactly_one_row_per_pair(tmp_path):
    rows = synth_rows(8, seed=11)
    items = write_jsonl(tmp_path / "items.jsonl", rows)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "ray_jobs.curate", "--input", str(items), "--output", str(run_dir),
           "--set", "ray.num_cpus=2"]
    # One item per model batch, so units finish one after another and the kill lands between them.
    for override in tiny_overrides(unit_items=1) + ["models.vlm.resources.batch_size=1",
                                                     "models.rm_llama.resources.batch_size=1"]:
        cmd += ["--set", override]
    done_before, second = kill_after_first_unit_then_rerun(cmd, run_dir, tmp_path, "cvr")
    assert 1 <= len(done_before) < len(rows)

    # Finished units were kept as they were, not redone.
    after = unit_manifests(run_dir)
    assert len(after) == len(rows)
    assert all(after[name] == mtime for name, mtime in done_before.items())
    assert f"{len(done_before)} already done" in second.stdout
    # Exactly one output row per pair: none missing, none duplicated, nothing left in staging.
    pair_ids = [r for cls in ("high", "low") for f in sorted((run_dir / cls).glob("*.parquet"))
                for r in pq.read_table(f, columns=["pair_id"]).column(0).to_pylist()]
    expected = [f"{r['item_id']}:{j['a']}-{j['b']}" for r in rows for j in r["judgements"]]
    assert sorted(pair_ids) == sorted(expected)
    assert not [p for p in (run_dir / "_staging").rglob("*") if p.is_file()]
