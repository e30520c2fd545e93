"""Label audit: how right the curated labels of a run are, measured against gold (paper 3.2, 3.4).

gold (per-response scores or per-pair labels) + curated pairs -> accuracy per label source with Wilson
intervals -> what-if table over tau and expert panels -> report.json, report.md, chart.
"""
from carevl.audit.report import format_headline, headline
from carevl.audit.runner import audit_run, run_audit, write_report

__all__ = ["audit_run", "format_headline", "headline", "run_audit", "write_report"]
