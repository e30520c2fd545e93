"""SFT through Ray Train with 2 CPU workers on the micro LLaVA: killed mid-run, re-run, then checked."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest


def _command(checks, curated_pairs, out):
    stage = checks.stage_overrides("sft", max_steps=6, save_steps=2, learning_rate=1e-3)
    sets = ["ray.num_cpus=2", *checks.MICRO, *stage]
    return [sys.executable, "-m", "ray_jobs.train_sft", "--input", str(curated_pairs / "high"),
            "--output", str(out), *[a for s in sets for a in ("--set", s)]]


def _wait_for_checkpoint(proc, out, timeout_s=600) -> bool:
    """True once Ray Train has registered a TRL checkpoint (listed in its snapshot of the run)."""
    snapshot = out / "checkpoints" / "sft" / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            results = json.loads(snapshot.read_text())["checkpoint_results"]
        except (OSError, ValueError, KeyError):
            results = []
        if any((out / "checkpoints" / "sft" / r["checkpoint_dir_name"] / "checkpoint").is_dir() for r in results):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.ray
@pytest.mark.slow
def test_sft_survives_a_kill_and_saves_a_trained_loadable_model(checks, curated_pairs, tmp_path, repo_root):
    out = tmp_path / "sft"
    cmd = _command(checks, curated_pairs, out)
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=repo_root, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        try:
            saw_checkpoint = _wait_for_checkpoint(proc, out)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the job and the local Ray it started
            proc.wait()
    assert saw_checkpoint, (tmp_path / "first.log").read_text()[-3000:]
    assert not (out / "model").exists()

    rerun = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] >= 2 and summary["global_step"] == 6
    # Each pair is shown in both A/B orders (sft.both_orders in the tiny preset).
    assert summary["data"]["examples"] == 2 * summary["data"]["rows"] > 0
    losses = [e["loss"] for e in summary["train_metrics"]["log_history"] if "loss" in e]
    assert losses and all(math.isfinite(x) for x in losses)
    assert not (out / "scratch").exists()

    checks.assert_trained(checks.micro_folder(), out / "model")
    assert isinstance(checks.assert_generates(out / "model"), str)

    # Another learning rate into the same folder: the finished model is not taken for it (exit 2, one line).
    changed = subprocess.run(cmd + ["--set", "sft.trainer.learning_rate=0.002"], cwd=repo_root,
                             capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2, changed.stderr[-3000:]
    error = [line for line in changed.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "config.sft.trainer.learning_rate: 0.001 -> 0.002" in error[0]
    assert "Traceback" not in changed.stderr
