"""The scoring job (`ray_jobs.score`): a trained judge scores pairs and groups offline, on Ray Data.

    work units -> read + check rows -> judge actor pool (ScoreJudge) -> write per unit

Every input row ends in exactly one output row: `pairs/` (p_a in both orders, debiased p_a, winner,
swap consistency), `groups/` (one reward per candidate by `score.method`, the ranking, every
judgement) or `quarantine/` (the reason). Work units of `score.unit_rows` rows are published with a
manifest once all their rows are written (the run ledger, `carevl.ledger`): a re-run of a killed job
skips finished units, deletes what was left of the others and finishes with one row per input row;
a re-run with another input, judge (weights or calibration), method or code is refused. The driver
holds only unit receipts, so its memory does not grow with the input.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from carevl import ledger
from carevl.config import CarevlConfig, ModelSpec
from carevl.curation.units import list_input_files, plan_units, scan_file
from carevl.data.io import join
from carevl.evaluation.backends import check_judge_placement, judge_fingerprint
from carevl.models.loading import resolve_model_path
from carevl.models.specs import judge_spec
from carevl.ray_utils import actor_threads, check_fits, init_ray, pool_args
from carevl.scoring.judge import ScoreJudge
from carevl.scoring.units import OUTPUT_CLASSES, read_unit, write_scores

log = logging.getLogger("carevl.scoring")


@dataclass
class ScoreRequest:
    input: str
    judge: str
    output: str


def build_dataset(config: CarevlConfig, spec: ModelSpec, todo: list[ledger.WorkUnit], run_dir: str) -> ray.data.Dataset:
    """The lazy streaming pipeline over the units still to do; its rows are write receipts."""
    sc = config.score
    light = dict(batch_format="pyarrow", num_cpus=sc.task_num_cpus)
    ds = ray.data.from_items([u.to_dict() for u in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(read_unit, batch_size=1, fn_kwargs={"limits": sc.limits, "method": sc.method},
                        memory=sc.read_memory_mb * 2**20, **light)
    pool = pool_args(spec.resources, spec.backend)
    ds = ds.map_batches(ScoreJudge, fn_constructor_kwargs=dict(
        spec=spec.model_dump(mode="json"), model_cache=str(config.paths.model_cache_dir()), method=sc.method,
        tie_on_disagreement=sc.tie_on_swap_disagreement, limits=sc.limits,
        allow_remote_images=sc.allow_remote_images, num_threads=actor_threads(spec.resources)), **pool)
    check_fits([pool], sc.task_num_cpus, job="scoring")
    return ds.map_batches(write_scores, batch_size=sc.unit_rows, fn_kwargs={"run_dir": run_dir}, **light)


def run_fingerprint(config: CarevlConfig, spec: ModelSpec, request: ScoreRequest) -> dict[str, Any]:
    """Input files, the judge's weights and calibration, the scoring settings, the code version."""
    sc = config.score
    inputs = {"rows": ledger.input_fingerprint(request.input),
              "judge": judge_fingerprint(spec, config.paths.model_cache_dir())}
    settings = {"judge": request.judge, "judge_model": spec.model_dump(mode="json", exclude={"resources", "http"}),
                "method": sc.method, "tie_on_swap_disagreement": sc.tie_on_swap_disagreement,
                "unit_rows": sc.unit_rows, "limits": sc.limits.model_dump(),
                "allow_remote_images": sc.allow_remote_images}
    return ledger.run_fingerprint(inputs, settings)


@dataclass
class _Progress(ledger.UnitProgress):
    judgements: int = 0

    def receive(self, led: ledger.RunLedger, receipt: dict[str, Any]) -> None:
        self.judgements += self.add(led, receipt, Counter, _add_stats)["judgements"]
        elapsed = self.log_due()
        if elapsed is not None:
            log.info("scoring: %d/%d units, %d rows, %.1f rows/s, %.1f judgements/s", self.finished,
                     len(self.units), self.rows, self.rows / elapsed, self.judgements / elapsed)


def _add_stats(total: Counter, stats: dict[str, Any]) -> None:
    for key, value in stats.items():
        if isinstance(value, dict):
            total[key] = total.get(key, Counter()) + Counter(value)
        else:
            total[key] += value


