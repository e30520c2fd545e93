"""A curation job really killed midway, then re-run with the same command, ends with exactly one row per
pair and does not redo the units it had finished."""
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

from carevl.testing.items import synth_rows, tiny_overrides, write_jsonl

from tests.curation.conftest import kill_processes_mentioning

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _manifests(run_dir: Path) -> dict[str, float]:
    folder = run_dir / "_units"
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")} if folder.exists() else {}


def test_killed_run_resumes_to_exactly_one_row_per_pair(tmp_path):
    rows = synth_rows(8, seed=11)
    items = write_jsonl(tmp_path / "items.jsonl", rows)
    run_dir = tmp_path / "run"
    ray_tmp = tempfile.mkdtemp(prefix="cvr", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ray_jobs.curate", "--input", str(items), "--output", str(run_dir),
           "--set", "ray.num_cpus=2"]
    # One item per model batch, so units finish one after another and the kill lands between them.
    for override in tiny_overrides(unit_items=1) + ["models.vlm.resources.batch_size=1",
                                                     "models.rm_llama.resources.batch_size=1"]:
        cmd += ["--set", override]
    try:
        with open(tmp_path / "first.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            deadline = time.monotonic() + 600
            while not _manifests(run_dir) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)  # no clean shutdown of any kind
            proc.wait(timeout=30)
        kill_processes_mentioning(ray_tmp)
        done_before = _manifests(run_dir)
        assert 1 <= len(done_before) < len(rows)

        second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    finally:
        kill_processes_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    # Finished units were kept as they were, not redone.
    after = _manifests(run_dir)
    assert len(after) == len(rows)
    assert all(after[name] == mtime for name, mtime in done_before.items())
    assert f"{len(done_before)} already done" in second.stdout
    # Exactly one output row per pair: none missing, none duplicated, nothing left in staging.
    pair_ids = [r for cls in ("high", "low") for f in sorted((run_dir / cls).glob("*.parquet"))
                for r in pq.read_table(f, columns=["pair_id"]).column(0).to_pylist()]
    expected = [f"{r['item_id']}:{j['a']}-{j['b']}" for r in rows for j in r["judgements"]]
    assert sorted(pair_ids) == sorted(expected)
    assert not [p for p in (run_dir / "_staging").rglob("*") if p.is_file()]
