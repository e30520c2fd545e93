"""Run one evaluation: load a benchmark, judge every item k times in a seeded random A/B order, and
write predictions.jsonl, report.json, report.md and the charts (paper 4.1, 4.4, A.2).

Re-running into the same output folder resumes: (item, run) pairs already in predictions.jsonl
are not judged again, so a run killed midway finishes with exactly one line per item and run. The
folder's run ledger (`_run.json`, `carevl.ledger`) refuses a re-run with another benchmark file,
judge, judging settings or code version.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import ray

from carevl import ledger
from carevl.config import CarevlConfig
from carevl.data.synth import synth_eval_pairs
from carevl.evaluation import charts
from carevl.evaluation.backends import judge_fingerprint, model_label, ray_judge
from carevl.evaluation.judgements import PRIMARY, SWAPPED, build_record, judge_requests, seeded_shuffle
from carevl.evaluation.loaders import LoadedBenchmark, load_pairwise, load_vl_rewardbench, pairwise_from_rows
from carevl.evaluation.report import (
    BENCHMARKS,
    PredictionStore,
    build_report,
    load_reference,
    render_markdown,
    write_json,
)
from carevl.evaluation.reliability import calibration_report
from carevl.evaluation.service import service_judge
from carevl.judge.calibration import load_calibration
from carevl.models.loading import resolve_model_path
from carevl.models.specs import judge_spec
from carevl.ray_utils import init_ray

log = logging.getLogger(__name__)

TEXT_ONLY_NOTE = ("text-only run: the benchmark's images were not available, so the judge saw only the "
                  "question and the two answers; accuracies are NOT comparable to the paper's Table 1")
JudgeFn = Callable[[list[dict[str, Any]]], Iterator[list[dict[str, Any]]]]


@dataclass
class EvalRequest:
    """What to evaluate; `mode` and `k` default to the config's evaluation section."""

    benchmark: str
    judge: str
    output: str
    input: str | None = None
    mode: str | None = None
    k: int | None = None
    limit: int | None = None
    images: str | None = None
    calibrated: bool = True   # False: the judge's raw p_a, its folder's calibration.json ignored (to fit one)


def load_benchmark(config: CarevlConfig, request: EvalRequest) -> LoadedBenchmark:
    """The benchmark's items in their own A/B order, plus quarantined rows."""
    if request.images and request.benchmark != "vl_rewardbench":
        raise ValueError("--images applies to vl_rewardbench only (pairwise rows name their own images)")
    if request.benchmark == "vl_rewardbench":
        if not request.input:
            raise ValueError("--input is required for vl_rewardbench (its data.jsonl or parquet)")
        return load_vl_rewardbench(request.input, request.images)
    if request.benchmark == "pairwise":
        if not request.input:
            raise ValueError("--input is required for pairwise (a JSONL or Parquet file)")
        return load_pairwise(request.input)
    if request.input:  # synthetic pairs written to a file earlier
        return load_pairwise(request.input)
    n = config.evaluation.synthetic_items
    return pairwise_from_rows(synth_eval_pairs(n, config.evaluation.seed))


def run_fingerprint(config: CarevlConfig, request: EvalRequest, mode: str, text_only: bool) -> dict[str, Any]:
    """What must stay the same for a resumed run to add to the same predictions.jsonl: the benchmark
    file and a local judge folder (their files), the judging settings, and the code version. `k` and
    `--limit` may change: they only add (item, run) records."""
    ev = config.evaluation
    inputs: dict[str, Any] = {"benchmark": ledger.input_fingerprint(request.input) if request.input
                              else f"synth_eval_pairs({ev.synthetic_items}, seed={ev.seed})"}
    settings = {"benchmark": request.benchmark, "judge": request.judge, "mode": mode, "seed": ev.seed,
                "position_check": ev.position_check, "tie_margin": ev.tie_margin, "text_only": text_only,
                "images": request.images}
    if not request.judge.startswith(("http://", "https://")):
        spec = judge_spec(config, request.judge, backbone=ev.judge_model)
        inputs["judge"] = judge_fingerprint(spec, config.paths.model_cache_dir(), request.calibrated)
        settings["judge_model"] = spec.model_dump(exclude={"resources", "http"})
        settings["max_new_tokens"] = ev.max_new_tokens
    return ledger.run_fingerprint(inputs, settings)


