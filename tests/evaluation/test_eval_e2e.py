"""End to end on local Ray: `python -m ray_jobs.evaluate` with the tiny judge (`tiny:vlm_micro`, a real
LLaVA architecture with random weights) on a few synthetic pairs and a few VL-RewardBench items."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ray_jobs import evaluate as evaluate_job

VLRB = Path(__file__).resolve().parents[3] / "shared" / "data" / "vl_rewardbench" / "data.jsonl"

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _predictions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_evaluate_synthetic_with_tiny_judge(ray_local, tmp_path):
    out = tmp_path / "synthetic"
    report = evaluate_job.main(["--benchmark", "synthetic", "--judge", "tiny:vlm_micro", "--output", str(out),
                                "--mode", "verdict", "--k", "2", "--limit", "4"])
    preds = _predictions(out)
    assert len(preds) == 4 * 2
    assert {p["run"] for p in preds} == {0, 1}
    assert all(0.0 < p["p_a"] < 1.0 for p in preds if p["status"] == "ok")  # a real forward pass
    by_item = {}
    for p in preds:  # verdict mode is deterministic: both runs agree
        by_item.setdefault(p["id"], set()).add(p["verdict"])
    assert all(len(v) == 1 for v in by_item.values())
    assert report["counts"]["items"] == 4 and report["counts"]["judgements"] == 8
    assert not report["text_only"]  # synthetic pairs carry their images
    for key in ("with_tie", "without_tie", "overall", "macro"):
        assert key in report["metrics"]
    assert report["bias"]["position_consistency"]["n_pairs"] + \
        report["bias"]["position_consistency"]["n_incomplete"] == 8
    assert (out / "accuracy.png").stat().st_size > 0 and (out / "report.md").is_file()


@pytest.mark.skipif(not VLRB.is_file(), reason=f"VL-RewardBench annotations not found at {VLRB}")
def test_evaluate_vl_rewardbench_text_only_with_limit(ray_local, tmp_path):
    out = tmp_path / "vlrb"
    args = ["--benchmark", "vl_rewardbench", "--input", str(VLRB), "--judge", "tiny:vlm_micro",
            "--output", str(out), "--mode", "verdict", "--k", "1", "--limit", "5"]
    report = evaluate_job.main(args)
    assert set(report["metrics"]) == {"general", "hallucination", "reasoning", "overall", "macro"}
    assert report["text_only"] and "NOT comparable" in report["notes"][0]
    assert report["counts"]["items"] == 5 and len(_predictions(out)) == 5
    # Re-running the same command judges nothing new and keeps one line per item and run.
    again = evaluate_job.main(args)
    assert len(_predictions(out)) == 5
    assert again["metrics"] == report["metrics"]
