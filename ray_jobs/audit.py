"""Audit a curation run's labels against gold (paper 3.2, 3.4): judge, experts, votes, high, low, final.

    python -m ray_jobs.audit --run RUN_DIR --gold ITEMS --output DIR

RUN_DIR is a finished curation run (high/, low/, summary.json); ITEMS is a gold source: items with
per-response `gold_scores` (the synthetic items) or pairs with a `label` A/B/tie (item_id or id,
response_a, response_b). Writes report.json, report.md and high_vs_size.png into DIR and prints the
headline. No model runs and no Ray is started: the audit reads what curation stored.
"""
from __future__ import annotations

import argparse
import sys

from carevl.audit import format_headline, headline, run_audit
from carevl.audit.gold import GoldError
from carevl.audit.pairs import RunError
from carevl.cli import parse_job_args


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="curation run folder or URI (holds summary.json)")
    parser.add_argument("--gold", required=True, help="gold items or labelled pairs (Parquet/JSONL, file or folder)")


def main(argv: list[str] | None = None) -> int:
    args = parse_job_args(__doc__.splitlines()[0], argv, _add_arguments)
    if not args.output:
        print("error: --output is required", file=sys.stderr)
        return 2
    try:
        report = run_audit(args.extra.run, args.extra.gold, args.output)
    except (GoldError, RunError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_headline(headline(report)))
    print(f"outputs: {args.output}/report.json, {args.output}/report.md, {args.output}/{report['chart']}")
    return 0 if report["pairs"]["conserved"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
