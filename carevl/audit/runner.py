"""The label audit of one curation run: read its pairs and a gold source, compute, write the report.

Nothing here runs a model or starts Ray: the audit reads only what curation stored. The run folder and
the gold may be local paths or cloud URIs; the report folder is local (report.json, report.md, chart).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from carevl.audit.charts import what_if_chart
from carevl.audit.gold import match_gold, read_gold
from carevl.audit.pairs import read_pairs, read_summary
from carevl.audit.report import CHART_FILE, build_report, render_markdown


def audit_run(run_dir: str, gold_uri: str) -> dict[str, Any]:
    """The audit report (see `carevl.audit.report`) of the curation run in `run_dir` against `gold_uri`."""
    summary = read_summary(run_dir)
    experts, tau = list(summary["experts"]), int(summary["tau"])
    pairs = read_pairs(run_dir, len(experts))
    gold = read_gold(gold_uri)
    labels = match_gold(gold, pairs.item_id, pairs.pair_id, pairs.response_a, pairs.response_b)
    return build_report(pairs, labels, experts=experts, tau=tau, run_dir=run_dir,
                        gold_source={"source": gold_uri, "kind": gold.kind, "rows": gold.rows},
                        summary_total=summary["pairs"].get("total"))


def write_report(report: dict[str, Any], output: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and the chart into the folder `output`; returns their paths."""
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "report.json", "markdown": folder / "report.md", "chart": folder / CHART_FILE}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    what_if_chart(report, paths["chart"])
    return paths


def run_audit(run_dir: str, gold_uri: str, output: str | Path) -> dict[str, Any]:
    """Audit `run_dir` against `gold_uri` and write the report into `output`; returns the report."""
    report = audit_run(run_dir, gold_uri)
    write_report(report, output)
    return report
