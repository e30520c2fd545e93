"""A scoring job really killed midway (SIGKILL, no clean shutdown), then re-run with the same command,
ends with exactly one output row per input row and keeps the units it had finished."""
from __future__ import annotations

import sys

import pyarrow.parquet as pq
import pytest

from carevl.testing.items import write_jsonl

from tests.jobs import kill_after_first_unit_then_rerun, unit_manifests
from tests.scoring.conftest import BAD_ROWS, group_rows, pair_rows

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_killed_scoring_run_resumes_to_exactly_one_row_per_input_row(tmp_path):
    rows = pair_rows(10) + group_rows(3) + BAD_ROWS[1:3]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    run_dir = tmp_path / "run"
    # Two rows per unit and per judge batch, so units finish one after another and the kill lands between.
    cmd = [sys.executable, "-m", "ray_jobs.score", "--input", str(path), "--output", str(run_dir),
           "--judge", "tiny:vlm_micro", "--set", "ray.num_cpus=2", "--set", "score.unit_rows=2",
           "--set", "models.judge.resources.batch_size=2"]
    done_before, second = kill_after_first_unit_then_rerun(cmd, run_dir, tmp_path, "cvs")
    assert 1 <= len(done_before) < 8

    after = unit_manifests(run_dir)
    assert len(after) == 8 and all(after[name] == mtime for name, mtime in done_before.items())
    log = second.stdout + second.stderr
    assert f"{len(done_before)} already done" in log
    indices = [i for cls in ("pairs", "groups", "quarantine") for f in sorted((run_dir / cls).glob("*.parquet"))
               for i in pq.read_table(f, columns=["row_index"]).column(0).to_pylist()]
    assert sorted(indices) == list(range(len(rows)))       # none missing, none twice
    assert not [p for p in (run_dir / "_staging").rglob("*") if p.is_file()]
