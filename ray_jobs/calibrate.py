"""Fit the judge's calibration temperature on held-out pairs and store it beside the model.

    python -m ray_jobs.calibrate --judge MODEL_DIR --output DIR [--input PAIRS] [--no-save]
        [--config FILE] [--set score.calibration.pairs=800 ...]

Judges held-out pairs (PAIRS, a pairwise JSONL/Parquet with A/B labels, or score.calibration.pairs
synthetic ones) in both orders with the raw judge, fits a temperature on part of them, reports ECE
before and after on the rest (DIR/calibration_report.json, DIR/reliability_fit.png) and writes
MODEL_DIR/calibration.json, which the judge applies from then on (JudgeModel, the service, the scoring job).
"""
from __future__ import annotations

from carevl.cli import Job, JobArgs, run_job
from carevl.evaluation.calibrate import CalibrateRequest, calibrate, headline, summary_json


def _add_arguments(parser) -> None:
    parser.add_argument("--judge", required=True, help="judge checkpoint folder (or a key in `models`)")
    parser.add_argument("--no-save", action="store_true", help="measure only: leave the model folder as it is")


def _run(args: JobArgs) -> dict:
    report = calibrate(args.config, CalibrateRequest(judge=args.extra.judge, output=args.output, input=args.input,
                                                     save=not args.extra.no_save))
    print(summary_json(report))
    print(headline(report))
    return report


# Ray starts inside the evaluation runner, only for the judging.
JOB = Job(__doc__.splitlines()[0], _run, add_arguments=_add_arguments, required=("output",), uses_ray=False)


def main(argv: list[str] | None = None) -> dict:
    return run_job(JOB, argv)


if __name__ == "__main__":
    main()
