"""Fit the judge's calibration temperature on held-out pairs and store it in the model folder.

    held-out pairs -> raw judgements in both orders (the evaluation runner, judge uncalibrated)
        -> split by item id: fit pairs / test pairs -> temperature (carevl.judge.calibration)
        -> ECE before and after on the test pairs -> MODEL/calibration.json

The pairs are a pairwise file (--input, labels A/B; tie labels are left out) or `score.calibration.pairs`
synthetic held-out pairs (seed `score.calibration.seed`). Only pairs the fit never saw measure the
result. The evaluation's own files (predictions, report, charts of the raw judge) stay in the output
folder, so a re-run resumes the judging and refits the same temperature.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from carevl.config import CarevlConfig
from carevl.evaluation import charts
from carevl.evaluation.reliability import calibration_block, calibration_samples, debiased_samples
from carevl.evaluation.report import PredictionStore, write_json
from carevl.evaluation.runner import EvalRequest, evaluate
from carevl.judge.calibration import Calibration, fit_temperature, save_calibration
from carevl.models.loading import TINY_PREFIX, resolve_model_path
from carevl.models.specs import judge_spec

REPORT_FILE = "calibration_report.json"


@dataclass
class CalibrateRequest:
    judge: str
    output: str
    input: str | None = None
    save: bool = True


def in_test_split(item_id: str, seed: int, fraction: float) -> bool:
    """Whether an item is kept out of the fit: fixed by (seed, id), so never by file order."""
    digest = int.from_bytes(hashlib.sha256(f"calibration\x1f{seed}\x1f{item_id}".encode()).digest()[:8], "big")
    return digest / 2**64 < fraction


def _split(records: Sequence[dict[str, Any]], seed: int, fraction: float) -> tuple[list[dict], list[dict]]:
    test = [r for r in records if in_test_split(r["id"], seed, fraction)]
    fit = [r for r in records if not in_test_split(r["id"], seed, fraction)]
    return fit, test


def _scaled(records: Sequence[dict[str, Any]], calibration: Calibration) -> list[dict[str, Any]]:
    """Records with both orders' p_a rescaled as the calibrated judge would have returned them."""
    return [{**r, **{k: None if r.get(k) is None else calibration.apply(r[k]) for k in ("p_a", "p_a_swapped")}}
            for r in records]


def fit_report(records: Sequence[dict[str, Any]], seed: int, fraction: float, bins: int) -> dict[str, Any]:
    """Fit a temperature on the fit split's raw judgements; ECE/NLL before and after on the test split."""
    fit, test = _split(records, seed, fraction)
    p_fit, y_fit, _ = calibration_samples(fit)
    p_test, y_test, _ = calibration_samples(test)
    if len(set(y_fit)) < 2 or not p_test:
        raise ValueError(f"too few labelled judgements to calibrate ({len(p_fit)} to fit, {len(p_test)} to test; "
                         "both labels must occur): judge more pairs (score.calibration.pairs) in verdict mode")
    calibration = Calibration(fit_temperature(p_fit, y_fit))
    after = _scaled(test, calibration)
    return {
        "temperature": calibration.temperature,
        "pairs": {"fit": len(fit), "test": len(test)}, "judgements": {"fit": len(p_fit), "test": len(p_test)},
        "before": calibration_block(p_test, y_test, bins),
        "after": calibration_block(*calibration_samples(after)[:2], bins),
        "debiased_before": calibration_block(*debiased_samples(test), bins),
        "debiased_after": calibration_block(*debiased_samples(after), bins),
        "accuracy_test": sum((p > 0.5) == bool(y) for p, y in zip(p_test, y_test)) / len(p_test),
    }


def calibrate(config: CarevlConfig, request: CalibrateRequest) -> dict[str, Any]:
    """Judge held-out pairs raw, fit the temperature, write the report (and calibration.json)."""
    cal = config.score.calibration
    spec = judge_spec(config, request.judge, backbone=config.score.judge_model or config.evaluation.judge_model)
    folder = Path(resolve_model_path(spec, config.paths.model_cache_dir())[0])
    if request.save and (request.judge.startswith(TINY_PREFIX) or not folder.is_dir()):
        raise ValueError(f"calibration.json is written into the judge's model folder; '{request.judge}' is "
                         + ("a kit model every job shares (copy its folder and pass the copy)"
                            if request.judge.startswith(TINY_PREFIX) else "not a local folder")
                         + ", or pass --no-save to only measure")
    ev = config.evaluation.model_copy(update={"synthetic_items": cal.pairs, "seed": cal.seed, "k": 1,
                                              "mode": "verdict", "position_check": True})
    eval_config = config.model_copy(update={"evaluation": ev})
    evaluate(eval_config, EvalRequest(benchmark="pairwise" if request.input else "synthetic", judge=request.judge,
                                      output=request.output, input=request.input, mode="verdict", k=1,
                                      calibrated=False))
    records = [r for r in PredictionStore(Path(request.output) / "predictions.jsonl").records if r["run"] == 0]
    report = {"judge": request.judge, "source": request.input or f"synthetic held-out pairs, seed {cal.seed}",
              "test_fraction": cal.test_fraction, "bins": cal.bins,
              **fit_report(records, cal.seed, cal.test_fraction, cal.bins)}
    charts.reliability_chart({"raw": report["before"], f"T = {report['temperature']:.3g}": report["after"]},
                             Path(request.output) / "reliability_fit.png",
                             "Reliability of p_a on the test pairs, before and after temperature scaling")
    if request.save:
        report["saved_to"] = str(save_calibration(folder, Calibration(report["temperature"]),
                                                  {k: report[k] for k in ("source", "pairs", "judgements")}
                                                  | {"ece_before": report["before"]["ece"],
                                                     "ece_after": report["after"]["ece"]}))
    write_json(Path(request.output) / REPORT_FILE, report)
    return report


def headline(report: dict[str, Any]) -> str:
    """One line: temperature and ECE before/after on the test pairs."""
    return (f"temperature {report['temperature']:.3f}; ECE on {report['judgements']['test']} test judgements "
            f"{report['before']['ece']:.4f} -> {report['after']['ece']:.4f}; "
            f"NLL {report['before']['nll']:.4f} -> {report['after']['nll']:.4f}")


def summary_json(report: dict[str, Any]) -> str:
    keep = ("temperature", "pairs", "judgements", "accuracy_test", "saved_to")
    return json.dumps({k: report.get(k) for k in keep} | {"ece_before": report["before"]["ece"],
                                                          "ece_after": report["after"]["ece"]}, indent=2)
