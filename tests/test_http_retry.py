"""The one HTTP retry policy: which answers are retried, the Retry-After rule and its cap, and that the
service client and the endpoint backend both follow it."""
from __future__ import annotations

import email.utils

import httpx
import pytest

from carevl import http_retry
from carevl.client import JudgeAPIError, JudgeClient
from carevl.http_retry import MAX_WAIT_S, RetryableStatus, check_status, retry_after_s, retrying

RESULT = {"winner": "A", "p_a": 0.8, "mode": "verdict", "model": "m", "latency_ms": 1.0}


def _response(status: int, retry_after: str | None = None) -> httpx.Response:
    return httpx.Response(status, headers={"retry-after": retry_after} if retry_after is not None else {})


def test_retry_after_is_read_as_seconds_or_a_date_and_capped():
    assert retry_after_s(_response(429, "2.5")) == 2.5
    assert retry_after_s(_response(429, "86400")) == MAX_WAIT_S          # a day: capped
    assert retry_after_s(_response(429, "-3")) == 0.0
    assert retry_after_s(_response(429, "soon")) is None and retry_after_s(_response(429)) is None
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert retry_after_s(_response(503, date), now=1_000_000.0) == pytest.approx(30.0)
    far = email.utils.formatdate(1_000_000.0 + 7200, usegmt=True)
    assert retry_after_s(_response(503, far), now=1_000_000.0) == MAX_WAIT_S


def test_only_transient_statuses_are_retryable():
    for status in (408, 429, 500, 502, 503, 504):
        with pytest.raises(RetryableStatus):
            check_status(_response(status))
    for status in (200, 400, 401, 404, 413, 422):
        assert check_status(_response(status)).status_code == status


def test_waits_follow_backoff_or_a_longer_retry_after_never_past_the_cap():
    waits = []
    answers = iter([_response(429, "3"), _response(503, "100000"), _response(503), httpx.Response(200)])
    policy = retrying(max_retries=3, backoff_s=0.01)
    policy.sleep = waits.append
    for attempt in policy:
        with attempt:
            check_status(next(answers))
    assert len(waits) == 3
    assert waits[0] == 3.0                       # the server asked for longer than the backoff
    assert waits[1] == MAX_WAIT_S                # a huge Retry-After is capped
    assert 0.04 <= waits[2] <= 0.05              # plain backoff: 0.01 * 2**2 + jitter <= 0.01


def test_the_service_client_caps_a_huge_retry_after(monkeypatch):
    """The client used to sleep for whatever Retry-After said; now the one policy caps it."""
    slept = []
    monkeypatch.setattr(http_retry, "MAX_WAIT_S", 0.05)
    original = http_retry.Retrying.__init__

    def record_sleep(self, *args, **kwargs):
        original(self, *args, sleep=lambda s: slept.append(s) or None, **kwargs)
    monkeypatch.setattr(http_retry.Retrying, "__init__", record_sleep)
    answers = iter([httpx.Response(503, headers={"retry-after": "3600"}), httpx.Response(200, json=RESULT)])
    with JudgeClient("http://judge", retries=2, backoff_s=0.001,
                     transport=httpx.MockTransport(lambda request: next(answers))) as client:
        assert client.judge("q", "a", "b").winner == "A"
    assert slept == [0.05]


def test_the_client_raises_the_last_overload_answer_as_an_api_error():
    answers = iter([httpx.Response(429, json={"error": "busy", "message": "queue full"})] * 2)
    with JudgeClient("http://judge", retries=1, backoff_s=0.001,
                     transport=httpx.MockTransport(lambda request: next(answers))) as client:
        with pytest.raises(JudgeAPIError) as err:
            client.health()
    assert err.value.status == 429 and err.value.error == "busy"
