"""A chat-completions server on 127.0.0.1 (uvicorn in a thread) whose behaviour is chosen by a marker in
the last user text; used by the endpoint backend tests and the curation pipeline test."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SECRET = "sk-test-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeProvider:
    """A chat-completions server whose behaviour is chosen by a marker in the last user text."""

    def __init__(self):
        self.calls: dict[str, int] = {}
        self.auth: list[str | None] = []
        self.bodies: list[dict] = []
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.handle)

    async def handle(self, request: Request):
        body = await request.json()
        self.bodies.append(body)
        self.auth.append(request.headers.get("authorization"))
        text = json.dumps(body["messages"][-1]["content"])
        mode = next((m for m in ("flaky", "bad_request", "always_500", "slow", "empty") if m in text), "ok")
        n = self.calls[text] = self.calls.get(text, 0) + 1
        if mode == "flaky" and n == 1:
            return JSONResponse({"error": "rate limited"}, status_code=429, headers={"retry-after": "0"})
        if mode == "flaky" and n == 2:
            return JSONResponse({"error": "boom"}, status_code=500)
        if mode == "bad_request":
            return JSONResponse({"error": "bad"}, status_code=400)
        if mode == "always_500":
            return JSONResponse({"error": "down"}, status_code=503)
        if mode == "slow" and n == 1:
            await asyncio.sleep(1.0)
        if mode == "empty":
            return JSONResponse({"choices": []})
        return JSONResponse({"choices": [{"message": {"role": "assistant",
                                                      "content": f"Verdict: A\nExplanation: call {n}"}}]})


def start_provider():
    """A real HTTP server on 127.0.0.1 (uvicorn in a thread) speaking the chat-completions API."""
    fake = FakeProvider()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    fake.endpoint = f"http://127.0.0.1:{port}/v1"
    fake.stop = lambda: (setattr(server, "should_exit", True), thread.join(timeout=10))
    return fake
