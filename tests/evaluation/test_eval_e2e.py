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
            "--output", str(out), "--mode", "explain", "--k", "1", "--limit", "5"]
    report = evaluate_job.main(args)
    assert set(report["metrics"]) == {"general", "hallucination", "reasoning", "overall", "macro"}
    assert report["text_only"] and "NOT comparable" in report["notes"][0]
    preds = _predictions(out)
    assert report["counts"]["items"] == 5 and len(preds) == 5
    # Explain mode: the verdict is read strictly from the generated text; what cannot be read is counted.
    from carevl.judge_format import parse_verdict

    answered = [p for p in preds if p["status"] in ("ok", "unparseable")]
    assert all(p["judge_text"] is not None for p in answered)
    assert report["counts"]["unparseable"] == sum(parse_verdict(p["judge_text"]) is None for p in answered)
    assert all(not p["correct"] for p in preds if p["status"] != "ok")
    # Re-running the same command judges nothing new and keeps one line per item and run.
    again = evaluate_job.main(args)
    assert len(_predictions(out)) == 5
    assert again["metrics"] == report["metrics"]


def test_evaluate_through_the_judge_service(ray_local, tmp_path):
    """--judge URL: the same tiny judge behind Ray Serve, reached with carevl.client; its verdict-mode
    p_a must match the judge loaded in this process on the same (shown-order) pairs."""
    import socket

    from ray import serve

    from carevl.evaluation.judgements import presented_swapped
    from carevl.judge.model import JudgeModel
    from carevl.serving.app import build_app
    from carevl.serving.builder import JudgeAppArgs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(JudgeAppArgs.model_validate(
            {"model": "tiny:vlm_micro", "default_mode": "verdict", "num_cpus": 0.5})), name="judge", route_prefix="/")
        out = tmp_path / "service"
        report = evaluate_job.main(["--benchmark", "synthetic", "--judge", f"http://127.0.0.1:{port}",
                                    "--output", str(out), "--mode", "verdict", "--k", "1", "--limit", "3"])
    finally:
        serve.shutdown()
    preds = _predictions(out)
    assert len(preds) == 3 and report["counts"]["errors"] == 0
    from carevl.data.synth import synth_eval_pairs

    from carevl.config import load_config

    items = {p["id"]: p for p in synth_eval_pairs(load_config().evaluation.synthetic_items, 0)}
    local = JudgeModel("tiny:vlm_micro")
    for p in preds:
        item = items[p["id"]]
        a, b = (item["response_b"], item["response_a"]) if presented_swapped(0, p["id"]) else \
            (item["response_a"], item["response_b"])
        p_shown, _ = local.verdict({"question": [item["question"]], "response_a": [a], "response_b": [b],
                                    "image": [item["image"]]})
        expected = 1.0 - p_shown[0] if presented_swapped(0, p["id"]) else p_shown[0]
        assert p["p_a"] == pytest.approx(expected, abs=1e-4)
