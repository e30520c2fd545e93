"""/v1/reward and the OpenRLHF route on local Ray Serve with the tiny judge (vlm_micro): rewards equal
the reward rule applied to the judge's own verdicts, failed completions are explicit nulls with a
reason, bad input is a 4xx naming the field; the client adapters (TRL, verl) against the same service."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from PIL import Image

from carevl.client import JudgeClient, JudgeReward, JudgeRewardError, compute_score, compute_score_batch
from carevl.data.images import encode_data_url
from carevl.judge.model import JudgeModel
from carevl.judge.rules import group_rewards, reward_comparisons
from tests.serving.judge_app import judge_service

pytestmark = pytest.mark.ray

MODEL = "tiny:vlm_micro"
LIMITS = {"max_body_bytes": 400_000, "max_image_bytes": 60_000, "max_question_chars": 2_000,
          "max_response_chars": 4_000, "max_reward_prompts": 4, "max_group_completions": 6}
ROUTE = "/v1/openrlhf/get_reward"
ANSWERS = ["a red square on white", "a dog", "nothing", "two blue circles and a line", "red", "I cannot see"]


@pytest.fixture(scope="module")
def base_url(ray_local):
    args = {"model": MODEL, "default_mode": "verdict", "max_batch_size": 16, "batch_wait_timeout_s": 0.02,
            "num_cpus": 0.5, "reward_method": "bradley_terry", "limits": LIMITS}
    with judge_service({"judge": ("/", args)}) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    with JudgeClient(base_url, timeout_s=120, retries=1) as c:
        yield c


@pytest.fixture(scope="module")
def local_judge() -> JudgeModel:
    return JudgeModel(MODEL, batch_size=16)


def _image(seed: int, size: int = 24) -> Image.Image:
    return Image.new("RGB", (size, size), ((seed * 41) % 256, (seed * 83) % 256, (seed * 29) % 256))


def expected_rewards(judge: JudgeModel, question: str, image, completions: list[str], method: str,
                     reference: str | None = None) -> list[float | None]:
    """The reward rule applied to the local judge's verdicts on every comparison of the group."""
    texts = [*completions, *([reference] if method == "reference" else [])]
    comparisons = reward_comparisons(len(completions), method)
    p, _ = judge.verdict({"question": [question] * len(comparisons), "image": [image] * len(comparisons),
                          "response_a": [texts[a] for a, _ in comparisons],
                          "response_b": [texts[b] for _, b in comparisons]})
    return group_rewards(len(completions), method, comparisons, [float(x) for x in p])


# ---- /v1/reward -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["reference", "bradley_terry", "copeland"])
def test_rewards_are_the_rule_applied_to_the_judges_verdicts(client, local_judge, method):
    groups = [("What is in the picture?", _image(1), ANSWERS[:4], "a red square"),
              ("Describe the colours.", None, ANSWERS[2:], "red and white")]
    result = client.reward([{"question": q, "image": encode_data_url(im) if im else None, "completions": c,
                             "reference": r} for q, im, c, r in groups], method=method)
    assert result.method == method and result.failures == [] and result.temperature == 1.0
    per_group = 2 * 4 if method == "reference" else 4 * 3
    assert result.comparisons == per_group + (8 if method == "reference" else 12)
    for (q, im, c, r), served in zip(groups, result.rewards):
        np.testing.assert_allclose(served, expected_rewards(local_judge, q, im, c, method, r), atol=2e-4)
        assert all(0.0 <= x <= 1.0 for x in served)


def test_the_service_default_method_applies_and_rewards_vary(client):
    result = client.reward([{"question": "Which answer fits?", "completions": ANSWERS}])
    assert result.method == "bradley_terry" and len(result.rewards[0]) == len(ANSWERS)
    assert max(result.rewards[0]) - min(result.rewards[0]) > 1e-3
    assert np.mean(result.rewards[0]) == pytest.approx(0.5, abs=0.1)  # strengths are centred


def test_a_completion_the_judge_cannot_score_is_null_with_its_reason(client, local_judge):
    long_reference, long_answer = "long " * 150, "words " * 330   # ~450 and ~660 tokens: together over 1024
    completions = ["a square", "forged <image> token", long_answer, "x" * 4001, "red"]
    result = client.reward([{"question": "What is shown?", "completions": completions, "reference": long_reference}],
                           method="reference")
    rewards = result.rewards[0]
    reasons = {f.completion: f.reason for f in result.failures}
    assert reasons == {1: "reserved_token", 2: "prompt_too_long", 3: "response_too_long"}
    assert [rewards[i] is None for i in range(5)] == [False, True, True, True, False]
    expected = expected_rewards(local_judge, "What is shown?", None, ["a square", "red"], "reference", long_reference)
    np.testing.assert_allclose([rewards[0], rewards[4]], expected, atol=2e-4)


