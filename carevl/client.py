"""HTTP clients for the judge service (sync and async, on httpx) with timeouts, retries and typed results.

    from carevl.client import JudgeClient
    with JudgeClient("http://127.0.0.1:8000", token="...") as judge:
        result = judge.judge("What is shown?", "a cat", "a dog", image=pil_image, mode="verdict")
        best = judge.rank("What is shown?", ["a cat", "a dog", "a bird"]).best_index

Retried: 502/503/504 answers (overload, replica restarts), connection errors and timeouts, with
exponential backoff (a server's Retry-After wins when longer). Any other error raises `JudgeAPIError`
at once with the server's status, error code, message and offending field.
"""
from __future__ import annotations

import asyncio
import random
import time
from typing import Any, TypeVar

import httpx
from PIL import Image
from pydantic import BaseModel

from carevl.data.images import encode_data_url
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
)

RETRY_STATUSES = frozenset({502, 503, 504})
RETRY_ERRORS = (httpx.TransportError,)  # connect/read/write errors and every timeout
T = TypeVar("T", bound=BaseModel)


class JudgeAPIError(RuntimeError):
    """A non-retryable answer (or the last retryable one) from the judge service."""

    def __init__(self, status: int, error: str, message: str, field: str | None = None):
        super().__init__(f"HTTP {status} {error}: {message}")
        self.status, self.error, self.message, self.field = status, error, message, field


def image_field(image: Image.Image | bytes | str | None) -> str | None:
    """The request's `image` value: PIL images and bytes become data URLs; strings pass as given."""
    if image is None or isinstance(image, str):
        return image
    return encode_data_url(image)


def _error_from(response: httpx.Response) -> JudgeAPIError:
    try:
        body = ErrorBody.model_validate(response.json())
        return JudgeAPIError(response.status_code, body.error, body.message, body.field)
    except ValueError:  # not JSON / not an ErrorBody (e.g. a proxy's plain-text page)
        return JudgeAPIError(response.status_code, "http_error", response.text[:500])


def _backoff(attempt: int, base_s: float, response: httpx.Response | None) -> float:
    delay = base_s * (2 ** attempt) * (0.5 + random.random())
    retry_after = response.headers.get("retry-after", "") if response is not None else ""
    return max(delay, float(retry_after)) if retry_after.replace(".", "", 1).isdigit() else delay


class _Base:
    def __init__(self, base_url: str, token: str | None, timeout_s: float, retries: int, backoff_s: float):
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff_s = retries, backoff_s
        self.timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _settle(self, response: httpx.Response | None, model: type[T], attempt: int) -> T | None:
        """The typed result, or None to try again; raises JudgeAPIError when the answer is final."""
        if response is None:  # a transport error that may still be retried
            return None
        if response.status_code < 400:
            return model.model_validate(response.json())
        if response.status_code in RETRY_STATUSES and attempt < self.retries:
            return None
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


class JudgeClient(_Base):
    """Blocking client; use as a context manager or call `close()`."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 120.0, retries: int = 3,
                 backoff_s: float = 0.25, transport: httpx.BaseTransport | None = None):
        super().__init__(base_url, token, timeout_s, retries, backoff_s)
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout,
                                  transport=transport)

    def _request(self, method: str, path: str, model: type[T], body: dict | None = None) -> T:
        for attempt in range(self.retries + 1):
            response = None
            try:
                response = self._http.request(method, path, json=body)
            except RETRY_ERRORS:
                if attempt == self.retries:
                    raise
            result = self._settle(response, model, attempt)
            if result is not None:
                return result
            time.sleep(_backoff(attempt, self.backoff_s, response))
        raise AssertionError("unreachable")

    def judge(self, question: str, response_a: str, response_b: str, image=None, mode: str | None = None,
              swap_check: bool = False) -> JudgeResult:
        body = self._judge_body(question, response_a, response_b, image, mode, swap_check)
        return self._request("POST", "/v1/judge", JudgeResult, body)

    def judge_batch(self, items: list[JudgeRequest | dict]) -> JudgeBatchResult:
        return self._request("POST", "/v1/judge/batch", JudgeBatchResult, self._batch_body(items))

    def rank(self, question: str, candidates: list[str], image=None, swap_check: bool = True) -> RankResult:
        return self._request("POST", "/v1/rank", RankResult, self._rank_body(question, candidates, image, swap_check))

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
        for attempt in range(self.retries + 1):
            response = None
            try:
                response = await self._http.request(method, path, json=body)
            except RETRY_ERRORS:
                if attempt == self.retries:
                    raise
            result = self._settle(response, model, attempt)
            if result is not None:
                return result
            await asyncio.sleep(_backoff(attempt, self.backoff_s, response))
        raise AssertionError("unreachable")

    async def judge(self, question: str, response_a: str, response_b: str, image=None, mode: str | None = None,
                    swap_check: bool = False) -> JudgeResult:
        body = self._judge_body(question, response_a, response_b, image, mode, swap_check)
        return await self._request("POST", "/v1/judge", JudgeResult, body)

    async def judge_batch(self, items: list[JudgeRequest | dict]) -> JudgeBatchResult:
        return await self._request("POST", "/v1/judge/batch", JudgeBatchResult, self._batch_body(items))

    async def rank(self, question: str, candidates: list[str], image=None, swap_check: bool = True) -> RankResult:
        body = self._rank_body(question, candidates, image, swap_check)
        return await self._request("POST", "/v1/rank", RankResult, body)

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
