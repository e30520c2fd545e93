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
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from carevl import ledger
from carevl.config import CarevlConfig, InputLimits
from carevl.curation.units import list_input_files, plan_units, scan_file
from carevl.data.io import join, write_table
from carevl.evaluation.backends import check_judge_placement, judge_fingerprint
from carevl.models.loading import resolve_model_path
from carevl.models.specs import judge_spec
from carevl.ray_utils import actor_threads, check_fits, init_ray, pool_args
from carevl.scoring.judge import RESULT_SCHEMA, ScoreJudge
from carevl.scoring.rows import GROUP, PAIR, ROW_SCHEMA, normalize_row

log = logging.getLogger("carevl.scoring")
OUTPUT_CLASSES = ("pairs", "groups", "quarantine")
OUTPUT_COLUMNS = {
    "pairs": ("row_index", "id", "label", "category", "p_a_ab", "p_a_ba", "p_a", "winner", "swap_consistent"),
    "groups": ("row_index", "id", "method", "k", "rewards", "ranking", "best_index", "candidate_status",
               "judgements"),
    "quarantine": ("row_index", "id", "reason", "row_json"),
}
RECEIPT_SCHEMA = pa.schema([("unit_id", pa.string()), ("rows", pa.int64()), ("files", pa.string()),
                            ("stats", pa.string())])
READ_TASK_MEMORY = 64 * 2**20  # bytes a unit read declares (keeps it an operator of its own; see curation)


@dataclass
class ScoreRequest:
    input: str
    judge: str
    output: str


def read_unit(batch: pa.Table | dict, *, limits: InputLimits, method: str) -> pa.Table:
    """Ray Data task: the rows of one work unit as checked `ROW_SCHEMA` records."""
    units = batch.to_pylist() if isinstance(batch, pa.Table) else pa.table(batch).to_pylist()
    records = []
    for unit in units:
        local = "://" not in unit["file"]
        base_dir = os.path.dirname(os.path.abspath(unit["file"])) if local else None
        for offset, row in enumerate(ledger.read_unit_rows(unit)):
            records.append(normalize_row(row, unit["unit_id"], unit["first_global"] + offset, base_dir, limits,
                                         method))
    return pa.Table.from_pylist(records, schema=ROW_SCHEMA)


def unit_stats(table: pa.Table) -> dict[str, Any]:
    """A unit's counters (summed into summary.json) from its result rows."""
    rows = table.to_pylist()
    ok = [r for r in rows if r["reason"] is None]
    judgements = [j for r in ok if r["kind"] == GROUP for j in r["judgements"]]
    return {"rows": len(rows), "pairs": sum(r["kind"] == PAIR for r in ok),
            "groups": sum(r["kind"] == GROUP for r in ok), "quarantined": len(rows) - len(ok),
            "quarantine_reasons": dict(Counter(r["reason"] for r in rows if r["reason"] is not None)),
            "swap_consistent": sum(bool(r["swap_consistent"]) for r in ok if r["kind"] == PAIR),
            "judgements": 2 * sum(r["kind"] == PAIR for r in ok) + len(judgements),
            "failed_judgements": sum(j["status"] != "ok" for j in judgements),
            "rewards_none": sum(x is None for r in ok if r["kind"] == GROUP for x in r["rewards"])}


def write_scores(batch: pa.Table | dict, *, run_dir: str) -> pa.Table:
    """Ray Data task: stage each unit's rows of this batch as one file per output class; one receipt
    per unit touched (rows accounted for, files, counters)."""
    table = batch if isinstance(batch, pa.Table) else pa.table(batch)
    table = table.cast(RESULT_SCHEMA)
    receipts = []
    for unit_id in pc.unique(table["unit_id"]).to_pylist():
        part = table.filter(pc.equal(table["unit_id"], unit_id))
        quarantined = pc.invert(pc.is_null(part["reason"]))
        split = {"quarantine": part.filter(quarantined)}
        kept = part.filter(pc.is_null(part["reason"]))
        for cls, kind in (("pairs", PAIR), ("groups", GROUP)):
            split[cls] = kept.filter(pc.equal(kept["kind"], kind))
        files = []
        for cls, rows in split.items():
            if rows.num_rows:
                path = join(run_dir, ledger.STAGING_DIR, cls, f"{unit_id}-{uuid.uuid4().hex[:12]}.parquet")
                write_table(rows.select(list(OUTPUT_COLUMNS[cls])), path, "parquet")
                files.append({"class": cls, "path": path, "rows": rows.num_rows})
        receipts.append({"unit_id": unit_id, "rows": part.num_rows, "files": json.dumps(files),
                         "stats": json.dumps(unit_stats(part))})
    return pa.Table.from_pylist(receipts, schema=RECEIPT_SCHEMA)


def build_dataset(config: CarevlConfig, spec, todo: list[ledger.WorkUnit], run_dir: str) -> ray.data.Dataset:
    """The lazy streaming pipeline over the units still to do; its rows are write receipts."""
    sc = config.score
    light = dict(batch_format="pyarrow", num_cpus=sc.task_num_cpus)
    ds = ray.data.from_items([u.to_dict() for u in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(read_unit, batch_size=1, fn_kwargs={"limits": sc.limits, "method": sc.method},
                        memory=READ_TASK_MEMORY, **light)
    pool = pool_args(spec.resources, spec.backend)
    ds = ds.map_batches(ScoreJudge, fn_constructor_kwargs=dict(
        spec=spec.model_dump(mode="json"), model_cache=str(config.paths.model_cache_dir()), method=sc.method,
        tie_on_disagreement=sc.tie_on_swap_disagreement, limits=sc.limits,
        allow_remote_images=sc.allow_remote_images, num_threads=actor_threads(spec.resources)), **pool)
    check_fits([pool], sc.task_num_cpus, job="scoring")
    return ds.map_batches(write_scores, batch_size=sc.unit_rows, fn_kwargs={"run_dir": run_dir}, **light)


def run_fingerprint(config: CarevlConfig, spec, request: ScoreRequest) -> dict[str, Any]:
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
    spec = judge_spec(config, request.judge, backbone=sc.judge_model, text_only_ok=True)
    if spec.backend == "openai":
        raise ValueError(f"the scoring job runs the judge in its actor pool; '{request.judge}' is an endpoint")
    check_judge_placement(config, spec, "score")  # fail in seconds when the judge fits no node
    resolve_model_path(spec, config.paths.model_cache_dir())  # a missing tiny model fails here, not in an actor
    init_ray(config)
    led = ledger.RunLedger(request.output, "score")
    led.claim(run_fingerprint(config, spec, request))
    files = list_input_files(request.input)
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
