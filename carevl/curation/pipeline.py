"""The curation job (paper 3.1, 3.2; first loop of Algorithm 1) as one streaming Ray Data pipeline.

    work units -> read + validate -> [candidates] -> captions -> [strong judge] -> experts -> write

Rows stay at item level through every model stage; each model runs in its own actor pool whose
resources come from its model spec (co-located experts share one pool). The driver only plans units,
collects small receipts and publishes finished units, so memory does not grow with the input.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import ray

from carevl import ledger
from carevl.config import CarevlConfig, Resources
from carevl.curation import units as U
from carevl.curation.candidates import CandidateCheck, CandidateGenerator
from carevl.curation.captions import Captioner
from carevl.curation.experts import ExpertScorer
from carevl.curation.outputs import write_outputs
from carevl.curation.read import read_and_validate
from carevl.curation.strong_judge import StrongJudge
from carevl.curation.summary import build_summary, empty_stats, merge_stats
from carevl.curation.validate import ValidationContext
from carevl.data.io import join
from carevl.models.backends import model_id
from carevl.ray_utils import actor_threads, check_fits, group_resources, init_ray, pool_args
from carevl.metrics import record_curation
from carevl.planning import check_placement

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


def _check_candidates(batch, *, limits, judge_from_column):
    return CandidateCheck(limits, judge_from_column)(batch)


def build_dataset(config: CarevlConfig, todo: list[ledger.WorkUnit], ctx: ValidationContext, run_dir: str,
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
    # One unit per read task, never fused into the next pool. Ray Data fuses a map with a following
    # model pool of equal remote args, and the fused task then takes the pool's batch_size in *units*
    # (16 units of 1,000 items each in a 1M-pair run): the experts idle until all are read and units
    # publish 16 at a time. The read declares the memory it holds (a unit's rows), which no model pool
    # declares, so the remote args differ and the read stays an operator of its own.
    ds = ds.map_batches(read_and_validate, batch_size=1, fn_kwargs={"ctx": ctx}, memory=cur.read_memory_mb * 2**20,
                        **light)
    by_model: dict[str, list[float]] = {}
    for source in cur.candidates if ctx.has_candidates else ():
        by_model.setdefault(source.model, []).append(source.temperature)
    for name, temperatures in by_model.items():
        spec = models[name]
        ds = ds.map_batches(CandidateGenerator, fn_constructor_kwargs=dict(
            model=name, spec=spec, temperatures=temperatures, seed=config.seed, **common),
            **pool(spec.resources, spec.backend))
    if ctx.has_candidates:
        ds = ds.map_batches(_check_candidates, fn_kwargs=dict(limits=cur.limits, judge_from_column=ctx.judge_from_column),
                            **light)
    if cur.caption_backend == "model":   # with "column", each validated row already carries its caption
        spec = models[cur.caption_model]
        ds = ds.map_batches(Captioner, fn_constructor_kwargs=dict(spec=spec, store_root=caption_store,
                                                                  seed=config.seed, **common),
                            **pool(spec.resources, spec.backend))
    if cur.strong_judge.backend != "column":
        spec = models[cur.strong_judge.model]
        ds = ds.map_batches(StrongJudge, fn_constructor_kwargs=dict(spec=spec, seed=config.seed, **common),
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


def run_fingerprint(config: CarevlConfig, input_uri: str) -> dict[str, Any]:
    """What must not change between a run and its resumption: input, curation settings, models used
    (resources and HTTP settings excluded: they change how fast, not what), code version."""
    cur = config.curation
    captioner = cur.caption_model if cur.caption_backend == "model" else None
    used = {captioner, *cur.experts, *(c.model for c in cur.candidates), cur.strong_judge.model} - {None}
    keep = {"unit_items": cur.unit_items, "tau": cur.effective_tau, "experts": cur.experts,
            "captions": cur.caption_backend,
            "judge": cur.strong_judge.backend, "candidates": [c.model_dump() for c in cur.candidates],
            "models": {m: config.models[m].model_dump(exclude={"resources", "http"}) for m in sorted(used)},
            "limits": cur.limits.model_dump(), "allow_remote_images": cur.allow_remote_images, "seed": config.seed}
    return ledger.run_fingerprint({"items": ledger.input_fingerprint(input_uri)}, keep)


@dataclass
class _Progress(ledger.UnitProgress):
    pairs: int = 0

    def receive(self, led: ledger.RunLedger, receipt: dict[str, Any]) -> None:
        stats = self.add(led, receipt, empty_stats, merge_stats)
        self.pairs += sum(stats["pairs"].values())
        record_curation(stats, self.pairs / max(time.monotonic() - self.start, 1e-9))
        elapsed = self.log_due()
        if elapsed is not None:
            log.info("curation: %d/%d units, %d rows, %d pairs, %.1f pairs/s", self.finished, len(self.units),
                     self.rows, self.pairs, self.pairs / max(elapsed, 1e-9))


def run_curation(config: CarevlConfig, input_uri: str, run_dir: str) -> dict[str, Any]:
    """Curate `input_uri` into `run_dir` (resuming a previous run there); returns the summary."""
    check_config(config)
    check_placement(config, "curate")  # fail in seconds when a model fits no node
    cur = config.curation
    init_ray(config)
    led = ledger.RunLedger(run_dir, "curation")
    led.claim(run_fingerprint(config, input_uri))
    files = U.list_input_files(input_uri)
    scan = ray.remote(num_cpus=cur.task_num_cpus)(U.scan_file)
    scans = ray.get([scan.remote(f, cur.unit_items) for f in files])
    units = U.plan_units(files, scans, cur.unit_items)
    done = led.completed_units()
    unknown = set(done) - {u.unit_id for u in units}
    if unknown:
        raise ValueError(f"{run_dir} has finished units the input does not have ({sorted(unknown)[:3]}...)")
    removed = led.remove_unfinished(set(done), U.OUTPUT_CLASSES)
    todo = [u for u in units if u.unit_id not in done]
    log.info("curation: %d input rows in %d units, %d already done, %d to run (%d stale files removed)",
             sum(s.rows for s in scans), len(units), len(done), len(todo), removed)
    # Candidate pools start only when some item arrives without responses (paper 3.1).
    needs_candidates = bool(cur.candidates) and any(s.without_responses for s in scans)
    ctx = ValidationContext(limits=cur.limits, has_candidates=needs_candidates,
                            judge_from_column=cur.strong_judge.backend == "column",
                            captions_from_column=cur.caption_backend == "column",
                            allow_remote_images=cur.allow_remote_images, first_row=U.duplicate_first_rows(scans))
    progress = _Progress({u.unit_id: u for u in todo}, cur.progress_interval_s)
    if todo:
        ds = build_dataset(config, todo, ctx, run_dir, cur.caption_store or join(run_dir, "captions"))
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for receipt in batch.to_pylist():
                progress.receive(led, receipt)
    if progress.pending or progress.finished != len(todo):
        raise RuntimeError(f"curation ended with {len(todo) - progress.finished} unfinished units")
    led.remove_unfinished({u.unit_id for u in units}, U.OUTPUT_CLASSES)  # staged leftovers of retried tasks only
    summary = _finish(config, led, units, len(done), progress, needs_candidates)
    led.mark_complete()
    return summary


def _finish(config: CarevlConfig, led: ledger.RunLedger, units: list[ledger.WorkUnit], skipped: int,
            progress: _Progress, with_candidates: bool) -> dict[str, Any]:
    cur, run_dir = config.curation, led.root
    stats = empty_stats()
    for manifest in led.completed_units().values():
        merge_stats(stats, manifest["stats"])
    seconds = time.monotonic() - progress.start
    used = {f"expert:{e}": e for e in cur.experts}
    if cur.caption_model and cur.caption_backend == "model":
        used["caption_model"] = cur.caption_model
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
    ledger.write_text_atomic(join(run_dir, "summary.json"), json.dumps(summary, indent=2))
    log.info("curation finished: %d pairs (%d high, %d low), %d quarantined; summary in %s",
             summary["pairs"]["total"], summary["pairs"]["high"], summary["pairs"]["low"],
             summary["quarantined_items"], join(run_dir, "summary.json"))
    return summary
