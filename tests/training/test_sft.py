"""SFT through Ray Train with 2 CPU workers on the micro LLaVA: the job killed mid-run and re-run, a
training worker killed mid-run (the worker group restarts from the latest checkpoint), then checked."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

MAX_STEPS, SAVE_STEPS = 8, 2


def _command(checks, curated_pairs, out):
    stage = checks.stage_overrides("sft", max_steps=MAX_STEPS, save_steps=SAVE_STEPS, learning_rate=1e-3)
    sets = ["ray.num_cpus=2", "sft.max_failures=1", *checks.MICRO, *stage]
    return [sys.executable, "-m", "ray_jobs.train_sft", "--input", str(curated_pairs / "high"),
            "--output", str(out), *[a for s in sets for a in ("--set", s)]]


def _registered_steps(checks, out) -> list[int]:
    """Global steps of the TRL checkpoints Ray Train has registered for the run."""
    return [json.loads((c / "trainer_state.json").read_text())["global_step"]
            for c in checks.registered_checkpoints(out / "checkpoints" / "sft")]


def _wait_for_step(checks, proc, out, above: int, timeout_s=600) -> int | None:
    """The highest registered checkpoint step once one is above `above` (None if the job ended first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        steps = _registered_steps(checks, out)
        if steps and max(steps) > above:
            return max(steps)
        time.sleep(0.2)
    return None


def _train_workers_of(checks, proc, timeout_s=30) -> list:
    """The job's Ray Train worker processes (of its own local Ray), waited for while the job runs: a
    worker group between attempts has none for a moment."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if workers := checks.train_workers(proc.pid):
            return workers
        time.sleep(0.2)
    return []


@pytest.mark.ray
@pytest.mark.slow
def test_sft_survives_a_kill_and_saves_a_trained_loadable_model(checks, curated_pairs, tmp_path, repo_root):
    out = tmp_path / "sft"
    cmd = _command(checks, curated_pairs, out)
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=repo_root, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        try:
            job_killed_at = _wait_for_step(checks, proc, out, above=0)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the job and the local Ray it started
            proc.wait()
    assert job_killed_at is not None, (tmp_path / "first.log").read_text()[-3000:]
    assert not (out / "model").exists()

    # The re-run resumes the job; once it has registered a checkpoint of its own, one training worker is
    # killed: Ray Train restarts the worker group (sft.max_failures=1) from that checkpoint, in the same job.
    with open(tmp_path / "rerun.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=repo_root, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        try:
            worker_killed_at = _wait_for_step(checks, proc, out, above=job_killed_at)
            if worker_killed_at is not None and worker_killed_at < MAX_STEPS:
                workers = _train_workers_of(checks, proc)
                assert workers, ("no Ray Train worker process found", (tmp_path / "rerun.log").read_text()[-3000:])
                workers[-1].kill()
            returncode = proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    rerun_log = (tmp_path / "rerun.log").read_text()
    assert worker_killed_at is not None and worker_killed_at < MAX_STEPS, rerun_log[-3000:]
    assert returncode == 0, rerun_log[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # The restarted workers resumed from the checkpoint registered before the kill, not from the job's start.
    assert summary["resumed_from_step"] >= worker_killed_at > job_killed_at and summary["global_step"] == MAX_STEPS
    # Every TRL save (trainer.save_steps) reached Ray Train as a checkpoint.
    steps = _registered_steps(checks, out)
    assert steps and all(step % SAVE_STEPS == 0 for step in steps)
    # Each pair is shown in both A/B orders (sft.both_orders in the tiny preset).
    assert summary["data"]["examples"] == 2 * summary["data"]["rows"] > 0
    losses = [e["loss"] for e in summary["train_metrics"]["log_history"] if "loss" in e]
    assert losses and all(math.isfinite(x) for x in losses)
    assert not (out / "scratch").exists()

    checks.assert_trained(checks.micro_folder(), out / "model")
    assert isinstance(checks.assert_generates(out / "model"), str)

    # Another failure budget is the same run (it changes how often training may restart, not what it learns).
    again = subprocess.run(cmd + ["--set", "sft.max_failures=3"], cwd=repo_root, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and json.loads((out / "summary.json").read_text()) == summary, again.stderr[-3000:]

    # Another learning rate into the same folder: the finished model is not taken for it (exit 2, one line).
    changed = subprocess.run(cmd + ["--set", "sft.trainer.learning_rate=0.002"], cwd=repo_root,
                             capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2, changed.stderr[-3000:]
    error = [line for line in changed.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "config.sft.trainer.learning_rate: 0.001 -> 0.002" in error[0]
    assert "Traceback" not in changed.stderr
