"""`python -m ray_jobs.plan`: plan.json, plan.md and the chart for the paper preset on cluster.yaml."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ray_jobs.plan import main
from tests.jobs import job_status

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--config", str(REPO / "configs" / "paper.yaml"), "--cluster", str(REPO / "cluster.yaml"),
        "--pairs", "1000000"]


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    status = job_status(main, ARGS + ["--output", str(out)])
    return status, out, json.loads((out / "plan.json").read_text())


def test_outputs_and_status(paper_plan):
    status, out, plan = paper_plan
    assert status == 0 and plan["errors"] == []  # every stage places (SFT and DPO sharded over 8 GPUs)
    assert (out / "gpu_hours.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "plan.md").read_text()
    assert "## Placement errors" not in md and "qwen2-vl-72b" in md
    assert set(plan["stages"]) == {"curate", "sft", "refine", "dpo"}
    assert all(t["gpu_hours"] > 0 for t in plan["stages"].values())


def test_counts_follow_the_paper_data_flow(paper_plan):
    _, _, plan = paper_plan
    c = plan["counts"]
    assert c["responses_per_item"] == 10 and c["items"] == 22_223  # 10 answers -> 45 pairs per item
    experts = [w for w in plan["work"] if w["role"] == "expert"]
    assert len(experts) == 5 and all(w["requests"] == c["unique_responses"] for w in experts)
    assert "9.0x fewer" in experts[0]["note"]  # 2 x 45 sides of pairs vs 10 distinct answers per item
    [scorer] = [w for w in plan["work"] if w["role"] == "critique scorer"]
    assert scorer["requests"] == c["low_pairs"] * 10


def test_roofline_time_and_cost(paper_plan):
    _, _, plan = paper_plan
    mfu = plan["assumptions"]["mfu"]
    nodes = {n["name"]: n for n in plan["nodes"]}
    for w in plan["work"]:
        if w["device"] != "GPU":
            continue
        node = nodes[w["node_type"]]
        need = next(p for p in plan["placement"] if p["stage"] == w["stage"] and p["model"] == w["model"])
        peak = need["gpus_per_replica"] * node["gpu_tflops"] * 1e12
        assert w["device_hours"] == pytest.approx(w["seconds_one_replica"] / 3600 * need["gpus_per_replica"])
        assert w["usd"] == pytest.approx(w["device_hours"] * node["usd_per_hour"] / node["gpus"])
        if w["stage"] in ("sft", "dpo"):
            assert w["seconds_one_replica"] == pytest.approx(w["flops"] / (mfu["train"] * peak))
        elif w["new_tokens_total"] == 0:
            assert w["seconds_one_replica"] == pytest.approx(w["flops"] / (mfu["prefill"] * peak))


def test_mfu_and_prices_are_overridable(paper_plan, tmp_path):
    _, _, base = paper_plan
    job_status(main, ARGS + ["--output", str(tmp_path), "--set", "planning.mfu.train=0.7",
                 "--set", "planning.prices.gpu_8x_h100_80g=110.08"])
    plan = json.loads((tmp_path / "plan.json").read_text())
    # DPO: its sharded worker (52.0 GB) fits only the 80 GB nodes, so the dearer H100 stays its node type
    # (sharded SFT also fits a 48 GB L40S, which the doubled H100 price would make the cheaper choice).
    assert plan["stages"]["dpo"]["gpu_hours"] == pytest.approx(base["stages"]["dpo"]["gpu_hours"] / 2)
    [w] = [w for w in plan["work"] if w["stage"] == "dpo"]
    [b] = [w for w in base["work"] if w["stage"] == "dpo"]
    assert w["node_type"] == b["node_type"] == "gpu_8x_h100_80g"
    assert w["usd"] == pytest.approx(b["usd"])  # half the hours at twice the price
