"""Chat completions from any OpenAI-compatible endpoint, through httpx.

Requests run concurrently (bounded by a semaphore), are retried under the project's one HTTP retry
policy (`carevl.http_retry`: 429 / 5xx / timeouts / connection errors, exponential backoff, Retry-After
honoured up to a cap), and successful answers are cached on disk under
a hash of the request, so a re-run does not pay twice. The API key is read from the environment variable
the model spec names, sent only in the Authorization header, and never logged or cached.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from carevl.config import ModelSpec
from carevl.data.images import encode_data_url
from carevl.http_retry import RetryableStatus, async_retrying, check_status, describe
from carevl.models.templates import continuation_kwargs, continues_reply, with_image_parts

log = logging.getLogger(__name__)



@dataclass
class ChatResult:
    """One request's outcome: `text` on success, else `error` (never both)."""

    text: str | None
    error: str | None = None
    cached: bool = False
    attempts: int = 0


def openai_messages(messages: list[dict], image: Image.Image | bytes | None) -> list[dict]:
    """transformers-style chat messages -> OpenAI format, the `{"type": "image"}` part as a data URL."""
    return with_image_parts(messages, image,
                            lambda img: {"type": "image_url", "image_url": {"url": encode_data_url(img)}})


class RequestCache:
    """Answers on disk, one JSON file per request hash (two-level folders keep directories small)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    @staticmethod
    def key(url: str, body: dict[str, Any]) -> str:
        blob = json.dumps({"url": url, "body": body}, sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        try:
            return json.loads(self._path(key).read_text())["text"]
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def put(self, key: str, text: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps({"text": text}))
        tmp.replace(path)


class OpenAIChatClient:
    """Async chat-completions client with bounded concurrency, retries and an on-disk cache."""

    def __init__(self, endpoint: str, api_key: str | None, *, cache: RequestCache | None, max_concurrency: int,
                 max_retries: int, timeout_s: float, backoff_s: float):
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.cache = cache
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.timeout_s, self.backoff_s = timeout_s, backoff_s

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChatClient(url={self.url!r}, max_concurrency={self.max_concurrency})"

    def complete(self, bodies: list[dict[str, Any]]) -> list[ChatResult]:
        """Send every request body (concurrently), in order; blocks until all are done."""
        return asyncio.run(self._complete_all(bodies))

    async def _complete_all(self, bodies: list[dict[str, Any]]) -> list[ChatResult]:
        limit = asyncio.Semaphore(self.max_concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self._headers) as client:
            async def one(body):
                async with limit:
                    return await self._complete_one(client, body)
            return list(await asyncio.gather(*(one(b) for b in bodies)))

    async def _complete_one(self, client: httpx.AsyncClient, body: dict[str, Any]) -> ChatResult:
        key = RequestCache.key(self.url, body) if self.cache else None
        if key and (hit := self.cache.get(key)) is not None:
            return ChatResult(hit, cached=True)
        attempts = 0
        try:
            async for attempt in async_retrying(self.max_retries, self.backoff_s, self._log_retry):
                with attempt:
                    attempts += 1
                    response = check_status(await client.post(self.url, json=body))
        except (RetryableStatus, httpx.TransportError) as exc:
            return ChatResult(None, f"{str(exc) if isinstance(exc, RetryableStatus) else type(exc).__name__} "
                                    f"after {attempts} attempts", attempts=attempts)
        if response.status_code != 200:
            return ChatResult(None, f"HTTP {response.status_code}", attempts=attempts)
        text = _message_text(response)
        if text is None:
            return ChatResult(None, "response without choices[0].message.content", attempts=attempts)
        if key:
            self.cache.put(key, text)
        return ChatResult(text, attempts=attempts)

    def _log_retry(self, state) -> None:
        log.warning("chat request failed (%s), retry %d/%d in %.2fs", describe(state), state.attempt_number,
                    self.max_retries, state.upcoming_sleep)


def _message_text(response: httpx.Response) -> str | None:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


class OpenAIGenerator:
    """The generation interface of `carevl.models.backends.transformers.VLMGenerator`, served by an HTTP endpoint.

    A request that still fails after all retries yields None in place of its texts; `last_results`
    keeps the per-request outcomes (errors, cache hits) of the latest call.
    """

    def __init__(self, spec: ModelSpec, request_cache: str | Path | None, *, max_concurrency: int = 16,
                 max_retries: int = 6, timeout_s: float = 120.0, backoff_s: float = 1.0):
        if not spec.endpoint:
            raise ValueError(f"model '{spec.path}' has no endpoint")
        api_key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        if spec.api_key_env and not api_key:
            raise ValueError(f"environment variable {spec.api_key_env} (api_key_env of '{spec.path}') is not set")
        self.spec = spec
        self.client = OpenAIChatClient(spec.endpoint, api_key, cache=RequestCache(request_cache) if request_cache
                                       else None, max_concurrency=max_concurrency, max_retries=max_retries,
                                       timeout_s=timeout_s, backoff_s=backoff_s)
        self.last_results: list[ChatResult] = []

    def generate(self, messages: list[list[dict]], images: list[Image.Image | bytes | None], temperature: float,
                 max_new_tokens: int, num_samples: int = 1, seed: int | None = None) -> list[list[str] | None]:
        if num_samples != 1:
            raise ValueError("the endpoint backend samples one answer per request (num_samples=1)")
        bodies = []
        for conversation, image in zip(messages, images, strict=True):
            body = {"model": self.spec.path, "messages": openai_messages(conversation, image),
                    "temperature": temperature, "max_tokens": max_new_tokens, "top_p": self.spec.generation.top_p}
            if seed is not None:
                body["seed"] = seed
            if continues_reply(conversation):
                # vLLM's OpenAI-compatible server continues the trailing assistant message with these.
                body.update(continuation_kwargs(conversation))
            bodies.append(body)
        self.last_results = self.client.complete(bodies)
        return [[r.text] if r.text is not None else None for r in self.last_results]
