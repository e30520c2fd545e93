"""Curation jobs on a local multi-node cluster under faults: a worker node's raylet SIGKILLed, an expert
actor SIGKILLed, the driver SIGKILLed and the job submitted again, each measured for rows lost, rows
duplicated and time. Used by tests/cluster/test_curation_faults.py and benchmarks/cluster_faults.py.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq

from carevl.config import REPO_ROOT
from carevl.testing.cluster import LocalCluster, Node
from carevl.testing.items import synth_rows, tiny_overrides, write_jsonl

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class FaultRun:
    fault: str
    attempts: int          # job submissions until one succeeded
    rows_expected: int
    rows_lost: int
    rows_duplicated: int
    seconds: float         # from the first submission to the successful end
    quarantined: int = 0
    units_total: int = 0
    units_at_fault: int = 0  # units published when the fault struck (mid-run: 0 < this < units_total)
    units_at_each_fault: list[int] = field(default_factory=list)  # the scenario that strikes several times

    def as_row(self) -> dict:
        return self.__dict__.copy()


def write_items(folder: Path, items: int, seed: int) -> tuple[Path, list[str]]:
    """`items` synthetic items plus one malformed line (quarantined); returns (file, expected pair ids)."""
    rows = synth_rows(items, seed=seed)
    path = write_jsonl(folder / "items.jsonl", rows + ['{"item_id": "broken", "question": '])
    return path, [f"{r['item_id']}:{j['a']}-{j['b']}" for r in rows for j in r["judgements"]]


FAULT_ITEMS = 24  # enough units that the last ones are still running seconds after the first one


def slow_unit_overrides() -> list[str]:
    """One item per unit and per model call, so units finish one by one and a fault lands mid-run; the
    preset's full caption length (96 tokens) keeps each unit a fraction of a second long, where the
    micro models would otherwise finish every unit within a second of the first one."""
    fast = [o for o in tiny_overrides(unit_items=1) if not o.startswith("models.vlm.generation.max_new_tokens")]
    return fast + ["models.vlm.resources.batch_size=1", "models.rm_llama.resources.batch_size=1"]


def curate_command(items: Path, run_dir: Path, overrides: list[str] | None = None) -> list[str]:
    """`python -m ray_jobs.curate` on `items` into `run_dir` with `overrides` (default: slow units)."""
    cmd = ["python", "-m", "ray_jobs.curate", "--input", str(items), "--output", str(run_dir)]
    for override in slow_unit_overrides() if overrides is None else overrides:
        cmd += ["--set", override]
    return cmd


def submit(cluster: LocalCluster, command: list[str], wait: bool) -> str:
    """`ray job submit` (token auth on); returns the submission id (after the job ends when `wait`)."""
    cli = ["ray", "job", "submit", "--address", cluster.dashboard, "--working-dir", str(REPO_ROOT)]
    out = cluster.cli(cli + ([] if wait else ["--no-wait"]) + ["--"] + command, timeout_s=900, check=False)
    ids = [w.strip("'\".,") for w in out.split() if w.strip("'\".,").startswith("raysubmit_")]
    if not ids:
        raise RuntimeError(f"no submission id in:\n{out[-3000:]}")
    return ids[0]


def status(cluster: LocalCluster, job_id: str) -> str:
    """The job's status from Ray's state API (`ray job status` prints a sentence, not the status name:
    "Job '...' succeeded")."""
    try:
        jobs = cluster.state("jobs", f"submission_id={job_id}")
    except RuntimeError:  # the dashboard busy or restarting: ask again
        return "UNKNOWN"
    return next((str(j.get("status")) for j in jobs if j.get("submission_id") == job_id), "UNKNOWN")


LIVE_GAUGE = "ray_carevl_curation_pairs_per_second"


def wait_terminal(cluster: LocalCluster, job_id: str, timeout_s: float = 900) -> str:
    """The job's final status; while it runs, the metrics endpoints are sampled for the driver's gauge."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = status(cluster, job_id)
        if state in TERMINAL:
            return state
        if state == "RUNNING":
            cluster.sample_metrics(LIVE_GAUGE)
        time.sleep(2)
    raise TimeoutError(f"job {job_id} not finished after {timeout_s}s")


def finished_units(run_dir: Path) -> int:
    folder = run_dir / "_units"
    return len(list(folder.glob("*.json"))) if folder.exists() else 0


