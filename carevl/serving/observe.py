"""Request metrics of the judge API: every answer counted by route and HTTP status (`carevl.metrics`).

An outermost ASGI middleware, so the answers of the other middlewares (413 for an oversize body) and of
the error handlers are counted too. Unknown paths count as `other`, which keeps the tag set bounded.
"""
from __future__ import annotations

from carevl.metrics import record_judge_request

ROUTES = frozenset({"/v1/judge", "/v1/judge/batch", "/v1/rank", "/v1/reward", "/v1/openrlhf/get_reward",
                    "/v1/model", "/healthz"})


class RequestMetrics:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        status = {"code": 500}  # an exception that escapes the app is answered 500 by the server

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            record_judge_request(route, status["code"])
