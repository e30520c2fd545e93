"""The curation job (paper 3.1, 3.2; first loop of Algorithm 1) as one streaming Ray Data pipeline.

    work units -> read + validate -> [candidates] -> captions -> [strong judge] -> experts -> write

Rows stay at item level through every model stage; each model runs in its own actor pool whose
resources come from its model spec (co-located experts share one pool). The driver only plans units,
collects small receipts and publishes finished units, so memory does not grow with the input.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs
import ray

from carevl.config import CarevlConfig, ModelSpec, Resources
from carevl.curation import units as U
from carevl.curation.backends import model_id
from carevl.curation.candidates import CandidateCheck, CandidateGenerator
from carevl.curation.captions import Captioner
from carevl.curation.experts import ExpertScorer
from carevl.curation.outputs import write_outputs
from carevl.curation.read import read_and_validate
from carevl.curation.strong_judge import StrongJudge
from carevl.curation.summary import build_summary, empty_stats, merge_stats
from carevl.curation.validate import ValidationContext
from carevl.data.io import join, resolve
from carevl.metrics import record_curation
from carevl.planning import check_placement
from carevl.ray_utils import init_ray

log = logging.getLogger("carevl.curation")


def check_config(config: CarevlConfig) -> None:
    """Cross-checks the curation job needs beyond the config's own validation."""
    judge = config.curation.strong_judge
    if judge.backend == "openai" and config.models[judge.model].backend != "openai":
        raise ValueError(f"curation.strong_judge.backend 'openai' needs model '{judge.model}' with backend openai")
    if judge.backend == "local" and config.models[judge.model].backend == "openai":
        raise ValueError(f"curation.strong_judge.backend 'local' cannot use the endpoint model '{judge.model}'")
    for group, members in expert_groups(config).items():
        if len({config.models[m].resources.concurrency for m in members}) > 1:
            raise ValueError(f"co-located experts {members} (group '{group}') must share one concurrency")


def expert_groups(config: CarevlConfig) -> dict[str, list[str]]:
    """Experts by actor pool: a `colocate_group` shares one pool, every other expert gets its own."""
    groups: dict[str, list[str]] = {}
    for name in config.curation.experts:
        group = config.models[name].resources.colocate_group
        groups.setdefault(f"group:{group}" if group else name, []).append(name)
    return groups


def group_resources(specs: list[ModelSpec]) -> Resources:
    """One pool for co-located models: GPU shares add up (each model holds its own slice of memory); the
    process runs the models one after another, so it needs the CPUs of its hungriest member."""
    first = specs[0].resources
    return first.model_copy(update={
        "num_gpus": sum(s.resources.num_gpus for s in specs),
        "num_cpus": max(s.resources.num_cpus for s in specs),
        "batch_size": min(s.resources.batch_size for s in specs),
    })


def actor_threads(resources: Resources) -> int:
    """Torch threads of an actor: the CPUs its pool reserves, rounded up."""
    return max(1, math.ceil(resources.num_cpus))


def pool_args(resources: Resources, backend: str = "transformers") -> dict[str, Any]:
    """map_batches arguments of an actor pool from config resources."""
    lo, hi = resources.concurrency
    args: dict[str, Any] = dict(batch_size=resources.batch_size, batch_format="pyarrow", num_cpus=resources.num_cpus,
                                compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi))
    # vLLM with tensor parallelism places its own GPU workers; the driving actor then holds no GPU itself.
    gpus = 0.0 if backend == "vllm" and resources.tensor_parallel_size > 1 else resources.num_gpus
    if gpus:
        args["num_gpus"] = gpus
    if resources.accelerator_type:
        args["accelerator_type"] = resources.accelerator_type
    return args


def check_fits(pools: list[dict[str, Any]], task_num_cpus: float) -> None:
    """Warn when the actor pools' minimum sizes plus one light task cannot run at once on the cluster as
    it is now: the streaming pipeline would wait for resources (fine if an autoscaler adds nodes)."""
    need_cpu = task_num_cpus + sum(p["num_cpus"] * p["compute"].min_size for p in pools)
    need_gpu = sum(p.get("num_gpus", 0) * p["compute"].min_size for p in pools)
    have = ray.cluster_resources()
    if need_cpu > have.get("CPU", 0) + 1e-9 or need_gpu > have.get("GPU", 0) + 1e-9:
        log.warning("curation needs at least %.2f CPU / %.2f GPU at once (actor pools at their minimum size "
                    "plus one task) but the cluster has %.2f CPU / %.2f GPU now; it will wait for more nodes. "
                    "Lower models.<name>.resources or add nodes.", need_cpu, need_gpu,
                    have.get("CPU", 0), have.get("GPU", 0))


def _check_candidates(batch, *, limits, judge_from_column):
    return CandidateCheck(limits, judge_from_column)(batch)


