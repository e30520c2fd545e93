"""SFT through Ray Train on a `FakeCloud` with no GPU instance at the start: the worker group is placed on
GPU instances the autoscaler launches for it, one of them is preempted once a checkpoint is registered,
and the group restarts on a replacement from that checkpoint (the preemption budget of
`sft.max_preemption_failures`), finishes, and the saved judge loads and judges.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from carevl.judge.model import JudgeModel
from carevl.testing.curation_faults import submit, wait_for, wait_terminal
from carevl.testing.fake_cloud import FakeCloud, tolerant
from carevl.testing.scaling_scenarios import (
    ScenarioRun,
    gpu_release_s,
    job_seconds,
    new_gpu_nodes,
    wait_no_gpu_nodes,
)
from carevl.testing.timeline import Timeline, pool_of
from carevl.training.synthetic_pairs import write_synthetic_pairs

MAX_STEPS, SAVE_STEPS = 8, 2
WORKERS = 2
PREEMPTION_LOG = "Source: preemption"   # Ray Train's failure policy names what it charged a restart to


def sft_overrides() -> list[str]:
    """The micro judge on two Ray Train workers of one GPU each (a GPU instance each, or one bigger
    instance for both), a checkpoint every SAVE_STEPS; one restart for a failure that is not a
    preemption, none needed for the preemption itself."""
    trainer = {"max_steps": MAX_STEPS, "save_steps": SAVE_STEPS, "logging_steps": 1, "bf16": False,
               "gradient_checkpointing": False}
    return ["models.judge.path=tiny:vlm_micro", f"sft.num_workers={WORKERS}", "sft.use_gpu=true",
            "sft.resources_per_worker={CPU: 1, GPU: 1}", "sft.max_failures=1", "sft.max_preemption_failures=2",
            *(f"sft.trainer.{k}={v}" for k, v in trainer.items())]


def registered_steps(output: Path) -> list[int]:
    """Global steps of the checkpoints Ray Train has registered for the SFT run in `output`."""
    run = output / "checkpoints" / "sft"
    try:
        results = json.loads((run / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"]
    except (OSError, ValueError, KeyError):
        return []
    states = [run / r["checkpoint_dir_name"] / "checkpoint" / "trainer_state.json" for r in results]
    return [json.loads(s.read_text())["global_step"] for s in states if s.is_file()]


def train_worker_nodes(cloud: FakeCloud) -> list[str]:
    from ray.util.state import list_actors

    return [a.node_id for a in list_actors(address=cloud.dashboard, filters=[("state", "=", "ALIVE")], detail=True,
                                           limit=10_000, raise_on_missing_output=False)
            if pool_of(a.class_name or "") == ("actors", "RayTrainWorker") and a.node_id]


def whole_group(nodes: list[str]) -> list[str]:
    """The worker group's nodes once all WORKERS workers are up (else empty)."""
    return nodes if len(nodes) == WORKERS else []


def judge_once(model: Path) -> dict[str, Any]:
    """The trained judge loaded from its folder, judging one pair in verdict mode."""
    judge = JudgeModel(str(model))
    p_a, winner = judge.verdict({"question": ["How many circles are there?"], "response_a": ["Two circles."],
                                 "response_b": ["A red square."], "image": [None]})
    return {"p_a": float(p_a[0]), "winner": winner[0], "device": judge.device}


def sft_with_preemption(cloud: FakeCloud, timeline: Timeline, folder: Path, notice_s: float = 2.0) -> ScenarioRun:
    """(c) See the module docstring."""
    run = ScenarioRun("sft_with_preemption")
    pairs = write_synthetic_pairs(str(folder / "curated"), 12, seed=0)
    output = folder / "sft"
    cmd = ["python", "-m", "ray_jobs.train_sft", "--input", str(folder / "curated" / "high"), "--output", str(output)]
    for override in sft_overrides():
        cmd += ["--set", override]
    submitted, wall = timeline.mark("submit"), time.time()
    job = submit(cloud, cmd, wait=False)
    workers = wait_for(cloud, job, tolerant(lambda: whole_group(train_worker_nodes(cloud))),
                       "the worker group on GPU instances")
    placed = timeline.mark("worker group up")
    step = max(wait_for(cloud, job, lambda: registered_steps(output), "a registered checkpoint"))
    before = {n.node_id for n in cloud.gpu_nodes()}
    timeline.mark(f"preemption notice (checkpoint {step})")
    killed = cloud.preempt(workers[0], notice_s=notice_s)
    lost = timeline.mark("instance lost")
    replacement = wait_for(cloud, job, tolerant(lambda: new_gpu_nodes(cloud, before)), "a replacement GPU instance")[0]
    replaced = timeline.mark("replacement up")
    state = wait_terminal(cloud, job)
    timeline.mark("job end seen")
    logs = cloud.cli(["ray", "job", "logs", job, "--address", cloud.dashboard], check=False)
    summary = json.loads((output / "summary.json").read_text()) if (output / "summary.json").is_file() else {}
    wait_no_gpu_nodes(cloud)
    timeline.mark("no GPU instance")
    run.figures = {"job": state, "pairs_high": pairs["high"], "step_at_preemption": step,
                   "resumed_from_step": summary.get("resumed_from_step"), "global_step": summary.get("global_step"),
                   "preemption_failure_log_lines": logs.count(PREEMPTION_LOG),  # lines, not restarts
                   "submit_to_worker_group_up_s": round(placed - submitted, 1),
                   "instance_lost_to_replacement_up_s": round(replaced - lost, 1),
                   "submit_to_job_end_s": job_seconds(cloud, job, wall),
                   "idle_to_zero_gpu_nodes_s": gpu_release_s(cloud, timeline, submitted)}
    run.details = {"worker_nodes": workers, "preempted_node": workers[0],
                   "raylet_killed_at_deadline": killed is not None,
                   "replacement_node": replacement.node_id, "replacement_type": replacement.ray_node_type_name,
                   "judged": judge_once(output / "model") if state == "SUCCEEDED" else None,
                   "log_tail": logs[-3000:]}
    return run
