"""The curation job submitted with `ray job submit` to a head started by `ray start --head`, token
authentication left on (Ray 2.60's default), exactly as on a cluster (`tests.jobs.submit_to_fresh_head`)."""
from __future__ import annotations

import json

import pytest

from carevl.testing.items import synth_rows, tiny_overrides, write_jsonl

from tests.jobs import submit_to_fresh_head

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_curate_through_ray_job_submit(tmp_path):
    rows = synth_rows(3, seed=5)
    items = write_jsonl(tmp_path / "items.jsonl", rows)
    run_dir = tmp_path / "run"
    argv = ["ray_jobs.curate", "--input", str(items), "--output", str(run_dir)]
    log = submit_to_fresh_head(argv + [a for o in tiny_overrides(unit_items=2) for a in ("--set", o)], "cvj")
    assert "pairs" in log
    summary = json.loads((run_dir / "summary.json").read_text())
    expected_pairs = sum(len(r["judgements"]) for r in rows)
    assert summary["rows_conserved"] and summary["input_rows"] == 3
    assert summary["pairs"]["total"] == expected_pairs
    # The driver joined the head (one node, the 2 CPUs `ray start` declared) instead of starting its own Ray.
    assert "Started a local Ray instance" not in log
