"""A real curation run (local Ray, tiny real models) on a few synthetic items, then the audit job."""
from __future__ import annotations

import json

import pytest

from carevl.config import load_config
from carevl.curation.pipeline import run_curation
from carevl.testing.items import synth_rows, tiny_overrides, write_jsonl
from ray_jobs import audit as audit_job

from tests.jobs import job_status

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def audited(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-e2e")
    rows = synth_rows(4, seed=11)
    items = write_jsonl(root / "items.jsonl", rows)
    config = load_config(overrides=tiny_overrides(unit_items=2))
    summary = run_curation(config, str(items), str(root / "run"))
    code = job_status(audit_job.main, ["--run", str(root / "run"), "--gold", str(items), "--output", str(root / "audit")])
    report = json.loads((root / "audit" / "report.json").read_text())
    return dict(root=root, rows=rows, summary=summary, code=code, report=report, items=items)


def _judge_recount(rows: list[dict]) -> tuple[int, int, int]:
    """(correct, n, gold ties) of the shipped verdicts, straight from the input items' gold scores."""
    correct = n = ties = 0
    for row in rows:
        gold = row["gold_scores"]
        for j in row["judgements"]:
            if gold[j["a"]] == gold[j["b"]]:
                ties += 1
                continue
            n += 1
            correct += j["choice"] == ("A" if gold[j["a"]] > gold[j["b"]] else "B")
    return correct, n, ties


def test_every_curated_pair_is_accounted_for(audited):
    report, summary = audited["report"], audited["summary"]
    pairs = report["pairs"]
    expected = sum(len(r["judgements"]) for r in audited["rows"])
    assert audited["code"] == 0 and summary["rows_conserved"]
    assert pairs["total"] == pairs["summary_total"] == summary["pairs"]["total"] == expected
    assert (pairs["high"], pairs["low"]) == (summary["pairs"]["high"], summary["pairs"]["low"])
    assert pairs["gold_ab"] + pairs["gold_ties"] + pairs["no_gold"] == pairs["total"] and pairs["no_gold"] == 0
    assert pairs["conserved"]
    assert report["consistency"] == {"votes_mismatch": 0, "split_mismatch": 0, "folder_mismatch": 0,
                                     "duplicate_pair_ids": 0}


def test_judge_accuracy_equals_a_recount_from_gold(audited):
    judge = audited["report"]["accuracy"]["judge"]["overall"]
    correct, n, ties = _judge_recount(audited["rows"])
    assert (judge["correct"], judge["n"], judge["gold_ties"], judge["abstained"]) == (correct, n, ties, 0)
    assert judge["accuracy"] == pytest.approx(correct / n)


def test_the_what_if_row_at_the_run_tau_reproduces_the_run(audited):
    report = audited["report"]
    row = next(r for r in report["what_if"] if r["configured"])
    assert row["tau"] == audited["summary"]["tau"] and row["m"] == len(audited["summary"]["experts"])
    assert row["high_size"] == report["pairs"]["high"]
    assert row["high"] == report["accuracy"]["high"]["overall"]
    assert row["final"] == report["accuracy"]["final"]["overall"]
    m = row["m"]
    assert len(report["what_if"]) == len(range(m // 2 + 1, m + 1)) + m * len(range((m - 1) // 2 + 1, m))


def test_pairs_without_gold_are_counted(audited, tmp_path):
    """Gold for all but the first item: that item's pairs are counted as no_gold, not dropped."""
    partial = write_jsonl(tmp_path / "gold.jsonl", audited["rows"][1:])
    code = job_status(audit_job.main, ["--run", str(audited["root"] / "run"), "--gold", str(partial),
                           "--output", str(tmp_path / "audit")])
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert code == 0
    assert report["pairs"]["no_gold"] == len(audited["rows"][0]["judgements"])
    assert report["pairs"]["total"] == audited["report"]["pairs"]["total"] and report["pairs"]["conserved"]
