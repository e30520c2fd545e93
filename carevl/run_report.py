"""What a pipeline run reports: one headline per stage as it finishes, and the run summary at the end.

Every figure is read back from what the stages wrote (`summary.json`, `report.json`, the synthetic
sets' manifests), so the same lines come out of a run folder whether the stages ran now or earlier.
The console gets headlines only; the full figures stay in `pipeline_summary.json` and the stage
folders.
"""
from __future__ import annotations

import json
from pathlib import Path

from carevl.audit.report import format_headline, headline
from carevl.data.synth import MANIFEST as SYNTH_MANIFEST
from carevl.data.synth import SynthSpec, surface_cue_accuracy
from carevl.progress import wrap


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# ------------------------------------------------------------------------------ stage headlines

def _counts(mapping: dict) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(mapping.items(), key=lambda kv: -kv[1]))


def curation_headline(summary: dict) -> str:
    """'203 pairs: 94 high, 109 low (judge_disagrees 58, split_vote 51); 0 rows quarantined; 13.5 pairs/s'."""
    pairs, run = summary.get("pairs", {}), summary.get("run", {})
    line = f"{pairs.get('total', 0)} pairs: {pairs.get('high', 0)} high, {pairs.get('low', 0)} low"
    if summary.get("low_reasons"):
        line += f" ({_counts(summary['low_reasons'])})"
    line += f"; {summary.get('quarantined_items', 0)} rows quarantined"
    if run.get("pairs_per_second"):
        line += f"; {run['pairs_per_second']:.1f} pairs/s"
    return line


def training_headline(summary: dict) -> str:
    """'288 steps on 188 examples, loss 7.947 -> 0.062'."""
    first = summary.get("train_metrics", {}).get("first", {})
    last = summary.get("train_metrics", {}).get("last", {})
    line = f"{summary.get('global_step', 0)} steps on {summary.get('data', {}).get('examples', 0)} examples"
    if "loss" in first and "loss" in last:
        line += f", loss {first['loss']:.3f} -> {last['loss']:.3f}"
    return line


def refine_headline(summary: dict) -> str:
    """'109 low-confidence pairs -> 125 DPO rows from 68 pairs; skipped no_rejected 31, no_correct 14'."""
    line = (f"{summary.get('input_pairs', 0)} low-confidence pairs -> {summary.get('dpo_rows', 0)} DPO rows "
            f"from {summary.get('used_pairs', 0)} pairs")
    skipped = summary.get("skipped") or {}
    return line + (f"; skipped {_counts(skipped)}" if skipped else "")


def evaluation_headline(report: dict) -> str:
    """'accuracy 0.435, position consistency 0.59' (the benchmark's overall figure)."""
    digest = eval_digest(report)
    overall = digest.get("overall")
    line = "accuracy n/a" if overall is None else f"accuracy {overall:.3f}"
    if digest.get("position_consistency") is not None:
        line += f", position consistency {digest['position_consistency']:.2f}"
    return line


def stage_headline(name: str, output: Path) -> str:
    """The one line a finished stage prints, from what it wrote into `output`."""
    if name == "prepare_models":
        return "tiny models built and cached"
    if name.startswith("synth"):
        manifest = read_json(output / SYNTH_MANIFEST)
        return f"{manifest.get('rows', 0)} {'items' if manifest.get('kind') == 'items' else 'held-out pairs'} written"
    if name == "curate":
        return curation_headline(read_json(output / "summary.json"))
    if name == "audit":
        report = read_json(output / "report.json")
        return format_headline(headline(report)).removeprefix("label audit: ") if report else "no report"
    if name in ("train_sft", "train_dpo"):
        return training_headline(read_json(output / "summary.json"))
    if name == "refine":
        return refine_headline(read_json(output / "summary.json"))
    if name.startswith("eval_"):
        return evaluation_headline(read_json(output / "report.json"))
    return f"done: {output}"


# --------------------------------------------------------------------------------- run summary