def build_dataset(config: CarevlConfig, todo: list[U.WorkUnit], ctx: ValidationContext, run_dir: str,
                  caption_store: str) -> ray.data.Dataset:
    """The lazy streaming pipeline over the units still to do; its rows are write receipts."""
    cur, models = config.curation, config.models
    cache, requests = str(config.paths.model_cache_dir()), config.paths.request_cache
    common = dict(model_cache=cache, limits=cur.limits, allow_remote_images=cur.allow_remote_images,
                  request_cache=requests)
    light = dict(batch_format="pyarrow", num_cpus=cur.task_num_cpus)
    pools: list[dict[str, Any]] = []

    def pool(resources: Resources, backend: str) -> dict[str, Any]:
        pools.append(pool_args(resources, backend))
        return pools[-1]

    ds = ray.data.from_items([u.to_dict() for u in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(read_and_validate, batch_size=1, fn_kwargs={"ctx": ctx}, **light)
    by_model: dict[str, list[float]] = {}
    for source in cur.candidates if ctx.has_candidates else ():
        by_model.setdefault(source.model, []).append(source.temperature)
    for name, temperatures in by_model.items():
        spec = models[name]
        ds = ds.map_batches(CandidateGenerator, fn_constructor_kwargs=dict(
            model=name, spec=spec, temperatures=temperatures, http=cur.strong_judge, seed=config.seed, **common),
            **pool(spec.resources, spec.backend))
    if ctx.has_candidates:
        ds = ds.map_batches(_check_candidates, fn_kwargs=dict(limits=cur.limits, judge_from_column=ctx.judge_from_column),
                            **light)
    spec = models[cur.caption_model]
    ds = ds.map_batches(Captioner, fn_constructor_kwargs=dict(spec=spec, store_root=caption_store,
                                                              http=cur.strong_judge, seed=config.seed, **common),
                        **pool(spec.resources, spec.backend))
    if cur.strong_judge.backend != "column":
        spec = models[cur.strong_judge.model]
        ds = ds.map_batches(StrongJudge, fn_constructor_kwargs=dict(spec=spec, settings=cur.strong_judge,
                                                                    seed=config.seed, **common),
                            **pool(spec.resources, spec.backend))
    for members in expert_groups(config).values():
        specs = [models[m] for m in members]
        backend = "vllm" if any(s.backend == "vllm" for s in specs) else "transformers"
        resources = group_resources(specs)
        ds = ds.map_batches(ExpertScorer, fn_constructor_kwargs=dict(
            experts={m: models[m] for m in members}, model_cache=cache,
            num_threads=actor_threads(resources)), **pool(resources, backend))
    check_fits(pools, cur.task_num_cpus)
    return ds.map_batches(write_outputs, batch_size=cur.unit_items, fn_kwargs=dict(
        run_dir=run_dir, experts=cur.experts, tau=cur.effective_tau, rows_per_file=cur.rows_per_output_file),
        **light)


def run_fingerprint(config: CarevlConfig, input_uri: str) -> str:
    """What must not change between a run and its resumption: input, curation settings, models used."""
    cur = config.curation
    used = {cur.caption_model, *cur.experts, *(c.model for c in cur.candidates)}
    if cur.strong_judge.model:
        used.add(cur.strong_judge.model)
    source = input_uri if "://" in input_uri else os.path.abspath(os.path.expanduser(input_uri))
    keep = {"input": source, "unit_items": cur.unit_items, "tau": cur.effective_tau, "experts": cur.experts,
            "judge": cur.strong_judge.backend, "candidates": [c.model_dump() for c in cur.candidates],
            "models": {m: config.models[m].model_dump(exclude={"resources"}) for m in sorted(used)},
            "limits": cur.limits.model_dump(), "seed": config.seed}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _claim_run_dir(run_dir: str, fingerprint: str) -> None:
    fs, path = resolve(run_dir)
    fs.create_dir(path, recursive=True)
    marker = join(run_dir, "_run.json")
    if fs.get_file_info(resolve(marker)[1]).type == pafs.FileType.File:
        previous = json.loads(U.read_text(marker))["fingerprint"]
        if previous != fingerprint:
            raise ValueError(f"{run_dir} holds a run with different input or curation settings "
                             f"({previous} != {fingerprint}); use a new output folder")
        return
    U.write_text_atomic(marker, json.dumps({"fingerprint": fingerprint}))


@dataclass
class _Progress:
    units: dict[str, U.WorkUnit]
    interval_s: float
    start: float = field(default_factory=time.monotonic)
    last_log: float = field(default_factory=time.monotonic)
    pending: dict[str, dict] = field(default_factory=dict)
    finished: int = 0
    pairs: int = 0
    rows: int = 0

    def receive(self, run_dir: str, receipt: dict[str, Any]) -> None:
        unit = self.units[receipt["unit_id"]]
        stats = json.loads(receipt["stats"])
        slot = self.pending.setdefault(unit.unit_id, {"rows": 0, "files": [], "stats": empty_stats()})
        slot["rows"] += receipt["rows"]
        slot["files"] += json.loads(receipt["files"])
        merge_stats(slot["stats"], stats)
        self.rows += receipt["rows"]
        self.pairs += sum(stats["pairs"].values())
        record_curation(stats, self.pairs / max(time.monotonic() - self.start, 1e-9))
        if slot["rows"] > unit.rows:
            raise RuntimeError(f"unit {unit.unit_id}: {slot['rows']} rows written for {unit.rows} input rows")
        if slot["rows"] == unit.rows:
            U.publish_unit(run_dir, unit, slot["files"], slot["stats"])
            del self.pending[unit.unit_id]
            self.finished += 1
        now = time.monotonic()
        if now - self.last_log >= self.interval_s:
            self.last_log = now
            elapsed = now - self.start
            log.info("curation: %d/%d units, %d rows, %d pairs, %.1f pairs/s", self.finished, len(self.units),
                     self.rows, self.pairs, self.pairs / max(elapsed, 1e-9))


def run_curation(config: CarevlConfig, input_uri: str, run_dir: str) -> dict[str, Any]:
    """Curate `input_uri` into `run_dir` (resuming a previous run there); returns the summary."""
    check_config(config)
    check_placement(config, "curate")  # fail in seconds when a model fits no node
    cur = config.curation
    init_ray(config)
    _claim_run_dir(run_dir, run_fingerprint(config, input_uri))
    files = U.list_input_files(input_uri)
    scan = ray.remote(num_cpus=cur.task_num_cpus)(U.scan_file)
    scans = ray.get([scan.remote(f, cur.unit_items) for f in files])
    units = U.plan_units(files, scans, cur.unit_items)
    done = U.completed_units(run_dir)
    unknown = set(done) - {u.unit_id for u in units}
    if unknown:
        raise ValueError(f"{run_dir} has finished units the input does not have ({sorted(unknown)[:3]}...)")
    removed = U.remove_unfinished(run_dir, set(done))
    todo = [u for u in units if u.unit_id not in done]
    log.info("curation: %d input rows in %d units, %d already done, %d to run (%d stale files removed)",
             sum(s.rows for s in scans), len(units), len(done), len(todo), removed)
    # Candidate pools start only when some item arrives without responses (paper 3.1).
    needs_candidates = bool(cur.candidates) and any(s.without_responses for s in scans)
    ctx = ValidationContext(limits=cur.limits, has_candidates=needs_candidates,
                            judge_from_column=cur.strong_judge.backend == "column",
                            allow_remote_images=cur.allow_remote_images, first_row=U.duplicate_first_rows(scans))
    progress = _Progress({u.unit_id: u for u in todo}, cur.progress_interval_s)
    if todo:
        ds = build_dataset(config, todo, ctx, run_dir, cur.caption_store or join(run_dir, "captions"))
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for receipt in batch.to_pylist():
                progress.receive(run_dir, receipt)
    if progress.pending or progress.finished != len(todo):
        raise RuntimeError(f"curation ended with {len(todo) - progress.finished} unfinished units")
    U.remove_unfinished(run_dir, {u.unit_id for u in units})  # staged leftovers of retried tasks only
    return _finish(config, run_dir, units, len(done), progress, needs_candidates)


def _finish(config: CarevlConfig, run_dir: str, units: list[U.WorkUnit], skipped: int,
            progress: _Progress, with_candidates: bool) -> dict[str, Any]:
    cur = config.curation
    stats = empty_stats()
    for manifest in U.completed_units(run_dir).values():
        merge_stats(stats, manifest["stats"])
    seconds = time.monotonic() - progress.start
    used = {"caption_model": cur.caption_model, **{f"expert:{e}": e for e in cur.experts}}
    if with_candidates:
        used.update({f"candidate:{c.model}": c.model for c in cur.candidates})
    if cur.strong_judge.model:
        used["strong_judge"] = cur.strong_judge.model
    run = {"units_total": len(units), "units_run": progress.finished, "units_skipped": skipped,
           "rows": progress.rows, "pairs": progress.pairs, "seconds": round(seconds, 3),
           "pairs_per_second": round(progress.pairs / seconds, 3) if seconds > 0 else 0.0,
           "items_per_second": round(progress.rows / seconds, 3) if seconds > 0 else 0.0}
    summary = build_summary(stats, experts=cur.experts, tau=cur.effective_tau,
                            model_ids={role: model_id(config.models[m]) for role, m in used.items()},
                            config_hash=config.config_hash(), run=run)
    U.write_text_atomic(join(run_dir, "summary.json"), json.dumps(summary, indent=2))
    log.info("curation finished: %d pairs (%d high, %d low), %d quarantined; summary in %s",
             summary["pairs"]["total"], summary["pairs"]["high"], summary["pairs"]["low"],
             summary["quarantined_items"], join(run_dir, "summary.json"))
    return summary
