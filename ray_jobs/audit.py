"""Audit a curation run's labels against gold (paper 3.2, 3.4): judge, experts, votes, high, low, final.

    python -m ray_jobs.audit --run RUN_DIR --gold ITEMS --output DIR

RUN_DIR is a finished curation run (high/, low/, summary.json); ITEMS is a gold source: items with
per-response `gold_scores` (the synthetic items) or pairs with a `label` A/B/tie (item_id or id,
response_a, response_b). Writes report.json, report.md and high_vs_size.png into DIR and prints the
headline. No model runs and no Ray is started: the audit reads what curation stored. Exit status 1
when some curated pair could not be accounted for, 2 for a bad gold source or an unfinished run.
"""
from __future__ import annotations

import argparse

from carevl.audit import format_headline, headline, run_audit
from carevl.cli import Job, JobArgs, run_job


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="curation run folder or URI (holds summary.json)")
    parser.add_argument("--gold", required=True, help="gold items or labelled pairs (Parquet/JSONL, file or folder)")


def _show(args: JobArgs, report: dict) -> int:
    print(format_headline(headline(report)))
    print(f"outputs: {args.output}/report.json, {args.output}/report.md, {args.output}/{report['chart']}")
    return 0 if report["pairs"]["conserved"] else 1


JOB = Job(__doc__.splitlines()[0], lambda a: run_audit(a.extra.run, a.extra.gold, a.output),
          add_arguments=_add_arguments, required=("output",), uses_ray=False, loads_models=False, show=_show)


def main(argv: list[str] | None = None) -> dict:
    return run_job(JOB, argv)


if __name__ == "__main__":
    main()
