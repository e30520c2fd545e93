"""The one retry policy of every outbound HTTP call: the endpoint generation backend (strong judge,
captions, candidates, critics on an OpenAI-compatible API), `carevl.client` and remote image fetches.

Retried: connection errors, timeouts and the statuses in RETRY_STATUSES (rate limits, overload, gateway
errors). The wait before retry n (n = 1, 2, ...) is `backoff_s * 2**(n-1)` with jitter, or the server's
Retry-After when that is longer, and never more than MAX_WAIT_S whatever the server asks: a huge
Retry-After (or an HTTP date far ahead) cannot park a job. After `max_retries` retries the last error
is raised to the caller. Built on tenacity.
"""
from __future__ import annotations

import email.utils
import time
from datetime import timezone
from typing import Any, Callable

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_WAIT_S = 60.0


class RetryableStatus(Exception):
    """An answer whose status says "try again later"; carries the response (for Retry-After)."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def check_status(response: httpx.Response) -> httpx.Response:
    """Raise RetryableStatus for a retryable status; any other response is returned as it is."""
    if response.status_code in RETRY_STATUSES:
        raise RetryableStatus(response)
    return response


def retry_after_s(response: httpx.Response | None, now: float | None = None) -> float | None:
    """The server's Retry-After in seconds (delta-seconds or an HTTP date), capped to [0, MAX_WAIT_S];
    None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip() if response is not None else ""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_WAIT_S)


def _wait(backoff_s: float) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(initial=backoff_s, exp_base=2, jitter=backoff_s, max=MAX_WAIT_S)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        asked = retry_after_s(exc.response) if isinstance(exc, RetryableStatus) else None
        return min(MAX_WAIT_S, max(backoff(state), asked or 0.0))
    return wait


def _policy(max_retries: int, backoff_s: float, on_retry: Callable[[RetryCallState], None] | None) -> dict:
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    kwargs: dict[str, Any] = dict(stop=stop_after_attempt(max_retries + 1), wait=_wait(backoff_s), reraise=True,
                                  retry=retry_if_exception_type((httpx.TransportError, RetryableStatus)))
    if on_retry is not None:
        kwargs["before_sleep"] = on_retry
    return kwargs


def retrying(max_retries: int, backoff_s: float, on_retry: Callable[[RetryCallState], None] | None = None,
             ) -> Retrying:
    """Iterate `for attempt in retrying(...): with attempt: check_status(client.get(...))`."""
    return Retrying(**_policy(max_retries, backoff_s, on_retry))


def async_retrying(max_retries: int, backoff_s: float,
                   on_retry: Callable[[RetryCallState], None] | None = None) -> AsyncRetrying:
    """The same policy for asyncio code: `async for attempt in async_retrying(...): with attempt: ...`."""
    return AsyncRetrying(**_policy(max_retries, backoff_s, on_retry))


def describe(state: RetryCallState) -> str:
    """What failed in the attempt just made (for a log line): exception type or HTTP status."""
    exc = state.outcome.exception() if state.outcome is not None else None
    return str(exc) if isinstance(exc, RetryableStatus) else type(exc).__name__
