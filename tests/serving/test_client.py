"""Client retry and error handling against a scripted transport (the real server is in test_service)."""
from __future__ import annotations

import asyncio

import httpx
import pytest
from PIL import Image

from carevl.client import AsyncJudgeClient, JudgeAPIError, JudgeClient, image_field

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
