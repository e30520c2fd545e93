"""A scoring job really killed midway (SIGKILL, no clean shutdown), then re-run with the same command,
ends with exactly one output row per input row and keeps the units it had finished."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from carevl.testing.items import write_jsonl

from tests.curation.conftest import kill_processes_mentioning
from tests.scoring.conftest import BAD_ROWS, group_rows, pair_rows

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _manifests(run_dir: Path) -> dict[str, int]:
    folder = run_dir / "_units"
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")} if folder.exists() else {}


def test_killed_scoring_run_resumes_to_exactly_one_row_per_input_row(tmp_path):
    rows = pair_rows(10) + group_rows(3) + BAD_ROWS[1:3]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    run_dir = tmp_path / "run"
    ray_tmp = tempfile.mkdtemp(prefix="cvs", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    # Two rows per unit and per judge batch, so units finish one after another and the kill lands between.
    cmd = [sys.executable, "-m", "ray_jobs.score", "--input", str(path), "--output", str(run_dir),
           "--judge", "tiny:vlm_micro", "--set", "ray.num_cpus=2", "--set", "score.unit_rows=2",
           "--set", "models.judge.resources.batch_size=2"]
    try:
        with open(tmp_path / "first.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            deadline = time.monotonic() + 600
            while not _manifests(run_dir) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        kill_processes_mentioning(ray_tmp)
        done_before = _manifests(run_dir)
        assert 1 <= len(done_before) < 8

        second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    finally:
        kill_processes_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    after = _manifests(run_dir)
    assert len(after) == 8 and all(after[name] == mtime for name, mtime in done_before.items())
    log = second.stdout + second.stderr
    assert f"{len(done_before)} already done" in log
    indices = [i for cls in ("pairs", "groups", "quarantine") for f in sorted((run_dir / cls).glob("*.parquet"))
               for i in pq.read_table(f, columns=["row_index"]).column(0).to_pylist()]
    assert sorted(indices) == list(range(len(rows)))       # none missing, none twice
    assert not [p for p in (run_dir / "_staging").rglob("*") if p.is_file()]
