"""Curate preference pairs (paper 3.1, 3.2): captions, strong-judge verdicts, expert votes, confidence split.

    python -m ray_jobs.curate --input ITEMS --output RUN_DIR [--config FILE] [--set k=v ...]

Runs on local Ray (started in-process) or on the cluster in RAY_ADDRESS / `ray.address`, unchanged under
`ray job submit --working-dir . -- python -m ray_jobs.curate ...`. Re-running the same command into the
same RUN_DIR resumes: finished work units are kept, unfinished ones are redone.
"""
from __future__ import annotations

from carevl.cli import Job, JobArgs, run_job
from carevl.curation.pipeline import run_curation
from carevl.curation.summary import format_summary


def _show(args: JobArgs, summary: dict) -> int:
    print(format_summary(summary))
    out = args.output
    print(f"outputs: {out}/high, {out}/low, {out}/quarantine, {out}/summary.json")
    return 0 if summary["rows_conserved"] else 1


JOB = Job(__doc__.splitlines()[0], lambda a: run_curation(a.config, a.input, a.output),
          required=("input", "output"), show=_show)


def main(argv: list[str] | None = None) -> dict:
    return run_job(JOB, argv)


if __name__ == "__main__":
    main()
