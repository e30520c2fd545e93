"""HTTP clients for the judge service (sync and async, on httpx) with timeouts, retries and typed results.

    from carevl.client import JudgeClient
    with JudgeClient("http://127.0.0.1:8000", token="...") as judge:
        result = judge.judge("What is shown?", "a cat", "a dog", image=pil_image, mode="verdict")
        best = judge.rank("What is shown?", ["a cat", "a dog", "a bird"]).best_index

Retried under the project's one HTTP retry policy (`carevl.http_retry`): overload and gateway answers
(429, 5xx: replica restarts, a full queue), connection errors and timeouts, with exponential backoff; a
server's Retry-After wins when longer, up to a cap. Any other error raises `JudgeAPIError` at once with
the server's status, error code, message and offending field; the last retryable one raises it too.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
from PIL import Image
from pydantic import BaseModel

from carevl.data.images import encode_data_url
from carevl.http_retry import RetryableStatus, async_retrying, check_status, retrying
from carevl.serving.schemas import (
    ErrorBody,
    Health,
    JudgeBatchRequest,
    JudgeBatchResult,
    JudgeRequest,
    JudgeResult,
    ModelInfo,
    RankRequest,
    RankResult,
    RewardPrompt,
    RewardRequest,
    RewardResult,
)

T = TypeVar("T", bound=BaseModel)


class JudgeAPIError(RuntimeError):
    """A non-retryable answer (or the last retryable one) from the judge service."""

    def __init__(self, status: int, error: str, message: str, field: str | None = None):
        super().__init__(f"HTTP {status} {error}: {message}")
        self.status, self.error, self.message, self.field = status, error, message, field


ImageValue = Image.Image | bytes | str | os.PathLike | dict | None


def image_field(image: ImageValue) -> str | None:
    """The request's `image` value from any form trainers and datasets hold an image in: a PIL image,
    encoded bytes, a local file (a Path, or a string naming a file that exists here) and a datasets
    `{"bytes", "path"}` dict become data URLs, read on this side; any other string (a data URL, bare
    base64, an http(s) URL or a path on the server) passes as given."""
    if image is None:
        return None
    if isinstance(image, dict):  # a datasets Image struct that was not decoded
        return image_field(image.get("bytes") or image.get("path"))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return encode_data_url(bytes(image))
    if isinstance(image, os.PathLike) or (isinstance(image, str) and _local_file(image)):
        return encode_data_url(Path(image).read_bytes())
    if isinstance(image, str):
        return image
    return encode_data_url(image)


def _local_file(text: str) -> bool:
    """A short string that is not a data URL and names an existing file (base64 never does)."""
    return len(text) < 4096 and not text[:5].lower() == "data:" and "://" not in text[:32] and os.path.isfile(text)


def _error_from(response: httpx.Response) -> JudgeAPIError:
    try:
        body = ErrorBody.model_validate(response.json())
        return JudgeAPIError(response.status_code, body.error, body.message, body.field)
    except ValueError:  # not JSON / not an ErrorBody (e.g. a proxy's plain-text page)
        return JudgeAPIError(response.status_code, "http_error", response.text[:500])


def _checked(result: RewardResult, prompts: list) -> RewardResult:
    """The server's rewards line up with the request's groups (never zip a short answer silently)."""
    sizes = [len(p.completions if isinstance(p, RewardPrompt) else p["completions"]) for p in prompts]
    if [len(r) for r in result.rewards] != sizes:
        raise JudgeAPIError(200, "bad_response", f"rewards of sizes {[len(r) for r in result.rewards]} for "
                                                 f"groups of sizes {sizes}")
    return result


def merge_rewards(results: list[RewardResult], per_request: int) -> RewardResult:
    """Results of consecutive requests of `per_request` prompts as one (failures re-indexed)."""
    failures = [f.model_copy(update={"prompt": f.prompt + n * per_request})
                for n, result in enumerate(results) for f in result.failures]
    return results[0].model_copy(update={
        "rewards": [r for result in results for r in result.rewards], "failures": failures,
        "comparisons": sum(r.comparisons for r in results), "latency_ms": max(r.latency_ms for r in results)})


class _Base:
    def __init__(self, base_url: str, token: str | None, timeout_s: float, retries: int, backoff_s: float):
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff_s = retries, backoff_s
        self.timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    @staticmethod
    def _settle(response: httpx.Response, model: type[T]) -> T:
        """The typed result of a final answer; raises JudgeAPIError for an error answer."""
        if response.status_code < 400:
            return model.model_validate(response.json())
        raise _error_from(response)

    @staticmethod
    def _judge_body(question: str, response_a: str, response_b: str, image, mode: str | None,
                    swap_check: bool) -> dict[str, Any]:
        return JudgeRequest(question=question, image=image_field(image), response_a=response_a,
                            response_b=response_b, mode=mode, swap_check=swap_check).model_dump(exclude_none=True)

    @staticmethod
    def _batch_body(items: list[JudgeRequest | dict]) -> dict[str, Any]:
        return JudgeBatchRequest(items=[JudgeRequest.model_validate(i) for i in items]).model_dump(exclude_none=True)

    @staticmethod
    def _rank_body(question: str, candidates: list[str], image, swap_check: bool) -> dict[str, Any]:
        return RankRequest(question=question, image=image_field(image), candidates=candidates,
                           swap_check=swap_check).model_dump(exclude_none=True)

    @staticmethod
    def _reward_body(prompts: list[RewardPrompt | dict], method: str | None) -> dict[str, Any]:
        return RewardRequest(prompts=[RewardPrompt.model_validate(p) for p in prompts],
                             method=method).model_dump(exclude_none=True)


class JudgeClient(_Base):
    """Blocking client; use as a context manager or call `close()`."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 120.0, retries: int = 3,
                 backoff_s: float = 0.25, transport: httpx.BaseTransport | None = None):
        super().__init__(base_url, token, timeout_s, retries, backoff_s)
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout,
                                  transport=transport)

    def _request(self, method: str, path: str, model: type[T], body: dict | None = None) -> T:
        try:
            for attempt in retrying(self.retries, self.backoff_s):
                with attempt:
                    response = check_status(self._http.request(method, path, json=body))
        except RetryableStatus as exc:  # still overloaded after the last retry
            response = exc.response
        return self._settle(response, model)

    def judge(self, question: str, response_a: str, response_b: str, image=None, mode: str | None = None,
              swap_check: bool = False) -> JudgeResult:
        body = self._judge_body(question, response_a, response_b, image, mode, swap_check)
        return self._request("POST", "/v1/judge", JudgeResult, body)

    def judge_batch(self, items: list[JudgeRequest | dict]) -> JudgeBatchResult:
        return self._request("POST", "/v1/judge/batch", JudgeBatchResult, self._batch_body(items))

    def rank(self, question: str, candidates: list[str], image=None, swap_check: bool = True) -> RankResult:
        return self._request("POST", "/v1/rank", RankResult, self._rank_body(question, candidates, image, swap_check))

    def reward(self, prompts: list[RewardPrompt | dict], method: str | None = None) -> RewardResult:
        """One reward per completion of each prompt's group (`image` fields already request values:
        see `image_field`); a null reward comes with its reason in `failures`."""
        return _checked(self._request("POST", "/v1/reward", RewardResult, self._reward_body(prompts, method)), prompts)

    def reward_many(self, prompts: list[RewardPrompt | dict], method: str | None = None, per_request: int = 32,
                    concurrency: int = 4) -> RewardResult:
        """Any number of prompts, in requests of at most `per_request` prompts (up to `concurrency` in
        flight on this client's connection pool), merged into one result indexed like `prompts`."""
        chunks = [prompts[s:s + per_request] for s in range(0, len(prompts), per_request)]
        if len(chunks) == 1:
            return self.reward(chunks[0], method)
        with ThreadPoolExecutor(min(concurrency, len(chunks)), thread_name_prefix="judge-reward") as pool:
            return merge_rewards(list(pool.map(lambda chunk: self.reward(chunk, method), chunks)), per_request)

    def model_info(self) -> ModelInfo:
        return self._request("GET", "/v1/model", ModelInfo)

    def health(self) -> Health:
        return self._request("GET", "/healthz", Health)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "JudgeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncJudgeClient(_Base):
    """asyncio client with the same methods as `JudgeClient` (awaitable)."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 120.0, retries: int = 3,
                 backoff_s: float = 0.25, transport: httpx.AsyncBaseTransport | None = None,
                 max_connections: int = 100):
        super().__init__(base_url, token, timeout_s, retries, backoff_s)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout,
                                       transport=transport, limits=limits)

    async def _request(self, method: str, path: str, model: type[T], body: dict | None = None) -> T:
        try:
            async for attempt in async_retrying(self.retries, self.backoff_s):
                with attempt:
                    response = check_status(await self._http.request(method, path, json=body))
        except RetryableStatus as exc:  # still overloaded after the last retry
            response = exc.response
        return self._settle(response, model)

    async def judge(self, question: str, response_a: str, response_b: str, image=None, mode: str | None = None,
                    swap_check: bool = False) -> JudgeResult:
        body = self._judge_body(question, response_a, response_b, image, mode, swap_check)
        return await self._request("POST", "/v1/judge", JudgeResult, body)

    async def judge_batch(self, items: list[JudgeRequest | dict]) -> JudgeBatchResult:
        return await self._request("POST", "/v1/judge/batch", JudgeBatchResult, self._batch_body(items))

    async def rank(self, question: str, candidates: list[str], image=None, swap_check: bool = True) -> RankResult:
        body = self._rank_body(question, candidates, image, swap_check)
        return await self._request("POST", "/v1/rank", RankResult, body)

    async def reward(self, prompts: list[RewardPrompt | dict], method: str | None = None) -> RewardResult:
        result = await self._request("POST", "/v1/reward", RewardResult, self._reward_body(prompts, method))
        return _checked(result, prompts)

    async def model_info(self) -> ModelInfo:
        return await self._request("GET", "/v1/model", ModelInfo)

    async def health(self) -> Health:
        return await self._request("GET", "/healthz", Health)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncJudgeClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
