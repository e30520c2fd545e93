"""The evaluation runner without a model: seeded order, A/B presentation, records, resume, outputs.

The judge here is a plain rule ("the longer answer wins", written as explain-mode text) passed
through `evaluate(judge_fn=...)`; the real judge on local Ray is in test_eval_e2e.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from collections import Counter

import pytest

from carevl.config import load_config
from carevl.evaluation.backends import judge_answer
from carevl.models.specs import judge_spec
from carevl.evaluation.judgements import (
    PRIMARY,
    SWAPPED,
    build_record,
    judge_requests,
    presented_swapped,
    request_key,
    seeded_shuffle,
)
from carevl.evaluation.runner import EvalRequest, evaluate
from carevl.ledger import StaleRunError


def _items(n, label="A", category="cat"):
    return [{"id": f"it{i}", "category": category, "question": f"q{i}", "response_a": "long answer " * (i + 2),
             "response_b": "short", "label": label, "image_path": None, "image_bytes": None} for i in range(n)]


def test_seeded_shuffle_is_stable_and_seed_dependent():
    items = _items(30)
    order = [it["id"] for it in seeded_shuffle(items, 0)]
    assert order == [it["id"] for it in seeded_shuffle(list(reversed(items)), 0)]  # file order does not matter
    assert order != [it["id"] for it in seeded_shuffle(items, 1)]
    assert sorted(order) == sorted(it["id"] for it in items)


def test_presentation_is_randomised_and_orders_are_opposite():
    items = _items(200)
    swaps = Counter(presented_swapped(0, it["id"]) for it in items)
    assert 70 < swaps[True] < 130  # about half the items are shown B first
    reqs = {r["key"]: r for r in judge_requests(items[:5], [0, 1], 0, position_check=True)}
    assert len(reqs) == 5 * 2 * 2
    for it in items[:5]:
        primary, other = reqs[request_key(it["id"], 0, PRIMARY)], reqs[request_key(it["id"], 0, SWAPPED)]
        assert (primary["response_a"], primary["response_b"]) == (other["response_b"], other["response_a"])
        shown_first = it["response_b"] if presented_swapped(0, it["id"]) else it["response_a"]
        assert primary["response_a"] == shown_first
        assert primary["run"] == 0 and reqs[request_key(it["id"], 1, PRIMARY)]["run"] == 1
    assert judge_requests(items[:5], [0, 1], 0, False, done={("it0", 0)})[0]["key"] == request_key("it0", 1, PRIMARY)


def test_record_maps_a_first_position_judge_back_to_item_order():
    item = _items(1)[0]
    always_first = {PRIMARY: {"verdict": "A", "p_a": 0.8, "status": "ok"},
                    SWAPPED: {"verdict": "A", "p_a": 0.8, "status": "ok"}}
    rec = build_record(item, 0, 0, always_first, allow_tie=True, tie_margin=0.05)
    swapped = presented_swapped(0, item["id"])
    assert rec["verdict"] == ("B" if swapped else "A")
    assert rec["verdict_swapped"] == ("A" if swapped else "B")
    assert rec["prediction"] == "tie"                # the two orders disagree
    assert rec["p_a"] == pytest.approx(0.2 if swapped else 0.8)
    binary = build_record(item, 0, 0, always_first, allow_tie=False, tie_margin=0.05)
    assert binary["prediction"] == rec["verdict"]
    assert binary["correct"] == (rec["verdict"] == "A")


def test_judge_answer_statuses():
    assert judge_answer("explain", None, None, "Verdict: B\nExplanation: x", "ok")["verdict"] == "B"
    bad = judge_answer("explain", None, None, "I prefer the first one.", "ok")
    assert bad == {"verdict": None, "p_a": None, "status": "unparseable", "text": "I prefer the first one."}
    assert judge_answer("verdict", 0.7, "A", None, "ok") == {"verdict": "A", "p_a": 0.7, "status": "ok", "text": None}
    assert judge_answer("verdict", 0.5, "tie", None, "ok")["status"] == "no_preference"
    assert judge_answer("verdict", None, None, None, "prompt_too_long")["status"] == "prompt_too_long"


def test_judge_spec_keeps_settings_and_replaces_path():
    config = load_config()
    spec = judge_spec(config, "/some/checkpoint", backbone=config.evaluation.judge_model)
    assert spec.path == "/some/checkpoint" and spec.gguf_file is None
    assert spec.max_length == config.models[config.evaluation.judge_model].max_length
    assert judge_spec(config, "vlm", backbone=config.evaluation.judge_model) == config.models["vlm"]
    with pytest.raises(ValueError, match="kind 'reward'"):
        judge_spec(config, "rm_llama")


def longer_answer_judge(unparseable_ids=(), fail_after=None):
    """Explain-mode judge as a rule: picks the longer shown answer; `unparseable_ids` get no verdict line."""
    calls = {"batches": 0}

    def judge(requests):
        for start in range(0, len(requests), 3):
            if fail_after is not None and calls["batches"] >= fail_after:
                raise RuntimeError("judge killed midway")
            calls["batches"] += 1
            out = []
            for r in requests[start:start + 3]:
                choice = "A" if len(r["response_a"]) >= len(r["response_b"]) else "B"
                text = "no idea" if r["id"] in unparseable_ids else f"Verdict: {choice}\nExplanation: longer"
                out.append({"key": r["key"], **judge_answer("explain", None, None, text, "ok")})
            yield out
    return judge


def _pairwise_file(tmp_path):
    rows = []
    for i in range(8):
        long_first = i % 2 == 0
        a, b = ("a detailed answer " * 5, "short") if long_first else ("short", "a detailed answer " * 5)
        label = "tie" if i == 7 else ("A" if long_first else "B") if i < 5 else ("B" if long_first else "A")
        rows.append({"id": f"p{i}", "image": None, "question": "q", "response_a": a, "response_b": b,
                     "label": label, "category": "COCO" if i < 4 else "Math"})
    rows.append({"id": "broken", "question": "q", "response_a": "a", "response_b": "b", "label": "maybe"})
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_evaluate_pairwise_outputs(tmp_path):
    config = load_config(overrides=["evaluation.k=2"])
    out = tmp_path / "out"
    req = EvalRequest("pairwise", "rule-judge", str(out), input=str(_pairwise_file(tmp_path)), mode="explain")
    report = evaluate(config, req, judge_fn=longer_answer_judge(unparseable_ids={"p0"}))
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 8 * 2
    assert {"id", "category", "label", "prediction", "correct", "run"} <= set(lines[0])
    assert report["counts"]["unparseable"] == 2           # p0 in both runs, counted wrong
    assert report["counts"]["quarantined"] == 1
    # The longer answer is right for p1-p4 (p0 unparseable), wrong for p5, p6; p7 is a tie label.
    wo = report["metrics"]["without_tie"]
    assert wo["per_category"] == {"COCO": 0.75, "Math": pytest.approx(1 / 3)}
    assert wo["n_items"] == {"COCO": 4, "Math": 3}
    assert report["runs"]["setting"] == "without_tie"
    assert report["runs"]["per_run"] == {0: pytest.approx(4 / 7), 1: pytest.approx(4 / 7)}
    # A position-consistent rule never produces a tie, so the tie-labelled item is missed with ties.
    assert report["metrics"]["with_tie"]["per_category"]["Math"] == pytest.approx(1 / 4)
    assert report["bias"]["position_consistency"]["rate"] == 1.0
    assert report["bias"]["length_bias"]["judge_picks_longer"] == 1.0
    assert json.loads((out / "report.json").read_text())["metrics"]["without_tie"]["n_items_total"] == 7
    assert "Pair with tie" in (out / "report.md").read_text()
    for png in ("accuracy.png", "bias.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_resumes_after_a_kill(tmp_path):
    config = load_config(overrides=["evaluation.k=2"])
    out = tmp_path / "out"
    req = EvalRequest("pairwise", "rule-judge", str(out), input=str(_pairwise_file(tmp_path)), mode="explain")
    with pytest.raises(RuntimeError, match="killed midway"):
        evaluate(config, req, judge_fn=longer_answer_judge(fail_after=4))
    partial = (out / "predictions.jsonl").read_text().splitlines()
    assert 0 < len(partial) < 16
    with (out / "predictions.jsonl").open("a") as fh:  # a write torn by the kill
        fh.write('{"id": "p3", "run"')
    seen = []

    def counting_judge(requests):
        seen.extend(requests)
        yield from longer_answer_judge()(requests)

    evaluate(config, req, judge_fn=counting_judge)
    keys = Counter((r["id"], r["run"]) for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines()))
    assert len(keys) == 16 and set(keys.values()) == {1}
    assert len(seen) == 2 * (16 - len(partial))  # only the missing (item, run) pairs, in both orders
    with pytest.raises(StaleRunError, match=r'config.judge: "rule-judge" -> "other-judge"'):
        evaluate(config, EvalRequest("pairwise", "other-judge", str(out), input=req.input, mode="explain"),
                 judge_fn=longer_answer_judge())
    Path(req.input).write_text(Path(req.input).read_text() + "\n")  # the benchmark file changed
    with pytest.raises(StaleRunError, match=r"input.benchmark.bytes: .*To start afresh, delete"):
        evaluate(config, req, judge_fn=longer_answer_judge())


def test_limit_keeps_first_items_of_the_seeded_order(tmp_path):
    config = load_config(overrides=["evaluation.k=1", "evaluation.position_check=false"])
    path = _pairwise_file(tmp_path)
    full = evaluate(config, EvalRequest("pairwise", "r", str(tmp_path / "a"), input=str(path), mode="explain"),
                    judge_fn=longer_answer_judge())
    small = evaluate(config, EvalRequest("pairwise", "r", str(tmp_path / "b"), input=str(path), mode="explain",
                                         limit=3), judge_fn=longer_answer_judge())
    assert full["counts"]["items"] == 8 and small["counts"]["items"] == 3
    assert small["bias"]["position_consistency"] is None
    first_ids = [json.loads(x)["id"] for x in (tmp_path / "b" / "predictions.jsonl").read_text().splitlines()]
    order = [json.loads(x)["id"] for x in (tmp_path / "a" / "predictions.jsonl").read_text().splitlines()]
    assert first_ids == order[:3]


def test_request_errors_name_the_flag(tmp_path):
    config = load_config()
    with pytest.raises(ValueError, match="--images"):
        evaluate(config, EvalRequest("pairwise", "r", str(tmp_path / "o"), input="x.jsonl", images="imgs"),
                 judge_fn=longer_answer_judge())
    with pytest.raises(ValueError, match="--input is required"):
        evaluate(config, EvalRequest("vl_rewardbench", "r", str(tmp_path / "o")), judge_fn=longer_answer_judge())
    with pytest.raises(ValueError, match="--benchmark"):
        evaluate(config, EvalRequest("mmbench", "r", str(tmp_path / "o")), judge_fn=longer_answer_judge())