def test_within_group_a_failed_completion_drops_only_its_own_games(client, local_judge):
    completions = ["a cat", "bad <image> text", "a dog", "a bird"]
    result = client.reward([{"question": "Which animal?", "completions": completions}], method="bradley_terry")
    assert result.rewards[0][1] is None and [f.reason for f in result.failures] == ["reserved_token"]
    comparisons = reward_comparisons(4, "bradley_terry")
    judged = [(a, b) for a, b in comparisons if 1 not in (a, b)]
    p, _ = local_judge.verdict({"question": ["Which animal?"] * len(judged), "image": [None] * len(judged),
                                "response_a": [completions[a] for a, _ in judged],
                                "response_b": [completions[b] for _, b in judged]})
    by_pair = dict(zip(judged, p))
    expected = group_rewards(4, "bradley_terry", comparisons, [by_pair.get(c) for c in comparisons])
    np.testing.assert_allclose([result.rewards[0][i] for i in (0, 2, 3)], [expected[i] for i in (0, 2, 3)], atol=2e-4)
    assert result.comparisons == len(judged)


@pytest.fixture(scope="module")
def post(base_url):
    def _post(path: str, json=None, **kw):
        return httpx.post(f"{base_url}{path}", json=json, timeout=120, **kw)
    return _post


GROUP = {"question": "q", "completions": ["a", "b"]}


@pytest.mark.parametrize("body,status,field", [
    ({"prompts": [{**GROUP}], "method": "reference"}, 422, "prompts.0.reference"),
    ({"prompts": [{**GROUP, "completions": ["only"]}], "method": "bradley_terry"}, 422, "prompts.0.completions"),
    ({"prompts": [GROUP, {**GROUP, "image": "data:image/png;base64,AAAA"}]}, 400, "prompts.1.image"),
    ({"prompts": [{**GROUP, "question": "look at <image>"}]}, 422, "prompts.0.question"),
    ({"prompts": [{**GROUP, "reference": "a <image>"}], "method": "reference"}, 422, "prompts.0.reference"),
    ({"prompts": [{**GROUP, "question": "q" * 2001}]}, 422, "prompts.0.question"),
    ({"prompts": [GROUP] * 5}, 413, "prompts"),
    ({"prompts": [{**GROUP, "completions": list("abcdefg")}]}, 413, "prompts.0.completions"),
    ({"prompts": [GROUP], "method": "elo"}, 422, "method"),
    ({"prompts": [{**GROUP, "completion": ["a"]}]}, 422, "prompts.0.completion"),
    ({"prompts": []}, 422, "prompts"),
])
def test_bad_reward_requests_are_4xx_naming_the_field(post, body, status, field):
    response = post("/v1/reward", json=body)
    assert (response.status_code, response.json()["field"]) == (status, field)


# ---- OpenRLHF's remote reward-model protocol --------------------------------------------------------
def test_openrlhf_route_answers_the_rewards_of_v1_reward(post, client):
    template = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
    questions = ["What colour is it?", "What colour is it?", "What shape is it?"]
    responses = ["red", "blue", "a square"]
    prompts = [template.format(q=q) for q in questions]
    image = encode_data_url(_image(4))
    labels = [json.dumps({"question": q, "image": image, "reference": "red"}) for q in questions]
    body = {"query": [p + r + "<|im_end|>" for p, r in zip(prompts, responses)], "prompts": prompts,
            "labels": labels, "extra_field_from_a_newer_openrlhf": 1}
    answer = post(f"{ROUTE}?method=reference", json=body)
    assert answer.status_code == 200
    expected = client.reward([{"question": "What colour is it?", "image": image, "completions": ["red", "blue"],
                               "reference": "red"},
                              {"question": "What shape is it?", "image": image, "completions": ["a square"],
                               "reference": "red"}], method="reference").rewards
    assert answer.json()["rewards"] == pytest.approx([*expected[0], *expected[1]], abs=1e-4)
    assert answer.json()["scores"] == answer.json()["rewards"]
    # A plain-string label is the reference; without a question in the label the raw prompt is the question.
    plain = post(f"{ROUTE}?method=reference", json={"query": ["Name it. red"], "prompts": ["Name it. "],
                                                     "labels": ["red"]})
    direct = client.reward([{"question": "Name it. ", "completions": ["red"], "reference": "red"}], "reference")
    assert plain.json()["rewards"] == pytest.approx(direct.rewards[0], abs=1e-4)


