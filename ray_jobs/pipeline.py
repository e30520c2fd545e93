"""Run the whole CAREVL flow into one run folder, skipping finished stages.

    python -m ray_jobs.pipeline --output RUN_DIR [--config FILE] [--set k=v ...] [--items N] [--demo]

With --demo, the trained judge is then served on local Ray Serve and queried once (judge and rank).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from carevl.cli import parse_job_args
from carevl.pipeline import PipelineOptions, format_summary, run_pipeline, shared_ray, trained_judge

VL_REWARDBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "vl_rewardbench" / "data.jsonl"


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, default=40, help="synthetic training items")
    parser.add_argument("--eval-items", type=int, default=64, help="held-out synthetic evaluation pairs")
    parser.add_argument("--vl-rewardbench", default=str(VL_REWARDBENCH) if VL_REWARDBENCH.is_file() else None,
                        help="VL-RewardBench data.jsonl to evaluate on (text-only without images)")
    parser.add_argument("--vl-rewardbench-limit", type=int, default=60)
    parser.add_argument("--demo", action="store_true", help="serve the trained judge and query it")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_job_args("Run the CAREVL pipeline end to end.", argv, _add_arguments)
    if not args.output:
        raise SystemExit("error: --output is required")
    x = args.extra
    config_args = ["--config", x.config] + [a for s in x.overrides for a in ("--set", s)]
    opts = PipelineOptions(run_dir=Path(args.output), config_args=config_args, items=x.items,
                           eval_items=x.eval_items, seed=args.config.seed,
                           base_judge=args.config.sft.judge_model,
                           vl_rewardbench=Path(x.vl_rewardbench) if x.vl_rewardbench else None,
                           vl_rewardbench_limit=x.vl_rewardbench_limit)
    with shared_ray(args.config):
        summary = run_pipeline(opts)
        print(format_summary(summary))
        if x.demo:
            from carevl.demo import serve_and_query

            serve_and_query(args.config, trained_judge(Path(args.output)), config_args)


if __name__ == "__main__":
    main()
