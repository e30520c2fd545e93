"""Refinement of low-confidence pairs into DPO rows (paper 3.4-3.5), on Ray Data.

    python -m ray_jobs.refine --input RUN_DIR/low --model SFT_DIR/model --output PAIRS_DIR [--config ...]

Samples refine.num_samples critiques per pair from the SFT model, scores them with the rubric scorer,
applies refine.strategy and writes PAIRS_DIR/dpo, PAIRS_DIR/critiques and PAIRS_DIR/summary.json.
Re-running after a kill finishes the remaining work units only.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from carevl.cli import parse_job_args
from carevl.ray_utils import init_ray, interruptible
from carevl.refine.pipeline import run_refine


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the SFT model folder (SFT_DIR/model)")


def main(argv: list[str] | None = None) -> None:
    args = parse_job_args("Refine low-confidence pairs into DPO rows.", argv, _add_arguments)
    if not args.input or not args.output:
        print("error: --input and --output are required", file=sys.stderr)
        raise SystemExit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        init_ray(args.config)  # in the main thread, before the driver thread starts
        summary = interruptible(lambda: run_refine(args.config, args.input, args.extra.model, args.output))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