def collect_summary(run: Path) -> dict:
    """Counts per confidence class, DPO pairs built, training losses and metrics before/after training."""
    curation = read_json(run / "curation" / "summary.json")
    audit = read_json(run / "audit" / "report.json")
    refine = read_json(run / "refine" / "summary.json")
    evals = {}
    for report in sorted((run / "eval").glob("*/report.json")):
        evals[report.parent.name] = eval_digest(read_json(report))
    return {
        "curation": {k: curation.get(k) for k in ("input_rows", "quarantined_items", "pairs", "low_reasons") if k in curation},
        "audit": headline(audit) if audit else {},
        "refine": {k: v for k, v in refine.items() if k in ("input_pairs", "dpo_rows", "used_pairs", "skipped", "score_status")},
        "sft": read_json(run / "sft" / "summary.json"),
        "dpo": read_json(run / "dpo" / "summary.json"),
        "evaluation": evals,
        "surface_cue_reference": surface_cue_reference(run / "data" / "eval"),
    }


def surface_cue_reference(eval_dir: Path) -> float | None:
    """What a judge reading only the answers' surface cues would score on the run's synthetic held-out
    pairs (`carevl.data.synth.surface_cue_accuracy`, from the set's manifest); None without that set."""
    manifest = read_json(eval_dir / SYNTH_MANIFEST)
    if manifest.get("kind") != "eval_pairs":
        return None
    spec = SynthSpec(**{**manifest["spec"], "categories": tuple(manifest["spec"]["categories"])})
    return surface_cue_accuracy(manifest["rows"], manifest["seed"], spec).get("all")


def eval_digest(report: dict) -> dict:
    """The headline metrics of one evaluation plus the bias figures that explain them (a judge that
    always names the same position scores chance and every item becomes a swap tie)."""
    bias = report.get("bias", {})
    digest = dict(report.get("metrics", {}))
    digest["tie_rate"] = bias.get("tie_rate", {}).get("rate")
    digest["position_consistency"] = bias.get("position_consistency", {}).get("rate")
    digest["unparseable"] = report.get("counts", {}).get("unparseable")
    return digest


def judge_headline(evaluation: dict, cue_reference: float | None = None) -> str | None:
    """'judge on held-out synthetic pairs: base 0.000 -> SFT 0.512 -> DPO 0.520 (position consistency
    ...)': the synthetic verdict-mode accuracy (swap check, a tie counts as wrong) before and after,
    then what reading only the answers' surface cues would score on the same pairs."""
    steps = [(label, evaluation.get(f"synthetic_{key}")) for key, label in (("base", "base"), ("sft", "SFT"),
                                                                               ("dpo", "DPO"))]
    steps = [(label, m) for label, m in steps if m and m.get("overall") is not None]
    if not steps:
        return None
    accuracy = " -> ".join(f"{label} {m['overall']:.3f}" for label, m in steps)
    consistency = ", ".join(f"{label} {m['position_consistency']:.2f}" for label, m in steps
                            if m.get("position_consistency") is not None)
    line = f"judge on held-out synthetic pairs: {accuracy} (position consistency {consistency})"
    if cue_reference is not None:
        line += f"; surface cues alone would score {cue_reference:.3f}"
    return line


def format_summary(summary: dict, run_dir: Path | None = None, width: int | None = None) -> str:
    """The end-of-run report: the two headlines (label audit, judge), each folded to the screen width,
    and where the full figures are."""
    lines = ["", "=== CAREVL run summary"]
    if summary.get("audit"):
        lines.append(wrap(format_headline(summary["audit"]), width))
    judge = judge_headline(summary.get("evaluation", {}), summary.get("surface_cue_reference"))
    if judge:
        lines.append(wrap(judge, width))
    if run_dir is not None:
        lines.append(wrap(f"full figures: {run_dir / 'pipeline_summary.json'} and each stage's folder in "
                          f"{run_dir}; logs in {run_dir / 'logs'}", width))
    return "\n".join(lines)
