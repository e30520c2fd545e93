"""DPO of the SFT judge on refined low-confidence pairs (paper 3.6), on Ray Train.

    python -m ray_jobs.train_dpo --input PAIRS_DIR --model SFT_DIR/model --output DPO_DIR [--config ...]

The reference model is the frozen SFT model. Re-running after a kill resumes from the latest
checkpoint; the final model is written to DPO_DIR/model.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from carevl.cli import parse_job_args
from carevl.config import ConfigError
from carevl.training.dpo import run_dpo


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the SFT model folder (SFT_DIR/model)")


def main(argv: list[str] | None = None) -> None:
    args = parse_job_args("Train the SFT judge with DPO on refined pairs.", argv, _add_arguments)
    if not args.input or not args.output:
        print("error: --input and --output are required", file=sys.stderr)
        raise SystemExit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        summary = run_dpo(args.config, args.input, args.extra.model, args.output)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    summary.get("train_metrics", {}).pop("log_history", None)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