def judge_items(items: list[dict[str, Any]], runs: Iterable[int], store: PredictionStore, judge_fn: JudgeFn,
                seed: int, position_check: bool, allow_tie: bool, tie_margin: float) -> int:
    """Judge every (item, run) not yet in `store`; a record is stored as soon as all its orders are in.

    Returns how many records were added.
    """
    by_id = {it["id"]: it for it in items}
    requests = judge_requests(items, runs, seed, position_check, store.done)
    if not requests:
        return 0
    orders = (PRIMARY, SWAPPED) if position_check else (PRIMARY,)
    meta = {r["key"]: (r["id"], r["run"], r["order"]) for r in requests}
    pending: dict[tuple[str, int], dict[str, dict]] = {}
    added = 0
    for answers in judge_fn(requests):
        fresh = []
        for answer in answers:
            item_id, run, order = meta[answer["key"]]
            got = pending.setdefault((item_id, run), {})
            got[order] = answer
            if all(o in got for o in orders):
                fresh.append(build_record(by_id[item_id], run, seed, pending.pop((item_id, run)),
                                          allow_tie, tie_margin))
        added += store.append(fresh)
        log.info("evaluation: %d of %d judgements stored", added, len(requests) // len(orders))
    if pending:
        raise RuntimeError(f"the judge returned no answer for {len(pending)} (item, run) pairs, "
                           f"e.g. {next(iter(pending))}; re-run to resume")
    return added


def evaluate(config: CarevlConfig, request: EvalRequest, judge_fn: JudgeFn | None = None) -> dict[str, Any]:
    """Run the evaluation and write every output into `request.output`; returns report.json's content.

    `judge_fn` replaces the judge backend (default: the service client for an http(s) --judge, else a
    Ray Data actor pool over `JudgeModel`).
    """
    if request.benchmark not in BENCHMARKS:
        raise ValueError(f"--benchmark must be one of {BENCHMARKS}, got {request.benchmark!r}")
    ev = config.evaluation
    mode, k = request.mode or ev.mode, request.k or ev.k
    if request.limit is not None and request.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {request.limit}")
    loaded = load_benchmark(config, request)
    items = seeded_shuffle(loaded.items, ev.seed)[: request.limit]
    if not items:
        raise ValueError(f"no items to evaluate ({len(loaded.quarantine)} rows quarantined)")
    text_only = not any(it["image_path"] or it["image_bytes"] for it in items)
    out = Path(request.output)
    led = ledger.RunLedger(str(out), "evaluation")
    led.claim(run_fingerprint(config, request, mode, text_only))
    _write_jsonl(out / "quarantine.jsonl", loaded.quarantine)

    store = PredictionStore(out / "predictions.jsonl")
    allow_tie = request.benchmark in ("pairwise", "synthetic")
    if not request.calibrated and request.judge.startswith(("http://", "https://")):
        raise ValueError("a raw (uncalibrated) evaluation needs a local judge: the service applies its calibration")
    judge_fn = judge_fn or _default_judge(config, request.judge, mode, request.calibrated)
    judge_items(items, range(k), store, judge_fn, ev.seed, ev.position_check, allow_tie, ev.tie_margin)

    wanted = {(it["id"], run) for it in items for run in range(k)}
    records = [r for r in store.records if (r["id"], r["run"]) in wanted]
    notes = [TEXT_ONLY_NOTE] if text_only and request.benchmark == "vl_rewardbench" else []
    if mode == "verdict" and k > 1:
        notes.append("verdict mode is deterministic (one forward pass): the k runs are identical")
    meta = {"judge": model_label(request.judge), "mode": mode, "k": k, "seed": ev.seed, "limit": request.limit,
            "text_only": text_only, "position_check": ev.position_check, "tie_margin": ev.tie_margin,
            "notes": notes}
    report = build_report(request.benchmark, records, meta, loaded.quarantine, ev.length_buckets)
    report["calibration"] = calibration_report(records, config.score.calibration.bins,
                                               _temperature(config, request))
    _write_outputs(out, report, config)
    led.mark_complete({"metrics": report["metrics"]})
    return report


def _default_judge(config: CarevlConfig, judge: str, mode: str, calibrated: bool = True) -> JudgeFn:
    if judge.startswith(("http://", "https://")):
        return lambda requests: service_judge(config, judge, mode, requests)
    return lambda requests: _with_ray(config, lambda: ray_judge(config, judge, mode, requests, calibrated))


def _temperature(config: CarevlConfig, request: EvalRequest) -> float | None:
    """The calibration temperature the judge applied: 1 for a raw run, None for a service (unknown)."""
    if request.judge.startswith(("http://", "https://")):
        return None
    if not request.calibrated:
        return 1.0
    spec = judge_spec(config, request.judge, backbone=config.evaluation.judge_model)
    return load_calibration(resolve_model_path(spec, config.paths.model_cache_dir())[0]).temperature


def _with_ray(config: CarevlConfig, make: Callable[[], Iterator]) -> Iterator:
    """Start Ray from the config if nobody did; shut it down afterwards only if we started it."""
    started = not ray.is_initialized()
    init_ray(config)
    try:
        yield from make()
    finally:
        if started:
            ray.shutdown()


def _write_outputs(out: Path, report: dict[str, Any], config: CarevlConfig) -> None:
    reference = load_reference()
    ref_models = config.evaluation.reference_models
    pngs = [charts.accuracy_chart(report, reference, ref_models, out / "accuracy.png"),
            charts.bias_chart(report, out / "bias.png")]
    if report.get("calibration"):
        cal = report["calibration"]
        pngs.append(charts.reliability_chart({"per order": cal["per_order"], "debiased": cal["debiased"]},
                                             out / "reliability.png", f"Reliability of p_a: {report['benchmark']}"))
    report["charts"] = [p.name for p in pngs]
    write_json(out / "report.json", report)
    (out / "report.md").write_text(render_markdown(report, reference, ref_models, [str(p) for p in pngs]))


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

