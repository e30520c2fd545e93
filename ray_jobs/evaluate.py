"""Evaluate a judge on a benchmark (paper 4.1, 4.4, A.2).

    python -m ray_jobs.evaluate --benchmark vl_rewardbench|pairwise|synthetic --input DATA
        --judge MODEL_DIR_OR_URL --output DIR [--mode verdict|explain] [--k K] [--limit N]
        [--images DIR] [--config FILE] [--set evaluation.k=5 ...]

A model folder (or `tiny:<role>`, or a key under `models`) runs in-process in a Ray Data actor pool;
an http(s) URL is the running judge service. Writes predictions.jsonl, report.json, report.md and
PNG charts into --output and prints the headline metrics. Re-running into the same folder resumes.
"""
from __future__ import annotations

import argparse
import json

from carevl.cli import Job, JobArgs, run_job
from carevl.evaluation.report import BENCHMARKS
from carevl.evaluation.runner import EvalRequest, evaluate


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    parser.add_argument("--judge", required=True,
                        help="judge checkpoint folder, tiny:<role>, a key in `models`, or the service URL")
    parser.add_argument("--mode", choices=("verdict", "explain"), default=None,
                        help="default: evaluation.mode from the config")
    parser.add_argument("--k", type=int, default=None, help="judgements per item (default: evaluation.k)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N items after the seeded shuffle")
    parser.add_argument("--images", default=None, help="VL-RewardBench image folder (its image_path is relative)")


def _run(args: JobArgs) -> dict:
    x = args.extra
    request = EvalRequest(benchmark=x.benchmark, judge=x.judge, output=args.output, input=args.input,
                          mode=x.mode, k=x.k, limit=x.limit, images=x.images)
    report = evaluate(args.config, request)
    print(json.dumps({"benchmark": report["benchmark"], "metrics": report["metrics"],
                      "counts": report["counts"], "output": args.output}, indent=2))
    return report


# Ray starts only when the judge runs in process (not for a service URL), inside `evaluate`.
JOB = Job(__doc__.splitlines()[0], _run, add_arguments=_add_arguments, required=("output",), uses_ray=False)


def main(argv: list[str] | None = None) -> dict:
    return run_job(JOB, argv)


if __name__ == "__main__":
    main()
