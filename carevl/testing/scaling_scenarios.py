"""The curation scenarios of the autoscaling tier on a `FakeCloud`, each recorded on a `Timeline` and
measured: curation from zero GPU nodes, a spot preemption mid-curation, and a stage that asks for a
bundle no node type offers. Jobs go in through the Jobs API (`ray job submit`, token authentication on) with the tiny
preset, whose caption and expert models are given GPUs by `--set` so they need GPU instances.
Used by tests/autoscale (which assert on the results).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carevl.config import load_config
from carevl.planning.cost import best_node
from carevl.planning.nodes import from_cluster_yaml
from carevl.planning.placement import plan_stage
from carevl.testing import curation_faults
from carevl.testing.curation_faults import (
    count_rows,
    curate_command,
    finished_units,
    status,
    submit,
    wait_for,
    wait_for_units,
    wait_terminal,
    write_items,
)
from carevl.testing.fake_cloud import FakeCloud, tolerant, wait_until
from carevl.testing.items import MICRO_EXPERTS, tiny_overrides
from carevl.testing.timeline import Timeline, pool_of

EXPERTS = MICRO_EXPERTS.strip("[]").split(", ")
# The caption model on a GPU of its own, the four co-located experts sharing one (0.25 each): two
# GPU pools, so curation needs two GPU instances (and CPU ones for reading and writing).
GPU_OVERRIDES = ["models.vlm.resources.num_gpus=1", *(f"models.{m}.resources.num_gpus=0.25" for m in EXPERTS)]
IDLE_TIMEOUT_S = 180      # from the end of a job to zero GPU instances, at most (scaled idle timeout: 10 s)


@dataclass
class ScenarioRun:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)


def curation_overrides(unit_items: int) -> list[str]:
    return tiny_overrides(unit_items) + GPU_OVERRIDES


def slow_unit_overrides() -> list[str]:
    """The slow units of the cluster fault scenarios, with the GPU requests of this tier."""
    return curation_faults.slow_unit_overrides() + GPU_OVERRIDES


def planned_curation(overrides: list[str], cluster_yaml: Path) -> list[dict[str, Any]]:
    """What `ray_jobs.plan` says for the GPU models of curation with these overrides on cluster.yaml:
    the node types each fits (replicas per node) and the one it prices the work on."""
    config = load_config(overrides=overrides)
    nodes = from_cluster_yaml(cluster_yaml)
    rows = []
    for need in plan_stage(config, "curate", nodes):
        if need.gpus:
            cheapest = best_node(need, nodes)
            rows.append({"role": need.role, "model": need.model, "gpus": need.gpus, "fits": need.fits,
                         "priced_on": cheapest.name if cheapest else None})
    return rows


def compare_with_plan(plan: list[dict], launched: dict[str, int], gpus_per_type: dict[str, int]) -> dict[str, Any]:
    """The GPU instances the autoscaler launched (peak count per type) against the plan: every launched
    GPU type must be one the plan says the models fit; the GPUs launched against the GPUs the pools ask
    for."""
    fitting = set().union(*(row["fits"] for row in plan)) if plan else set()
    launched_gpu = {t: n for t, n in launched.items() if gpus_per_type.get(t)}
    return {"plan": plan, "launched_gpu_instances": launched_gpu,
            "launched_gpus": sum(n * gpus_per_type[t] for t, n in launched_gpu.items()),
            "launched_types_the_plan_allows": sorted(set(launched_gpu) & fitting),
            "launched_types_the_plan_rules_out": sorted(set(launched_gpu) - fitting),
            "gpus_asked_by_pools": sum(row["gpus"] for row in plan),
            "plan_prices_on": sorted({row["priced_on"] for row in plan if row["priced_on"]})}


def live_leftovers(cloud: FakeCloud) -> dict[str, list]:
    """Actors that still hold resources and placement groups not removed (none should be left after a
    job ends and its nodes are released)."""
    from ray.util.state import list_actors, list_placement_groups

    actors = list_actors(address=cloud.dashboard, filters=[("state", "=", "ALIVE")], detail=True, limit=10_000,
                         raise_on_missing_output=False)
    holding = [f"{a.class_name} {a.repr_name or ''} {a.required_resources}".strip() for a in actors
               if any(v for v in (a.required_resources or {}).values()) or "MapWorker" in (a.class_name or "")]
    groups = list_placement_groups(address=cloud.dashboard, detail=True, limit=10_000, raise_on_missing_output=False)
    return {"actors": holding, "placement_groups": [f"{g.placement_group_id} {g.state}" for g in groups
                                                    if g.state != "REMOVED"]}


def new_gpu_nodes(cloud: FakeCloud, known: set[str]) -> list:
    """GPU instances up now that are not among the node ids `known`."""
    return [n for n in cloud.gpu_nodes() if n.node_id not in known]


def gpu_release_s(cloud: FakeCloud, timeline: Timeline, after: float) -> float | None:
    """From the moment no GPU actor (pool actor, train worker or Serve replica) is left to the moment no
    GPU instance is, read off the timeline (`Timeline.release_s`)."""
    gpu_types = cloud.gpu_types()

    def busy(s: dict) -> bool:
        pools = (s[key].get(p) for key in ("actors", "waiting") for p in timeline.gpu_pools)
        return any(pools) or any(s["replicas"].values())
    return timeline.release_s(busy, lambda s: any(t in gpu_types for t in s["nodes"]), after)


def job_seconds(cloud: FakeCloud, submission_id: str, submitted_at: float) -> float | None:
    """Seconds from `submitted_at` (wall clock, before `ray job submit` ran) to the job's end as Ray
    recorded it (polling the status from outside lags behind it on a busy machine)."""
    jobs = cloud.state("jobs", f"submission_id={submission_id}", detail=True)
    end_ms = next((j.get("end_time") for j in jobs if j.get("submission_id") == submission_id), None)
    return round(end_ms / 1000 - submitted_at, 1) if end_ms else None


def wait_no_gpu_nodes(cloud: FakeCloud, timeout_s: float = IDLE_TIMEOUT_S) -> float:
    """Seconds until no GPU instance is left (TimeoutError after `timeout_s`)."""
    start = time.monotonic()
    wait_until(lambda: not cloud.gpu_nodes(), "release of every GPU instance", timeout_s)
    return time.monotonic() - start


def curation_from_zero(cloud: FakeCloud, timeline: Timeline, folder: Path, items: int = 8,
                       unit_items: int = 2) -> ScenarioRun:
    """(a) Curation submitted to a cluster with no worker: GPU instances come for the caption and
    expert pools, the job ends with one row per pair, the instances go after the idle timeout."""
    run = ScenarioRun("curation_from_zero")
    path, expected = write_items(folder, items, seed=11)
    overrides = curation_overrides(unit_items)
    run_dir = folder / "run"
    if cloud.gpu_nodes():
        raise RuntimeError("curation_from_zero needs a cluster with no GPU instance at the start")
    submitted, wall = timeline.mark("submit"), time.time()
    job = submit(cloud, curate_command(path, run_dir, overrides), wait=False)
    state = wait_terminal(cloud, job)
    timeline.mark("job end seen")
    lost, duplicated, quarantined = count_rows(run_dir, expected)
    wait_no_gpu_nodes(cloud)
    timeline.mark("no GPU instance")
    first_gpu = timeline.first(lambda s: any(t in cloud.gpu_types() for t in s["nodes"]), after=submitted)
    run.figures = {"job": state, "pairs": len(expected), "rows_lost": lost, "rows_duplicated": duplicated,
                   "quarantined": quarantined,
                   "submit_to_first_gpu_node_s": None if first_gpu is None else round(first_gpu - submitted, 1),
                   "submit_to_job_end_s": job_seconds(cloud, job, wall),
                   "idle_to_zero_gpu_nodes_s": gpu_release_s(cloud, timeline, submitted)}
    gpus_per_type = {name: t["resources"].get("GPU", 0) for name, t in cloud.types().items()}
    run.details = {"plan_vs_launched": compare_with_plan(planned_curation(overrides, cloud.cluster_yaml),
                                                         timeline.peak("nodes"), gpus_per_type),
                   "leftovers": live_leftovers(cloud), "submission": job,
                   "logs": job_logs(cloud, job) if state != "SUCCEEDED" else ""}
    return run


def job_logs(cloud: FakeCloud, job: str, tail: int = 4000) -> str:
    """The last `tail` characters of a job's driver log (`ray job logs`), for a failure's cause."""
    return cloud.cli(["ray", "job", "logs", job, "--address", cloud.dashboard], check=False)[-tail:]


def infeasible_stage(cloud: FakeCloud, folder: Path, gpus: int) -> ScenarioRun:
    """(e) Curation whose caption model asks for `gpus` GPUs in one bundle (more than any node type
    has): the job must stop at its placement check, within seconds, naming the stage and node types."""
    run = ScenarioRun("infeasible_stage")
    path, _ = write_items(folder, 2, seed=12)
    overrides = curation_overrides(2) + [f"models.vlm.resources.num_gpus={gpus}"]
    start = time.monotonic()
    job = submit(cloud, curate_command(path, folder / "run", overrides), wait=True)
    wait_until(lambda: status(cloud, job) in ("FAILED", "SUCCEEDED", "STOPPED"), "end of the job", 120)
    run.figures = {"job": status(cloud, job), "submit_to_end_s": round(time.monotonic() - start, 1),
                   "gpu_nodes_launched": len(cloud.gpu_nodes())}
    run.details = {"logs": job_logs(cloud, job)}
    return run


def pool_actors(cloud: FakeCloud, pool: str, state: str | None = "ALIVE") -> list:
    """The actors (`ray.util.state` rows) of Ray Data pool `pool` (e.g. "ExpertScorer") in `state`
    (None: in any state)."""
    from ray.util.state import list_actors

    return [a for a in list_actors(address=cloud.dashboard, filters=[("state", "=", state)] if state else None,
                                   detail=True, limit=10_000, raise_on_missing_output=False)
            if pool_of(a.class_name or "") == ("actors", pool)]


def preemption_mid_curation(cloud: FakeCloud, timeline: Timeline, folder: Path, items: int = 64,
                            notice_s: float = 2.0) -> ScenarioRun:
    """(b) The GPU instance of the caption pool is preempted (drained with reason PREEMPTION, its
    raylet killed at the deadline) right after the first unit is published: the autoscaler launches a
    replacement, Ray restarts the pool's actor there, and the job ends with one row per pair.

    Why the caption pool: the only other GPU instance holds the expert pool, which scores behind the
    captions and so cannot finish (and free its instance) before the lost captions are made again;
    the restarted actor needs a new instance whatever the timing. Struck instead, the expert pool's
    actor would find the caption pool's instance free whenever captioning ended before Ray marked the
    lost node dead (health checks, seconds), and no replacement would come. `items` is enough that
    captioning is still under way when the first unit is published (checked: the struck actor must be
    restarted, `caption_restarts_counted_as_preemption`)."""
    run = ScenarioRun("preemption_mid_curation")
    path, expected = write_items(folder, items, seed=13)
    run_dir = folder / "run"
    submitted, wall = timeline.mark("submit"), time.time()
    job = submit(cloud, curate_command(path, run_dir, slow_unit_overrides()), wait=False)
    captioners = tolerant(lambda: [a.node_id for a in pool_actors(cloud, "Captioner") if a.node_id])
    wait_for_units(cloud, job, run_dir, 1)
    victim = wait_for(cloud, job, captioners, "caption actor still alive at the first unit (too few items?)",
                      timeout_s=30)[0]
    before = {n.node_id for n in cloud.gpu_nodes()}
    at_fault = finished_units(run_dir)
    notice = timeline.mark("preemption notice")
    killed = cloud.preempt(victim, notice_s=notice_s)
    lost_at = timeline.mark("instance lost")
    replacement = wait_for(cloud, job, tolerant(lambda: new_gpu_nodes(cloud, before)), "a replacement GPU instance")[0]
    replaced_at = timeline.mark("replacement up")
    state = wait_terminal(cloud, job)
    timeline.mark("job end seen")
    caption_done = timeline.first(lambda s: not (s["actors"].get("Captioner") or s["waiting"].get("Captioner")),
                                  after=replaced_at)
    # The pools' actors as Ray recorded them (dead now the job is over): restarts charged to preemption
    # (no other scenario preempts a curation actor).
    preempted_restarts = {pool: max((a.num_restarts_due_to_node_preemption or 0
                                     for a in pool_actors(cloud, pool, state=None)), default=0)
                          for pool in ("ExpertScorer", "Captioner")}
    lost, duplicated, quarantined = count_rows(run_dir, expected)
    wait_no_gpu_nodes(cloud)
    timeline.mark("no GPU instance")
    run.figures = {"job": state, "pairs": len(expected), "rows_lost": lost, "rows_duplicated": duplicated,
                   "quarantined": quarantined, "units_at_fault": at_fault,
                   "units_total": len(list((run_dir / "_units").glob("*.json"))),
                   "notice_s": notice_s, "instance_lost_to_replacement_up_s": round(replaced_at - lost_at, 1),
                   "caption_pool_done_after_loss_s": None if caption_done is None else round(caption_done - lost_at, 1),
                   "submit_to_job_end_s": job_seconds(cloud, job, wall),
                   "idle_to_zero_gpu_nodes_s": gpu_release_s(cloud, timeline, submitted),
                   "expert_restarts_counted_as_preemption": preempted_restarts["ExpertScorer"],
                   "caption_restarts_counted_as_preemption": preempted_restarts["Captioner"]}
    run.details = {"preempted_node": victim, "raylet_killed_at_deadline": killed is not None,
                   "replacement_node": replacement.node_id,
                   "replacement_type": replacement.ray_node_type_name, "preemption_notice_at_s": notice,
                   "leftovers": live_leftovers(cloud), "submission": job,
                   "logs": job_logs(cloud, job) if state != "SUCCEEDED" else ""}
    return run