def run_scoring(config: CarevlConfig, request: ScoreRequest) -> dict[str, Any]:
    """Score `request.input` with `request.judge` into `request.output` (resuming a run there)."""
    sc = config.score
    if request.judge.startswith(("/", ".", "~")) and not Path(request.judge).expanduser().is_dir():
        raise FileNotFoundError(f"--judge: no model folder at {request.judge}")
    files = list_input_files(request.input)  # a missing or empty input fails before Ray starts
    spec = judge_spec(config, request.judge, backbone=sc.judge_model, text_only_ok=True)
    if spec.backend == "openai":
        raise ValueError(f"the scoring job runs the judge in its actor pool; '{request.judge}' is an endpoint")
    check_judge_placement(config, spec, "score")  # fail in seconds when the judge fits no node
    resolve_model_path(spec, config.paths.model_cache_dir())  # a missing tiny model fails here, not in an actor
    init_ray(config)
    led = ledger.RunLedger(request.output, "score")
    led.claim(run_fingerprint(config, spec, request))
    scan = ray.remote(num_cpus=sc.task_num_cpus)(scan_file)
    scans = ray.get([scan.remote(f, sc.unit_rows) for f in files])
    units = plan_units(files, scans, sc.unit_rows)
    done = led.completed_units()
    unknown = set(done) - {u.unit_id for u in units}
    if unknown:
        raise ValueError(f"{request.output} has finished units the input does not have ({sorted(unknown)[:3]}...)")
    removed = led.remove_unfinished(set(done), OUTPUT_CLASSES)
    todo = [u for u in units if u.unit_id not in done]
    log.info("scoring: %d input rows in %d units, %d already done, %d to run (%d stale files removed)",
             sum(s.rows for s in scans), len(units), len(done), len(todo), removed)
    progress = _Progress({u.unit_id: u for u in todo}, sc.progress_interval_s)
    if todo:
        for batch in build_dataset(config, spec, todo, request.output).iter_batches(batch_size=None,
                                                                                    batch_format="pyarrow"):
            for receipt in batch.to_pylist():
                progress.receive(led, receipt)
    if progress.pending or progress.finished != len(todo):
        raise RuntimeError(f"scoring ended with {len(todo) - progress.finished} unfinished units")
    led.remove_unfinished({u.unit_id for u in units}, OUTPUT_CLASSES)  # staged leftovers of retried tasks
    summary = _summary(config, request, led, units, len(done), progress)
    ledger.write_text_atomic(join(request.output, "summary.json"), json.dumps(summary, indent=2))
    led.mark_complete({k: summary[k] for k in ("input_rows", "pairs", "groups", "quarantined")})
    return summary


def _summary(config: CarevlConfig, request: ScoreRequest, led: ledger.RunLedger, units: list[ledger.WorkUnit],
             skipped: int, progress: _Progress) -> dict[str, Any]:
    total: Counter = Counter()
    for manifest in led.completed_units().values():
        _add_stats(total, manifest["stats"])
    seconds = time.monotonic() - progress.start
    input_rows = sum(u.rows for u in units)
    return {
        "input_rows": input_rows, "output_rows": total["rows"], "rows_conserved": total["rows"] == input_rows,
        "pairs": total["pairs"], "groups": total["groups"], "quarantined": total["quarantined"],
        "quarantine_reasons": dict(total.get("quarantine_reasons", {})),
        "swap_consistency": round(total["swap_consistent"] / total["pairs"], 4) if total["pairs"] else None,
        "judgements": total["judgements"], "failed_judgements": total["failed_judgements"],
        "rewards_none": total["rewards_none"], "method": config.score.method, "judge": request.judge,
        "run": {"units_total": len(units), "units_run": progress.finished, "units_skipped": skipped,
                "rows": progress.rows, "seconds": round(seconds, 3),
                "rows_per_second": round(progress.rows / seconds, 3) if seconds > 0 else 0.0,
                "judgements_per_second": round(progress.judgements / seconds, 3) if seconds > 0 else 0.0},
    }
