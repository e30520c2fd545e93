"""The curation job submitted with `ray job submit` to a head started by `ray start --head`, token
authentication left on (Ray 2.60's default), exactly as on a cluster.

Cleanup kills, by pid, only the processes of the head this test started (found by the private temp
dir it was given): `ray stop` would also stop every other Ray instance on a shared machine.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from carevl.testing.cluster import free_ports
from carevl.testing.items import synth_rows, tiny_overrides, write_jsonl

from tests.curation.conftest import kill_processes_mentioning

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_curate_through_ray_job_submit(tmp_path):
    rows = synth_rows(3, seed=5)
    items = write_jsonl(tmp_path / "items.jsonl", rows)
    run_dir = tmp_path / "run"
    ray_tmp = tempfile.mkdtemp(prefix="cvj", dir="/tmp")
    gcs, dashboard, client, agent, agent_grpc = free_ports(5)
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "token",
           # The `ray` CLI and the job's `python` are the ones of this interpreter's environment (a
           # virtualenv that was not activated, under `make test`).
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    start = ["ray", "start", "--head", "--num-cpus=2", f"--port={gcs}", f"--dashboard-port={dashboard}",
             "--dashboard-host=127.0.0.1", f"--ray-client-server-port={client}",
             f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
             "--include-dashboard=true", "--disable-usage-stats"]
    try:
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr
        job = ["ray", "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", str(REPO),
               "--", "python", "-m", "ray_jobs.curate", "--input", str(items), "--output", str(run_dir)]
        for override in tiny_overrides(unit_items=2):
            job += ["--set", override]
        submitted = subprocess.run(job, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        log = submitted.stdout + submitted.stderr
        assert submitted.returncode == 0, log[-4000:]
        assert "succeeded" in log and "pairs" in log
    finally:
        kill_processes_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    summary = json.loads((run_dir / "summary.json").read_text())
    expected_pairs = sum(len(r["judgements"]) for r in rows)
    assert summary["rows_conserved"] and summary["input_rows"] == 3
    assert summary["pairs"]["total"] == expected_pairs
    # The driver joined the head (one node, the 2 CPUs `ray start` declared) instead of starting its own Ray.
    assert "Started a local Ray instance" not in log
