"""Running a `ray_jobs` entry point the way a user does: in-process as a shell sees it, or through
`ray job submit` to a head started by `ray start --head`, token authentication left on (Ray 2.60's
default), exactly as on a cluster.

The head gets a private temp dir and free ports; cleanup kills, by pid, only the processes whose
command line names that temp dir: `ray stop` would also stop every other Ray instance on a shared
machine.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from carevl.testing.cluster import free_ports

from tests.curation.conftest import kill_processes_mentioning

REPO = Path(__file__).resolve().parents[1]


def job_status(main, argv) -> int:
    """The exit status a job's command line ends with (0 when it returns)."""
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def submit_to_fresh_head(job_argv: list[str], prefix: str = "cvj", timeout_s: float = 900) -> str:
    """Start a 2-CPU head, `ray job submit --working-dir REPO -- python -m <job_argv>`, stop the head;
    returns the submit command's output. Fails the test when the head does not start or the job fails."""
    ray_tmp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
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
               "--", "python", "-m", *job_argv]
        submitted = subprocess.run(job, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        log = submitted.stdout + submitted.stderr
        assert submitted.returncode == 0, log[-4000:]
        assert "succeeded" in log
        return log
    finally:
        kill_processes_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def unit_manifests(run_dir: Path) -> dict[str, int]:
    """Finished work units of a run folder (the ledger's manifests) with their modification times."""
    folder = run_dir / "_units"
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")} if folder.exists() else {}


def kill_after_first_unit_then_rerun(cmd: list[str], run_dir: Path, log_dir: Path, prefix: str
                                     ) -> tuple[dict[str, int], subprocess.CompletedProcess]:
    """Run a job command (its own Ray, private temp dir), SIGKILL its whole process group once a first
    work unit is published (no clean shutdown of any kind), then run the same command again to the end.
    Returns the units finished before the kill and the second run."""
    ray_tmp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    try:
        with open(log_dir / "first.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            deadline = time.monotonic() + 600
            while not unit_manifests(run_dir) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert proc.poll() is None, (log_dir / "first.log").read_text()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        kill_processes_mentioning(ray_tmp)
        done_before = unit_manifests(run_dir)
        second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        return done_before, second
    finally:
        kill_processes_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
