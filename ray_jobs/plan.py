"""Plan, place and price a run before launching it.

    python -m ray_jobs.plan --config configs/paper.yaml --cluster cluster.yaml --pairs 1000000 \
        [--items N] [--output DIR] [--calibrate RUN_DIR] [--set planning.mfu.decode=0.2 ...]

For every model of every stage: memory (weights + KV cache or activations), tensor-parallel degree,
the node types it fits and replicas per node, co-location; then tokens, GPU-hours, wall-clock hours
and cost per stage. Writes DIR/plan.json, DIR/plan.md and DIR/gpu_hours.png. `--cluster local` plans
for this machine (its FP32 matmul rate measured). `--calibrate RUN_DIR` adds the estimate for a finished
curation run's own counts against its measured time. Exit status 1 when some model fits no node type.
"""
from __future__ import annotations

import argparse
import sys

from carevl.cli import Job, JobArgs, run_job
from carevl.planning.nodes import node_types
from carevl.planning.report import build_plan, calibrate, counts_for, read_run_summary, write_plan


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", default=None, help="cluster launcher YAML, or `local` (default: planning.cluster)")
    parser.add_argument("--pairs", type=int, default=1_000_000, help="curated pairs to plan for")
    parser.add_argument("--items", type=int, default=None, help="input items (default: from pairs per item)")
    parser.add_argument("--calibrate", default=None, metavar="RUN_DIR", help="a finished curation run to compare with")


def _plan(args: JobArgs) -> dict:
    extra = args.extra
    nodes = node_types(args.config, extra.cluster, measure=extra.cluster == "local")
    plan = build_plan(args.config, nodes, counts_for(args.config, extra.pairs, extra.items))
    calibration = calibrate(args.config, nodes, read_run_summary(extra.calibrate)) if extra.calibrate else None
    out = write_plan(args.output or "plan", plan, calibration)
    return {"plan": plan, "calibration": calibration, "output": out}


def _show(args: JobArgs, result: dict) -> int:
    plan, calibration = result["plan"], result["calibration"]
    for stage, t in plan["stages"].items():
        usd = "-" if t["usd"] is None else f"${t['usd']:,.0f}"
        print(f"{stage:7s} GPU-h {t['gpu_hours']:10,.1f}  CPU-h {t['cpu_hours']:8,.2f}  cluster {usd:>12s}  "
              f"API ${t['api_usd']:,.0f}  wall {t['wall_hours']:,.2f} h")
    if calibration:
        print(f"calibration: estimated {calibration['estimated_seconds']} s, measured {calibration['measured_seconds']} s; "
              f"implied MFU {calibration['implied_mfu']}")
    for error in plan["errors"]:
        print(f"error: {error}", file=sys.stderr)
    out = result["output"]
    print(f"plan: {out}/plan.md, {out}/plan.json, {out}/gpu_hours.png")
    return 1 if plan["errors"] else 0


JOB = Job("Plan, place and price a run.", _plan, add_arguments=_add_arguments, uses_ray=False, loads_models=False, show=_show)


def main(argv: list[str] | None = None) -> dict:
    return run_job(JOB, argv)


if __name__ == "__main__":
    main()
