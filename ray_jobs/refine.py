"""Refinement of low-confidence pairs into DPO rows (paper 3.4-3.5), on Ray Data.

    python -m ray_jobs.refine --input RUN_DIR/low --model SFT_DIR/model --output PAIRS_DIR [--config ...]

Samples refine.num_samples critiques per pair from the SFT model, scores them with the rubric scorer,
applies refine.strategy and writes PAIRS_DIR/dpo, PAIRS_DIR/critiques and PAIRS_DIR/summary.json.
Re-running after a kill finishes the remaining work units only.
"""
from __future__ import annotations

import argparse
import json

from carevl.cli import Job, run_job
from carevl.refine.pipeline import run_refine


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the SFT model folder (SFT_DIR/model)")


JOB = Job("Refine low-confidence pairs into DPO rows.",
          lambda a: run_refine(a.config, a.input, a.extra.model, a.output),
          add_arguments=_add_arguments, required=("input", "output"),
          show=lambda _args, summary: print(json.dumps(summary, indent=1)))


def main(argv: list[str] | None = None) -> dict:
    return run_job(JOB, argv)


if __name__ == "__main__":
    main()
