"""Client retry and error handling against a scripted transport (the real server is in test_service)."""
from __future__ import annotations

import asyncio
import inspect
import json
import pickle

import httpx
import pytest
from PIL import Image

from carevl.client import AsyncJudgeClient, JudgeAPIError, JudgeClient, JudgeReward, image_field
from carevl.client.trl_rewards import group_indices

RESULT = {"winner": "A", "p_a": 0.8, "mode": "verdict", "model": "m", "latency_ms": 1.0}


def _script(responses: list):
    """A transport answering with `responses` in turn (an exception is raised instead of answering)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses[len(seen) - 1]
        if isinstance(item, Exception):
            raise item
        return item
    return handler, seen


def test_retries_overload_and_connection_errors_then_returns_a_typed_result():
    handler, seen = _script([httpx.Response(503, text="overloaded"), httpx.ConnectError("refused"),
                             httpx.Response(200, json=RESULT)])
    with JudgeClient("http://judge", token="t", retries=3, backoff_s=0.001,
                     transport=httpx.MockTransport(handler)) as client:
        result = client.judge("q", "a", "b", mode="verdict")
    assert result.winner == "A" and result.p_a == 0.8 and len(seen) == 3
    assert seen[0].headers["authorization"] == "Bearer t"


def test_client_errors_are_not_retried_and_keep_the_field():
    body = {"error": "invalid_request", "message": "question: too long", "field": "question"}
    handler, seen = _script([httpx.Response(422, json=body)] * 3)
    with JudgeClient("http://judge", retries=3, backoff_s=0.001, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(JudgeAPIError) as err:
            client.judge("q", "a", "b")
    assert len(seen) == 1 and err.value.status == 422 and err.value.field == "question"


def test_gives_up_after_the_last_retry():
    handler, seen = _script([httpx.Response(503, text="busy")] * 3)
    with JudgeClient("http://judge", retries=2, backoff_s=0.001, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(JudgeAPIError) as err:
            client.health()
    assert len(seen) == 3 and err.value.status == 503


def test_async_client_retries_timeouts():
    handler, seen = _script([httpx.ReadTimeout("slow"), httpx.Response(200, json=RESULT)])

    async def run():
        async with AsyncJudgeClient("http://judge", retries=1, backoff_s=0.001,
                                    transport=httpx.MockTransport(handler)) as client:
            return await client.judge("q", "a", "b")
    assert asyncio.run(run()).p_a == 0.8 and len(seen) == 2


def test_request_body_is_validated_before_sending():
    handler, seen = _script([])
    with JudgeClient("http://judge", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ValueError):
            client.judge("q", "a", "b", mode="fast")
    assert seen == []


def test_images_become_data_urls():
    assert image_field(Image.new("RGB", (4, 4))).startswith("data:image/png;base64,")
    assert image_field(b"\xff\xd8\xff\xe0rest").startswith("data:image/jpeg;base64,")
    assert image_field("data:image/png;base64,AAAA") == "data:image/png;base64,AAAA"
    assert image_field(None) is None


# ---- reward adapters (TRL, verl) against a scripted /v1/reward -------------------------------------------
def _reward_server(failures_for: dict[int, list[dict]] | None = None):
    """A transport answering /v1/reward with reward 0.1 * (completion index + 1), plus scripted failures
    (nulls) keyed by the request number; keeps the bodies it saw."""
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        failures = (failures_for or {}).get(len(bodies) - 1, [])
        rewards = [[0.1 * (i + 1) for i in range(len(p["completions"]))] for p in body["prompts"]]
        for f in failures:
            rewards[f["prompt"]][f["completion"]] = None
        return httpx.Response(200, json={"rewards": rewards, "method": body.get("method") or "bradley_terry",
                                         "temperature": 1.0, "comparisons": 1, "failures": failures, "model": "m",
                                         "latency_ms": 1.0})
    return httpx.MockTransport(handler), bodies


def test_group_indices_follow_each_trainers_layout():
    assert group_indices(6, "grpo", 3) == [[0, 1, 2], [3, 4, 5]]
    assert group_indices(6, "online_dpo", None) == [[0, 3], [1, 4], [2, 5]]
    with pytest.raises(ValueError, match="num_generations=4"):
        group_indices(6, "grpo", 4)
    with pytest.raises(ValueError, match="even"):
        group_indices(5, "online_dpo", None)


def test_trl_adapter_sends_grouped_requests_and_returns_none_for_a_failed_judgement():
    failure = {"prompt": 1, "completion": 0, "reason": "prompt_too_long", "message": "too long"}
    transport, bodies = _reward_server({0: [failure]})
    logged = []
    reward = JudgeReward("http://judge", num_generations=2, method="reference", transport=transport)
    image = Image.new("RGB", (4, 4), "red")
    prompts = [[{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": q}]}] for q in ("q0", "q0", "q1", "q1")]
    out = reward(prompts=prompts, completions=["a", "b", "c", "d"], images=[[image]] * 4,
                 reference=["r0", "r0", "r1", "r1"], log_metric=lambda name, value: logged.append((name, value)),
                 trainer_state=None)
    assert out == [pytest.approx(0.1), pytest.approx(0.2), None, pytest.approx(0.2)]
    (body,) = bodies
    assert body["method"] == "reference" and [p["question"] for p in body["prompts"]] == ["q0", "q1"]
    assert body["prompts"][0]["completions"] == ["a", "b"] and body["prompts"][1]["reference"] == "r1"
    assert body["prompts"][0]["image"].startswith("data:image/png;base64,")
    assert logged == [("judge/failed_rewards", 1.0)] and reward.stats["failed"] == 1


def test_trl_adapter_splits_requests_and_reindexes_their_failures():
    failure = {"prompt": 0, "completion": 1, "reason": "judge_error", "message": "boom"}
    transport, bodies = _reward_server({1: [failure]})
    reward = JudgeReward.for_online_dpo("http://judge", max_prompts_per_request=1, max_concurrent_requests=1,
                                        transport=transport)
    out = reward(prompts=["p0", "p1", "p2"] * 2, completions=["x0", "x1", "x2", "y0", "y1", "y2"])
    assert [b["prompts"][0]["completions"] for b in bodies] == [["x0", "y0"], ["x1", "y1"], ["x2", "y2"]]
    assert out == [pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.2), None,
                   pytest.approx(0.2)]
    assert reward.stats["requests"] == 3


def test_trl_adapter_refuses_a_group_that_mixes_prompts_and_a_missing_column():
    transport, bodies = _reward_server()
    reward = JudgeReward("http://judge", num_generations=2, transport=transport)
    with pytest.raises(ValueError, match="different prompts"):
        reward(prompts=["p0", "p1"], completions=["a", "b"])
    with pytest.raises(KeyError, match="judge_image"):
        JudgeReward("http://judge", num_generations=2, image_column="judge_image", transport=transport)(
            prompts=["p", "p"], completions=["a", "b"], image=[None, None])
    with pytest.raises(KeyError, match="reference"):
        JudgeReward("http://judge", num_generations=2, method="reference", transport=transport)(
            prompts=["p", "p"], completions=["a", "b"])
    assert bodies == []
    opened = JudgeReward("http://judge", num_generations=2)
    assert opened.client is opened.client  # one client, reused
    copy = pickle.loads(pickle.dumps(opened))  # shipped to another process: the connection reopens there
    assert copy.num_generations == 2 and copy._client is None


def test_images_travel_in_every_form_trainers_hold_them(tmp_path):
    from carevl.data.images import encode_png

    png = encode_png(Image.new("RGB", (4, 4), "blue"))
    path = tmp_path / "x.png"
    path.write_bytes(png)
    as_url = image_field(png)
    assert image_field(path) == image_field(str(path)) == image_field({"bytes": None, "path": str(path)}) == as_url
    assert image_field({"bytes": png, "path": None}) == as_url
    assert image_field("https://example.invalid/cat.png") == "https://example.invalid/cat.png"
    assert image_field("/no/such/file.png") == "/no/such/file.png"  # left for a server that reads its own paths


def test_verl_functions_keep_verls_documented_signatures():
    from carevl.client import compute_score, compute_score_batch

    assert list(inspect.signature(compute_score).parameters)[:4] == ["data_source", "solution_str",
                                                                     "ground_truth", "extra_info"]
    assert list(inspect.signature(compute_score_batch).parameters)[:4] == ["data_sources", "solution_strs",
                                                                           "ground_truths", "extra_infos"]
    with pytest.raises(ValueError, match="compute_score_batch"):
        compute_score("s", "a", "b", {"question": "q"}, judge_url="http://judge", method="bradley_terry")
    with pytest.raises(ValueError, match="judge_url"):
        compute_score("s", "a", "b", {"question": "q"})
