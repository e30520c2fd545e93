"""Curate preference pairs (paper 3.1, 3.2): captions, strong-judge verdicts, expert votes, confidence split.

    python -m ray_jobs.curate --input ITEMS --output RUN_DIR [--config FILE] [--set k=v ...]

Runs on local Ray (started in-process) or on the cluster in RAY_ADDRESS / `ray.address`, unchanged under
`ray job submit --working-dir . -- python -m ray_jobs.curate ...`. Re-running the same command into the
same RUN_DIR resumes: finished work units are kept, unfinished ones are redone.
"""
from __future__ import annotations

import logging
import sys

from carevl.cli import parse_job_args
from carevl.ray_utils import init_ray, interruptible
from carevl.curation.pipeline import run_curation
from carevl.curation.summary import format_summary


def main(argv: list[str] | None = None) -> int:
    args = parse_job_args(__doc__.splitlines()[0], argv)
    if not args.input or not args.output:
        print("error: --input and --output are required", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    init_ray(args.config)  # in the main thread, before the driver thread starts
    summary = interruptible(lambda: run_curation(args.config, args.input, args.output))
    print(format_summary(summary))
    print(f"outputs: {args.output}/high, {args.output}/low, {args.output}/quarantine, {args.output}/summary.json")
    return 0 if summary["rows_conserved"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