def wait_for(cluster: LocalCluster, job_id: str, probe: Callable[[], Any], what: str,
             timeout_s: float = 600, status_every_s: float = 5) -> Any:
    """Poll `probe` every 0.1 s until it returns something truthy (that is returned); the job's status
    is asked only every `status_every_s` (a state API call takes seconds on a busy machine, and a
    fault must strike right after its trigger)."""
    deadline, asked = time.monotonic() + timeout_s, time.monotonic()
    while not (found := probe()):
        if time.monotonic() - asked > status_every_s:
            if (state := status(cluster, job_id)) in TERMINAL:
                raise RuntimeError(f"job {job_id} ended ({state}) before {what}")
            asked = time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s}s")
        time.sleep(0.1)
    return found


def wait_for_units(cluster: LocalCluster, job_id: str, run_dir: Path, n: int, timeout_s: float = 600) -> int:
    """Wait until `n` units are published; returns how many are."""
    wait_for(cluster, job_id, lambda: finished_units(run_dir) >= n, f"{n} finished units", timeout_s)
    return finished_units(run_dir)


def count_rows(run_dir: Path, expected: list[str]) -> tuple[int, int, int]:
    """(rows lost, rows duplicated, rows quarantined) of a finished run."""
    ids = [r for cls in ("high", "low") for f in sorted((run_dir / cls).glob("*.parquet"))
           for r in pq.read_table(f, columns=["pair_id"]).column(0).to_pylist()]
    counts = Counter(ids)
    lost = sum(1 for p in expected if p not in counts)
    duplicated = sum(n - 1 for n in counts.values() if n > 1) + sum(n for p, n in counts.items() if p not in set(expected))
    quarantined = sum(pq.read_table(f).num_rows for f in (run_dir / "quarantine").glob("*.parquet"))
    return lost, duplicated, quarantined


def strike(cluster: LocalCluster, job_id: str, run_dir: Path, fault: Callable[[], Any]) -> int:
    """Apply `fault` as soon as the first unit is published; returns the units published by then."""
    wait_for_units(cluster, job_id, run_dir, 1)
    fault()
    return finished_units(run_dir)


def _finish(cluster: LocalCluster, name: str, command: list[str], run_dir: Path, expected: list[str],
            first_state: str, start: float, units_at_fault: int = 0) -> FaultRun:
    """Re-submit until the job succeeds (at most twice more), then count the rows."""
    attempts, state = 1, first_state
    while state != "SUCCEEDED" and attempts < 3:
        attempts += 1
        state = wait_terminal(cluster, submit(cluster, command, wait=False))  # samples the live gauge
    if state != "SUCCEEDED":
        raise RuntimeError(f"{name}: curation did not succeed after {attempts} submissions")
    lost, duplicated, quarantined = count_rows(run_dir, expected)
    summary = json.loads((run_dir / "summary.json").read_text())
    if not summary["rows_conserved"]:
        raise RuntimeError(f"{name}: the summary does not conserve rows: {summary}")
    return FaultRun(name, attempts, len(expected), lost, duplicated, round(time.monotonic() - start, 1), quarantined,
                    summary["run"]["units_total"], units_at_fault)


def clean_run(cluster: LocalCluster, items: Path, run_dir: Path, expected: list[str]) -> FaultRun:
    start = time.monotonic()
    command = curate_command(items, run_dir)
    return _finish(cluster, "none", command, run_dir, expected,
                   wait_terminal(cluster, submit(cluster, command, wait=False)), start)


def expert_pids(cluster: LocalCluster) -> Callable[[], list[int]]:
    """A probe for the expert actor's pid: its process title ("ray::MapWorker(MapBatches(ExpertScorer))")
    read locally in a fraction of a second, so the victim is known as the actor starts; every tenth
    call asks the state API instead (seconds per call), for a Ray whose titles do not name the UDF."""
    calls = iter(range(1, 1 << 30))

    def probe() -> list[int]:
        by_title = [p.pid for p in cluster.processes("ExpertScorer")]
        return by_title or (cluster.actor_pids("ExpertScorer") if next(calls) % 10 == 0 else [])
    return probe


def raylet_killed(cluster: LocalCluster, items: Path, run_dir: Path, expected: list[str]) -> FaultRun:
    """SIGKILL the raylet of the worker node that hosts the expert actor (with every worker process on
    it) right after the first published unit; a new node joins."""
    start = time.monotonic()
    command = curate_command(items, run_dir)
    job = submit(cluster, command, wait=False)
    victim = expert_node(cluster, job)
    at_fault = strike(cluster, job, run_dir, lambda: cluster.kill_node(victim))
    cluster.nodes.remove(victim)
    cluster.add_worker(f"{victim.name}r")  # the autoscaler's replacement node
    return _finish(cluster, "worker raylet SIGKILL", command, run_dir, expected, wait_terminal(cluster, job), start,
                   at_fault)


