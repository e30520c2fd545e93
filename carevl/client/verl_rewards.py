"""The judge service as verl's custom reward function (`custom_reward_function.path` / `.name`).

verl calls `compute_score(data_source, solution_str, ground_truth, extra_info)` once per response
(its `naive` reward manager) and `compute_score(data_sources=, solution_strs=, ground_truths=,
extra_infos=)` once per batch (its `batch` manager), each time merging the config's
`custom_reward_function.reward_kwargs` into the keyword arguments; that is how `judge_url` (and
`token`, `method`, ...) arrive:

    custom_reward_function:
      path: <site-packages>/carevl/client/verl_rewards.py
      name: compute_score_batch     # with reward_manager.name=batch (older verl: reward_model.reward_manager)
      reward_kwargs: {judge_url: "http://judge:8000", method: bradley_terry}

What the judge needs beyond the response travels in the dataset row: `extra_info["question"]` (the
question, as text) and optionally `extra_info["image"]` (PIL image, bytes, a file path, a datasets
`{"bytes", "path"}` dict or a data URL); `ground_truth` is the reference answer. Per response only
method "reference" applies (a group of one); the batch function groups the responses that share
question, image and ground truth, so within-group methods see each prompt's n rollouts together.

verl writes the score into a tensor and cannot skip a missing one, so a response the judge could not
score raises `JudgeRewardError` with the reason instead of returning a made-up number. The client of
each judge URL is kept open across calls (verl gives a plain function no object to hold it).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

from carevl.client.http import JudgeClient, image_field


class JudgeRewardError(RuntimeError):
    """A response the judge gave no reward (its reason and message)."""


@lru_cache(maxsize=8)
def judge_client(judge_url: str, token: str | None = None, timeout_s: float = 300.0, retries: int = 3) -> JudgeClient:
    """One client, and so one connection pool, per judge URL for the life of the process."""
    return JudgeClient(judge_url, token=token, timeout_s=timeout_s, retries=retries)


def _required(extra_info: dict | None, n: int | None = None) -> str:
    where = "extra_info" if n is None else f"extra_infos[{n}]"
    if not isinstance(extra_info, dict) or not extra_info.get("question"):
        raise ValueError(f"{where} must carry the question as 'question' (the judge compares answers to it)")
    return str(extra_info["question"])


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, *,
                  judge_url: str | None = None, token: str | None = None, method: str = "reference",
                  timeout_s: float = 300.0, **kwargs: Any) -> float:
    """P(this response beats the reference `ground_truth`), judged in both orders (verl's per-response
    signature; `data_source` is not used)."""
    if method != "reference":
        raise ValueError(f"method '{method}' compares a prompt's responses with each other; verl's per-response "
                         "call holds one: use compute_score_batch with reward_manager.name=batch")
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], judge_url=judge_url,
                               token=token, method=method, timeout_s=timeout_s)[0]


def compute_score_batch(data_sources: Sequence[str], solution_strs: Sequence[str], ground_truths: Sequence[Any],
                        extra_infos: Sequence[dict | None], *, judge_url: str | None = None, token: str | None = None,
                        method: str | None = None, timeout_s: float = 300.0, per_request: int = 32,
                        **kwargs: Any) -> list[float]:
    """One reward per response (verl's batch signature), the responses grouped by prompt."""
    if not judge_url:
        raise ValueError("set custom_reward_function.reward_kwargs.judge_url to the judge service's URL")
    keys, bodies, members = {}, [], []
    images: dict[int, str | None] = {}  # verl repeats one object per rollout: encode it once
    for n, (response, truth, info) in enumerate(zip(solution_strs, ground_truths, extra_infos)):
        question = _required(info, n)
        raw = info.get("image")
        if id(raw) not in images:
            images[id(raw)] = image_field(raw)
        reference = None if truth is None else str(truth)
        key = (question, images[id(raw)], reference)
        if key not in keys:
            keys[key] = len(bodies)
            bodies.append({"question": question, "image": images[id(raw)], "reference": reference, "completions": []})
            members.append([])
        bodies[keys[key]]["completions"].append(response)
        members[keys[key]].append(n)
    result = judge_client(judge_url, token, timeout_s).reward_many(bodies, method, per_request)
    for failure in result.failures:
        n = members[failure.prompt][failure.completion]
        raise JudgeRewardError(f"response {n}: {failure.reason}: {failure.message}")
    scores = [0.0] * len(solution_strs)
    for group, rewards in zip(members, result.rewards):
        for n, reward in zip(group, rewards):
            scores[n] = float(reward)
    return scores
