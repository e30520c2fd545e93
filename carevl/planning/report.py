"""The plan of a run: placement, tokens, time and cost per stage, and (after a real run) estimate
against measurement. Written as plan.json, plan.md and gpu_hours.png."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file-only backend

from carevl.config import CarevlConfig  # noqa: E402
from carevl.planning.cost import estimate, stage_totals  # noqa: E402
from carevl.planning.nodes import GB, NodeType  # noqa: E402
from carevl.planning.placement import (  # noqa: E402
    STAGES,
    Need,
    colocation_groups,
    could_share,
    placement_errors,
    plan_stage,
)
from carevl.planning.workload import Counts, Work, counts_for, curation_work, stage_work  # noqa: E402


def _need_row(need: Need) -> dict[str, Any]:
    fp = need.footprint
    return {
        "stage": need.stage, "role": need.role, "model": need.model, "path": need.spec.path,
        "backend": need.spec.backend, "params_b": round(need.shape.params / 1e9, 3) if need.shape else None,
        "shape_source": need.shape.source if need.shape else None,
        "weights_gb": round(fp.weights / GB, 2) if fp else None,
        "cache_gb": round(fp.cache / GB, 2) if fp else None,
        "activations_gb": round(fp.activations / GB, 2) if fp else None,
        "total_gb": round(fp.total / GB, 2) if fp else None, "minimum_gb": round(fp.minimum / GB, 2) if fp else None,
        "gpus_per_replica": need.gpus, "cpus_per_replica": need.cpus, "tensor_parallel": need.tp,
        "tensor_parallel_needed": need.tp_needed, "full_batch_fits": need.full_batch_fits,
        "replicas_per_node": need.fits, "colocate_group": need.spec.resources.colocate_group, "note": need.note,
    }


def _work_row(w: Work) -> dict[str, Any]:
    row = {k: v for k, v in asdict(w).items() if k != "extras"}
    row.update(prompt_tokens_total=w.total_prompt_tokens, new_tokens_total=w.total_new_tokens)
    return row


def build_plan(config: CarevlConfig, nodes: list[NodeType], counts: Counts,
               works: list[Work] | None = None) -> dict[str, Any]:
    """Placement of every stage and the cost of `works` (default: every stage for `counts`)."""
    needs = {stage: plan_stage(config, stage, nodes) for stage in STAGES}
    errors = [e for stage in STAGES for e in placement_errors(needs[stage], nodes, config)]
    by_key = {(n.stage, n.model): n for stage in STAGES for n in needs[stage]}
    works = works if works is not None else stage_work(config, counts)
    for w in works:
        estimate(w, by_key[(w.stage, w.model)], nodes, config)
    usable = max((n.gpu_memory_gb or 0 for n in nodes), default=0) * GB * config.planning.gpu_memory_utilization
    return {
        "counts": {**asdict(counts), "unique_responses": counts.unique_responses},
        "assumptions": config.planning.model_dump(mode="json"),
        "nodes": [asdict(n) for n in nodes],
        "placement": [_need_row(n) for stage in STAGES for n in needs[stage]],
        "colocation": {stage: {"configured": colocation_groups(needs[stage]),
                               "could_share_one_gpu": could_share(needs[stage], usable)} for stage in STAGES},
        "errors": errors,
        "work": [_work_row(w) for w in works],
        "stages": stage_totals(works, nodes),
    }


def read_run_summary(run_dir: str) -> dict[str, Any]:
    """summary.json of a curation run (RUN_DIR or RUN_DIR/curation of a pipeline run)."""
    for candidate in (Path(run_dir) / "summary.json", Path(run_dir) / "curation" / "summary.json"):
        if candidate.is_file():
            summary = json.loads(candidate.read_text())
            if "pairs" in summary and "run" in summary:
                return summary
    raise FileNotFoundError(f"--calibrate {run_dir}: no curation summary.json there (or in curation/)")


def calibrate(config: CarevlConfig, nodes: list[NodeType], summary: dict[str, Any]) -> dict[str, Any]:
    """The curation estimate for a finished run's own counts, against what the run measured."""
    items = max(summary["processed_items"], 1)
    pairs = summary["pairs"]
    counts = Counts(items=items, responses_per_item=summary["unique_responses"] / items, pairs=pairs["total"],
                    high_pairs=pairs["high"], low_pairs=pairs["low"], dpo_rows=0)
    works = [w for w in curation_work(config, counts)
             if not w.role.startswith("candidates") or any(k.startswith("candidate:") for k in summary["model_ids"])]
    plan = build_plan(config, nodes, counts, works)
    stage = plan["stages"]["curate"]
    cpus = sum(n.cpus * n.max_nodes for n in nodes)
    # CPU pools share the cores of their nodes (a pool's threads use cores other pools leave idle), so
    # a CPU run takes its CPU-hours spread over every core; GPU pools are bound to their own devices.
    est_hours = stage["wall_hours"] if stage["gpu_hours"] else stage["cpu_hours"] / cpus
    run = summary["run"]
    measured_s = run["seconds"]
    est_s = est_hours * 3600
    return {
        "run_dir_counts": {"items": items, "pairs": pairs["total"], "unique_responses": summary["unique_responses"]},
        "estimated_seconds": round(est_s, 2), "measured_seconds": measured_s,
        "estimated_pairs_per_second": round(pairs["total"] / est_s, 3) if est_s else None,
        "measured_pairs_per_second": run.get("pairs_per_second"),
        "estimated_items_per_second": round(items / est_s, 3) if est_s else None,
        "measured_items_per_second": run.get("items_per_second"),
        "measured_over_estimated_time": round(measured_s / est_s, 3) if est_s else None,
        # MFUs that would have predicted this run: the assumed ones scaled by estimated / measured time.
        "implied_mfu": {k: round(v * est_s / measured_s, 5) for k, v in config.planning.mfu.model_dump().items()}
        if est_s and measured_s else None,
        "plan": plan,
    }


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render_markdown(plan: dict[str, Any], calibration: dict[str, Any] | None = None) -> str:
    c, a = plan["counts"], plan["assumptions"]
    lines = ["# Run plan", "",
             f"{c['pairs']:,} pairs from {c['items']:,} items ({c['responses_per_item']:.2f} answers per item, "
             f"{c['unique_responses']:,} distinct answers); {c['high_pairs']:,} high-confidence and "
             f"{c['low_pairs']:,} low-confidence pairs, {c['dpo_rows']:,} DPO rows (assumed shares).", "",
             f"Roofline: peak dense FLOP/s x MFU (prefill {a['mfu']['prefill']}, decode {a['mfu']['decode']}, "
             f"train {a['mfu']['train']}) / FLOPs per token. GPU memory usable: "
             f"{a['gpu_memory_utilization']:.0%}. Override any assumption with `--set planning.<key>=<value>`.", ""]
    if plan["errors"]:
        lines += ["## Placement errors", ""] + [f"- {e}" for e in plan["errors"]] + [""]
    lines += ["## Placement", "",
              "| stage | role | model | params (B) | weights GB | KV / states GB | act. GB | needs GB (min / full batch) "
              "| GPUs x TP | TP for full batch | replicas per node |", "|---" * 11 + "|"]
    for r in plan["placement"]:
        fits = ", ".join(f"{k}: {v}" for k, v in r["replicas_per_node"].items()) or ("external" if r["backend"] == "openai" else "**none**")
        lines.append(f"| {r['stage']} | {r['role']} | {r['model']} | {_fmt(r['params_b'], 2)} | {_fmt(r['weights_gb'])} "
                     f"| {_fmt(r['cache_gb'])} | {_fmt(r['activations_gb'])} | {_fmt(r['minimum_gb'])} / {_fmt(r['total_gb'])} "
                     f"| {r['gpus_per_replica']:g} x {r['tensor_parallel']} | {_fmt(r['tensor_parallel_needed'])} | {fits} |")
    lines += ["", "Co-location (models sharing one GPU bundle):", ""]
    for stage, groups in plan["colocation"].items():
        if groups["configured"] or groups["could_share_one_gpu"]:
            lines.append(f"- {stage}: configured {groups['configured'] or 'none'}; "
                         f"could share one GPU at the configured batch: {groups['could_share_one_gpu'] or 'none'}")
    lines += ["", "## Work and cost", "", "| stage | role | model | requests | prompt tokens | generated tokens "
              "| node type | replicas | device-hours | wall h | USD |", "|---" * 11 + "|"]
    for w in plan["work"]:
        usd = w["usd"] if w["device"] != "API" else w["api_usd"]
        lines.append(f"| {w['stage']} | {w['role']} | {w['model']} | {w['requests']:,} | {w['prompt_tokens_total']:.3g} "
                     f"| {w['new_tokens_total']:.3g} | {w['node_type'] or w['device']} | {w['replicas']} "
                     f"| {_fmt(w['device_hours'])} {w['device'] if w['device'] != 'API' else ''} "
                     f"| {_fmt(w['wall_hours'], 2)} | {_fmt(usd, 0)} |")
    lines += ["", "| stage | GPU-hours | CPU-hours | cluster USD | API USD | wall-clock hours |", "|---" * 6 + "|"]
    for stage, t in plan["stages"].items():
        lines.append(f"| {stage} | {_fmt(t['gpu_hours'])} | {_fmt(t['cpu_hours'])} | {_fmt(t['usd'], 0)} "
                     f"| {_fmt(t['api_usd'], 0)} | {_fmt(t['wall_hours'], 2)} |")
    notes = sorted({w["note"] for w in plan["work"] if w["note"]})
    lines += [""] + [f"- {n}" for n in notes]
    if calibration:
        k = calibration
        lines += ["", "## Estimate against a measured run", "",
                  "| | estimated | measured |", "|---|---|---|",
                  f"| seconds | {_fmt(k['estimated_seconds'])} | {_fmt(k['measured_seconds'])} |",
                  f"| pairs/s | {_fmt(k['estimated_pairs_per_second'], 2)} | {_fmt(k['measured_pairs_per_second'], 2)} |",
                  f"| items/s | {_fmt(k['estimated_items_per_second'], 2)} | {_fmt(k['measured_items_per_second'], 2)} |",
                  "", f"Measured time / estimated time: {k['measured_over_estimated_time']}. MFUs that would have "
                  f"predicted this run: {k['implied_mfu']}."]
    return "\n".join(lines) + "\n"