def expert_actor_killed(cluster: LocalCluster, items: Path, run_dir: Path, expected: list[str]) -> FaultRun:
    """SIGKILL the expert scorer's actor process right after the first published unit."""
    start = time.monotonic()
    command = curate_command(items, run_dir)
    job = submit(cluster, command, wait=False)
    [pid, *_] = wait_for(cluster, job, expert_pids(cluster), "expert actor")
    at_fault = strike(cluster, job, run_dir, lambda: cluster.kill_pid(pid))
    return _finish(cluster, "expert actor SIGKILL", command, run_dir, expected, wait_terminal(cluster, job), start,
                   at_fault)


def driver_killed(cluster: LocalCluster, items: Path, run_dir: Path, expected: list[str]) -> FaultRun:
    """SIGKILL the job's driver right after the first published unit, then `ray job submit` the same
    command again."""
    start = time.monotonic()
    command = curate_command(items, run_dir)
    job = submit(cluster, command, wait=False)
    pid = wait_for(cluster, job, lambda: cluster.driver_pid(job), "driver pid in `ray list jobs`")
    at_fault = strike(cluster, job, run_dir, lambda: cluster.kill_pid(pid))
    state = wait_terminal(cluster, job)
    return _finish(cluster, "driver SIGKILL + resubmit", command, run_dir, expected,
                   "FAILED" if state == "SUCCEEDED" else state, start, at_fault)


def expert_node(cluster: LocalCluster, job: str) -> Node:
    """The known worker node that hosts a live expert actor, waiting for one."""
    expert = expert_pids(cluster)
    return wait_for(cluster, job, lambda: [n for n in map(cluster.node_of, expert())
                                           if n is not None and n is not cluster.nodes[0]], "expert actor")[0]


def _expert_pid(cluster: LocalCluster, job: str, exclude: frozenset[int] = frozenset()) -> int:
    """The pid of a live expert actor, wherever it runs: a restarted actor may land on a node whose
    `ray start` has not returned yet, which `node_of` cannot name (the head has no CPUs: never there)."""
    probe = expert_pids(cluster)
    return wait_for(cluster, job, lambda: [p for p in probe() if p not in exclude], "a live expert actor")[0]


def three_faults(cluster: LocalCluster, items: Path, run_dir: Path, expected: list[str]) -> FaultRun:
    """The three faults in one run, each after more units are published: the raylet of the expert's
    worker node, then the expert actor Ray Data restarted elsewhere, then the driver; then the job is
    submitted again. The CI variant of the three scenarios above (one job's start-up instead of three)."""
    start = time.monotonic()
    command = curate_command(items, run_dir)
    job = submit(cluster, command, wait=False)
    node = expert_node(cluster, job)
    struck = [strike(cluster, job, run_dir, lambda: cluster.kill_node(node))]
    doomed = frozenset(expert_pids(cluster)())  # actors of the killed node linger for a moment
    cluster.nodes.remove(node)
    # The replacement node joins in the background, as an autoscaler's would: `ray start` takes seconds,
    # and a fast job could finish meanwhile, before the next faults.
    joining = threading.Thread(target=cluster.add_worker, args=(f"{node.name}r",), daemon=True)
    joining.start()
    pid = _expert_pid(cluster, job, exclude=doomed)  # the pool's replacement actor
    wait_for_units(cluster, job, run_dir, struck[-1] + 1)
    cluster.kill_pid(pid)
    struck.append(finished_units(run_dir))
    driver = wait_for(cluster, job, lambda: cluster.driver_pid(job), "driver pid in `ray list jobs`")
    _expert_pid(cluster, job, exclude=doomed | {pid})  # the actor is back before the driver goes
    wait_for_units(cluster, job, run_dir, struck[-1] + 1)
    cluster.kill_pid(driver)
    struck.append(finished_units(run_dir))
    state = wait_terminal(cluster, job)
    joining.join(timeout=300)
    run = _finish(cluster, "raylet, actor, driver SIGKILL + resubmit", command, run_dir, expected,
                  "FAILED" if state == "SUCCEEDED" else state, start, struck[0])
    run.units_at_each_fault = struck
    return run


SCENARIOS = {"raylet": raylet_killed, "actor": expert_actor_killed, "driver": driver_killed, "all": three_faults}
