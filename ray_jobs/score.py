"""Score pairs and groups of answers with a trained judge, offline on Ray Data.

    python -m ray_jobs.score --input ROWS --judge MODEL_DIR|tiny:<role>|MODEL_KEY --output DIR
        [--config FILE] [--set score.method=reference ...]

ROWS (JSONL or Parquet, a file or a folder) holds pairs {question, response_a, response_b, image?}
(the files `ray_jobs.evaluate` reads) and/or groups {question, candidates: [...], reference?, image?}.
Writes DIR/pairs (p_a in both orders, winner, swap consistency), DIR/groups (one reward per candidate
by score.method), DIR/quarantine (rows that could not be scored, with the reason) and summary.json.
Re-running the same command resumes a killed run; every input row ends in exactly one output row.
"""
from __future__ import annotations

import json

from carevl.cli import Job, JobArgs, run_job
from carevl.scoring.pipeline import ScoreRequest, run_scoring


def _add_arguments(parser) -> None:
    parser.add_argument("--judge", required=True, help="judge checkpoint folder, tiny:<role>, or a key in `models`")


def _run(args: JobArgs) -> dict:
    summary = run_scoring(args.config, ScoreRequest(input=args.input, judge=args.extra.judge, output=args.output))
    print(json.dumps({k: summary[k] for k in ("input_rows", "pairs", "groups", "quarantined", "run")}, indent=2))
    return summary


JOB = Job(__doc__.splitlines()[0], _run, add_arguments=_add_arguments, required=("input", "output"))


def main(argv: list[str] | None = None) -> dict:
    return run_job(JOB, argv)


if __name__ == "__main__":
    main()