def plot_gpu_hours(plan: dict[str, Any], path: Path) -> None:
    """One bar per stage: GPU-hours (CPU-hours for a plan with no GPU work)."""
    stages = plan["stages"]
    key = "gpu_hours" if any(t["gpu_hours"] for t in stages.values()) else "cpu_hours"
    names, values = list(stages), [stages[s][key] for s in stages]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    bars = ax.bar(names, values, color="#4C72B0")
    ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 10 else f"{v:,.2f}" for v in values], padding=2)
    ax.set_ylabel(key.replace("_", "-").replace("gpu", "GPU").replace("cpu", "CPU"))
    ax.set_title(f"{key.split('_')[0].upper()}-hours per stage, {plan['counts']['pairs']:,} pairs")
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plan(out_dir: str | Path, plan: dict[str, Any], calibration: dict[str, Any] | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {**plan, "calibration": {k: v for k, v in calibration.items() if k != "plan"} if calibration else None}
    (out / "plan.json").write_text(json.dumps(doc, indent=1, default=str))
    (out / "plan.md").write_text(render_markdown(plan, calibration))
    plot_gpu_hours(plan, out / "gpu_hours.png")
    return out


__all__ = ["build_plan", "calibrate", "counts_for", "read_run_summary", "render_markdown", "write_plan"]
