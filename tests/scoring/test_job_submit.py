"""The scoring job submitted with `ray job submit` to a head started by `ray start --head`, token
authentication on, as on a cluster (the curation job's test shows the same path)."""
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
from carevl.testing.items import write_jsonl

from tests.curation.conftest import kill_processes_mentioning
from tests.scoring.conftest import group_rows, pair_rows

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_score_through_ray_job_submit(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", pair_rows(3) + group_rows(1))
    run_dir = tmp_path / "run"
    ray_tmp = tempfile.mkdtemp(prefix="csj", dir="/tmp")
    gcs, dashboard, client, agent, agent_grpc = free_ports(5)
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "token",
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
               "--", "python", "-m", "ray_jobs.score", "--input", str(path), "--output", str(run_dir),
               "--judge", "tiny:vlm_micro", "--set", "score.unit_rows=2", "--set", "score.method=copeland"]
        submitted = subprocess.run(job, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        log = submitted.stdout + submitted.stderr
        assert submitted.returncode == 0, log[-4000:]
        assert "succeeded" in log
    finally:
        kill_processes_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rows_conserved"] and (summary["pairs"], summary["groups"]) == (3, 1)
    assert summary["method"] == "copeland" and summary["judgements"] == 3 * 2 + 6
    # The driver joined the head instead of starting a Ray of its own.
    assert "Started a local Ray instance" not in log