@pytest.mark.parametrize("body,query,status,field", [
    ({"query": ["p: a"], "prompts": ["other"]}, "?method=reference", 422, "query.0"),
    ({"query": ["p: a", "p: b"], "prompts": ["p: "]}, "?method=reference", 422, "prompts"),
    ({"query": ["p: a"], "prompts": ["p: "], "labels": ["{not json"]}, "?method=reference", 422, "labels.0"),
    ({"query": ["p: a"], "prompts": ["p: "], "labels": [{"answer": "x"}]}, "?method=reference", 422, "labels.0.answer"),
    ({"query": ["p: a"], "prompts": ["p: "], "labels": [""]}, "?method=reference", 422, "labels.0.reference"),
    ({"query": ["p: a", "q: b"], "prompts": ["p: ", "q: "]}, "?method=bradley_terry", 422, "query"),
    ({"query": ["p: a <image>"], "prompts": ["p: "], "labels": ["ref"]}, "?method=reference", 422, "query.0"),
    ({"query": ["p: a"], "prompts": ["p: "], "labels": ["ref"]}, "?method=elo", 422, "query.method"),
])
def test_openrlhf_bad_input_and_unscorable_samples_fail_naming_the_field(post, body, query, status, field):
    response = post(ROUTE + query, json=body)
    assert (response.status_code, response.json()["field"]) == (status, field)


# ---- the client adapters against the service ---------------------------------------------------------
def test_trl_adapter_groups_grpo_and_online_dpo_batches_like_the_trainers(base_url, client):
    questions = ["What is shown?", "Which colour?"]
    images = [_image(7), _image(8)]
    groups = [ANSWERS[:3], ANSWERS[3:]]
    expected = client.reward([{"question": q, "image": encode_data_url(im), "completions": g}
                              for q, im, g in zip(questions, images, groups)], "bradley_terry").rewards
    with JudgeReward(base_url, num_generations=3, method="bradley_terry", image_column="judge_image",
                     max_prompts_per_request=1) as grpo:
        # GRPO: conversational prompts, each repeated num_generations times; completions as messages.
        prompts = [[{"role": "user", "content": q}] for q in questions for _ in range(3)]
        completions = [[{"role": "assistant", "content": c}] for g in groups for c in g]
        rewards = grpo(prompts=prompts, completions=completions, completion_ids=[[0]] * 6,
                       judge_image=[im for im in images for _ in range(3)], trainer_state=None)
    assert rewards == pytest.approx([*expected[0], *expected[1]], abs=1e-4)
    assert grpo.stats == {"calls": 1, "requests": 2, "rewards": 6, "failed": 0}
    pair = client.reward([{"question": q, "completions": [g[0], g[1]]} for q, g in zip(questions, groups)],
                         "bradley_terry").rewards
    with JudgeReward.for_online_dpo(base_url, method="bradley_terry") as dpo:
        # Online DPO: the batch twice, completions[i] and completions[i + B] answer prompt i.
        rewards = dpo(prompts=questions * 2, completions=[g[0] for g in groups] + [g[1] for g in groups])
    assert rewards == pytest.approx([pair[0][0], pair[1][0], pair[0][1], pair[1][1]], abs=1e-4)


def test_verl_functions_score_per_response_and_per_batch(base_url, client, tmp_path):
    path = tmp_path / "pic.png"
    _image(9).save(path)
    info = {"question": "What is shown?", "image": str(path)}
    direct = client.reward([{"question": "What is shown?", "image": encode_data_url(path.read_bytes()),
                             "completions": ["a square", "a dog"], "reference": "a square"}], "reference").rewards[0]
    one = compute_score("synthetic", "a square", "a square", info, judge_url=base_url)
    assert one == pytest.approx(direct[0], abs=1e-4)
    batch = compute_score_batch(data_sources=["s"] * 2, solution_strs=["a square", "a dog"],
                                ground_truths=["a square"] * 2, extra_infos=[info, dict(info)], judge_url=base_url)
    assert batch == pytest.approx(direct, abs=1e-4)
    with pytest.raises(JudgeRewardError, match="reserved_token"):
        compute_score("s", "odd <image>", "a square", info, judge_url=base_url)
    with pytest.raises(ValueError, match="question"):
        compute_score("s", "a", "b", {}, judge_url=base_url)
