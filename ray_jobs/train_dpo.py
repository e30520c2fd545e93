"""DPO of the SFT judge on refined low-confidence pairs (paper 3.6), on Ray Train.

    python -m ray_jobs.train_dpo --input PAIRS_DIR --model SFT_DIR/model --output DPO_DIR [--config ...]

The reference model is the frozen SFT model (with LoRA: the policy's base, adapters disabled).
Re-running after a kill resumes from the latest checkpoint; the final model is written to DPO_DIR/model.
"""
from __future__ import annotations

import argparse

from carevl.cli import Job, run_job
from carevl.training.dpo import run_dpo
from carevl.training.run import print_summary


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the SFT model folder (SFT_DIR/model)")


JOB = Job("Train the SFT judge with DPO on refined pairs.",
          lambda a: run_dpo(a.config, a.input, a.extra.model, a.output),
          add_arguments=_add_arguments, required=("input", "output"), show=print_summary)


def main(argv: list[str] | None = None) -> dict:
    return run_job(JOB, argv)


if __name__ == "__main__":
    main()
