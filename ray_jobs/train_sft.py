"""SFT of the LVLM judge on high-confidence pairs (paper 3.3), on Ray Train.

    python -m ray_jobs.train_sft --input RUN_DIR/high --output SFT_DIR [--config ...] [--set k=v ...]

Re-running the same command after a kill resumes from the latest checkpoint in SFT_DIR/checkpoints;
the final model is written to SFT_DIR/model.
"""
from __future__ import annotations

import json
import logging
import sys

from carevl.cli import parse_job_args
from carevl.config import ConfigError
from carevl.training.sft import run_sft


def main(argv: list[str] | None = None) -> None:
    args = parse_job_args("Fine-tune the judge on high-confidence pairs (SFT).", argv)
    if not args.input or not args.output:
        print("error: --input and --output are required", file=sys.stderr)
        raise SystemExit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        summary = run_sft(args.config, args.input, args.output)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    summary.get("train_metrics", {}).pop("log_history", None)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
