"""SFT of the LVLM judge on high-confidence pairs (paper 3.3), on Ray Train.

    python -m ray_jobs.train_sft --input RUN_DIR/high --output SFT_DIR [--config ...] [--set k=v ...]

Re-running the same command after a kill resumes from the latest checkpoint in SFT_DIR/checkpoints;
the final model is written to SFT_DIR/model.
"""
from __future__ import annotations

from carevl.cli import Job, run_job
from carevl.training.run import print_summary
from carevl.training.sft import run_sft

JOB = Job("Fine-tune the judge on high-confidence pairs (SFT).", lambda a: run_sft(a.config, a.input, a.output),
          required=("input", "output"), show=print_summary)


def main(argv: list[str] | None = None) -> dict:
    return run_job(JOB, argv)


if __name__ == "__main__":
    main()
