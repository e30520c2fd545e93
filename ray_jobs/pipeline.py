"""Run the whole CAREVL flow into one run folder, skipping finished stages.

    python -m ray_jobs.pipeline --output RUN_DIR [--config FILE] [--set k=v ...] [--items N]
        [--vl-rewardbench DATA.jsonl [--vl-rewardbench-limit N]] [--demo]

With --vl-rewardbench, every judge is also evaluated on that VL-RewardBench file (see the README for
where to get it). With --demo, the trained judge is then served on local Ray Serve and queried once.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from carevl.cli import Job, JobArgs, run_job
from carevl.demo import serve_and_query
from carevl.pipeline import PipelineOptions, run_pipeline, shared_ray, trained_judge
from carevl.run_report import format_summary

DEFAULTS = PipelineOptions(run_dir=Path("."), config_args=[])


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, default=DEFAULTS.items, help="synthetic training items")
    parser.add_argument("--eval-items", type=int, default=DEFAULTS.eval_items,
                        help="held-out synthetic evaluation pairs")
    parser.add_argument("--judge-accuracy", type=float, default=DEFAULTS.judge_accuracy,
                        help="how often the synthetic strong judge is right (default: %(default)s)")
    parser.add_argument("--vl-rewardbench", default=None, metavar="FILE",
                        help="VL-RewardBench data.jsonl (or its parquet) to evaluate every judge on; "
                             "text-only without images")
    parser.add_argument("--vl-rewardbench-limit", type=int, default=DEFAULTS.vl_rewardbench_limit,
                        help="items of the seeded shuffle to evaluate (default: %(default)s)")
    parser.add_argument("--demo", action="store_true", help="serve the trained judge and query it")


def _run(args: JobArgs) -> dict:
    x = args.extra
    if x.vl_rewardbench and not Path(x.vl_rewardbench).is_file():
        raise FileNotFoundError(f"--vl-rewardbench {x.vl_rewardbench}: no such file")
    config_args = ["--config", x.config] + [a for s in x.overrides for a in ("--set", s)]
    opts = PipelineOptions(run_dir=Path(args.output), config_args=config_args, items=x.items,
                           eval_items=x.eval_items, seed=args.config.seed, judge_accuracy=x.judge_accuracy,
                           base_judge=args.config.sft.judge_model,
                           vl_rewardbench=Path(x.vl_rewardbench).resolve() if x.vl_rewardbench else None,
                           vl_rewardbench_limit=x.vl_rewardbench_limit)
    with shared_ray(args.config):
        summary = run_pipeline(opts)
        print(format_summary(summary, Path(args.output)))
        if x.demo:
            serve_and_query(args.config, trained_judge(Path(args.output)), config_args,
                            answers_file=Path(args.output) / "demo_answers.json")
    return summary


# Ray starts once, in the main thread, and every stage job joins it (`shared_ray`). The stages' output
# goes to their log files, and the demo's Serve replicas log into Ray's own log folder, not the console.
JOB = Job("Run the CAREVL pipeline end to end.", _run, add_arguments=_add_arguments, required=("output",),
          loads_models=False, worker_logs=False)


def main(argv: list[str] | None = None) -> dict:
    return run_job(JOB, argv)


if __name__ == "__main__":
    main()
