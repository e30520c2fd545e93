"""A request body that stops arriving part-way (the connection, or the Serve proxy holding the stream,
went away) is answered 503 with Retry-After, so the client's retry policy sends it again; a body that
arrived but does not decode stays the caller's 400."""
from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from carevl.http_retry import RETRY_STATUSES
from carevl.serving.http import _install_error_handlers


class Pair(BaseModel):
    question: str


def _app() -> FastAPI:
    app = FastAPI()
    _install_error_handlers(app)

    @app.post("/v1/judge")
    async def judge(pair: Pair):
        return {"question": pair.question}
    return app


def _call(app: FastAPI, chunks: list) -> tuple[int, dict, dict]:
    """Send `chunks` as the ASGI body messages (an exception instance is raised by `receive` instead)."""
    scope = {"type": "http", "method": "POST", "path": "/v1/judge", "raw_path": b"/v1/judge", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1), "root_path": ""}
    pending = list(chunks)
    sent: list[dict] = []

    async def receive():
        item = pending.pop(0) if pending else {"type": "http.disconnect"}
        if isinstance(item, BaseException):
            raise item
        return item

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(body)


@pytest.mark.parametrize("failure", [RuntimeError("the proxy actor died"), {"type": "http.disconnect"}])
def test_a_body_cut_short_is_retryable(failure):
    status, headers, body = _call(_app(), [{"type": "http.request", "body": b'{"question": "wh', "more_body": True},
                                           failure])
    assert status == 503 and status in RETRY_STATUSES
    assert body["error"] == "body_not_received" and headers["retry-after"] == "1"


def test_a_whole_body_that_does_not_decode_is_the_callers_400():
    status, _, body = _call(_app(), [{"type": "http.request", "body": b'{"question": "\xff\xfe"}', "more_body": False}])
    assert status in (400, 422) and status not in RETRY_STATUSES
    status, _, body = _call(_app(), [{"type": "http.request", "body": b'{"question": "ok"}', "more_body": False}])
    assert status == 200 and body == {"question": "ok"}
