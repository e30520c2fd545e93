"""Judge requests sent to the running judge service (POST /v1/judge) through `carevl.client`.

Each order of each item is its own request (swap_check off), so the service's answers carry the raw
per-order verdicts the bias report needs; the evaluation does its own swap/tie logic.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Iterator

from carevl.client import AsyncJudgeClient, JudgeAPIError
from carevl.config import CarevlConfig
from carevl.evaluation.backends import judge_answer
from carevl.evaluation.loaders import image_as_data_url

log = logging.getLogger(__name__)


def _api_token(config: CarevlConfig) -> str | None:
    """The bearer token, from the environment variable the serve config names (None: no auth)."""
    name = config.serve.api_token_env
    return os.environ.get(name) if name else None


async def _judge_one(client: AsyncJudgeClient, gate: asyncio.Semaphore, request: dict[str, Any],
                     mode: str) -> dict[str, Any]:
    async with gate:
        try:
            image = image_as_data_url(request)
        except OSError as exc:
            return {"key": request["key"], "verdict": None, "p_a": None, "status": "image_unreadable",
                    "text": str(exc)}
        try:
            result = await client.judge(request["question"], request["response_a"], request["response_b"],
                                        image=image, mode=mode, swap_check=False)
        except JudgeAPIError as exc:  # a 4xx for this pair (image, size, prompt): scored wrong, reason kept
            return {"key": request["key"], "verdict": None, "p_a": None,
                    "status": f"http_{exc.status}_{exc.error}", "text": exc.message}
    answer = judge_answer(mode, result.p_a, result.winner, result.judgement, "ok")
    return {"key": request["key"], **answer}


async def _judge_chunk(config: CarevlConfig, url: str, mode: str, chunk: list[dict[str, Any]]) -> list[dict]:
    ev = config.evaluation
    gate = asyncio.Semaphore(ev.client_concurrency)
    async with AsyncJudgeClient(url, token=_api_token(config), timeout_s=ev.client_timeout_s,
                                max_connections=ev.client_concurrency) as client:
        return list(await asyncio.gather(*(_judge_one(client, gate, r, mode) for r in chunk)))


def service_judge(config: CarevlConfig, url: str, mode: str, requests: list[dict[str, Any]],
                  ) -> Iterator[list[dict[str, Any]]]:
    """Yield answers chunk by chunk (a few times the client concurrency), so progress is stored as it
    comes. Transport failures after the client's retries propagate: re-running resumes."""
    step = 4 * config.evaluation.client_concurrency
    for start in range(0, len(requests), step):
        yield asyncio.run(_judge_chunk(config, url, mode, requests[start:start + step]))
