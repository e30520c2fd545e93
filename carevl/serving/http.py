"""The judge's HTTP API (FastAPI), built per replica around a `PairwiseJudging`.

Error contract (never a 500 for a client's mistake): malformed JSON or fields -> 422 naming the field;
an undecodable or disallowed image -> 400; a body, image, batch or prompt over its limit -> 413;
a missing or wrong bearer token -> 401; a body that did not arrive in full -> 503 with Retry-After (sent
again, it is served). Overload (503) is answered by Ray Serve's proxy before the request reaches this app
(`max_queued_requests`). Every error body is an `ErrorBody`.
"""
from __future__ import annotations

import asyncio
import hmac

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from carevl.data.images import ImageError
from carevl.judge.prompts import IMAGE_NOT_SUPPORTED, PromptTooLong, ReservedToken
from carevl.judge_format import VERDICT_PREFIX
from carevl.judge.rules import RewardMethod
from carevl.serving import openrlhf
from carevl.serving.engine import PairwiseJudging
from carevl.serving.inputs import decode_request_image, image_error_status
from carevl.serving.observe import RequestMetrics
from carevl.serving.rewards import GroupOutcome, RewardGroup, judge_groups, screen_group
from carevl.serving.schemas import (
    ErrorBody,
    FieldLimitError,
    Health,
    JudgeBatchRequest,
    JudgeBatchResult,
    JudgeRequest,
    JudgeResult,
    ModelInfo,
    RankRequest,
    RankResult,
    RewardFailure,
    RewardPrompt,
    RewardRequest,
    RewardResult,
    check_batch_limits,
    check_judge_limits,
    check_rank_limits,
    check_reward_limits,
)


class FieldError(Exception):
    """A client error tied to one request field, answered with `status`."""

    def __init__(self, status: int, error: str, field: str, message: str):
        super().__init__(message)
        self.status, self.error, self.field, self.message = status, error, field, message


class AuthError(Exception):
    pass


def _error(status: int, error: str, message: str, field: str | None = None, detail=None,
           headers: dict | None = None) -> JSONResponse:
    body = ErrorBody(error=error, message=message, field=field, detail=detail)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body streams in; an HTTPException so FastAPI passes it through unchanged."""

    def __init__(self, max_bytes: int):
        super().__init__(status_code=413, detail=f"request body over the limit of {max_bytes} bytes")


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: at once when the declared Content-Length is too big, else as
    soon as the streamed bytes pass the limit. (FastAPI's own `max_body_size` answers a declared
    oversize body in plain text; this keeps every error an `ErrorBody`.)"""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = _error(413, "body_too_large", f"request body of {int(declared)} bytes is over the "
                                                     f"limit of {self.max_bytes}", field="body")
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


def _field_of(error: dict) -> str:
    if error["type"] == "json_invalid":  # loc holds a character offset, not a field
        return "body"
    parts = [str(p) for p in error["loc"] if p != "body"]
    return ".".join(parts) or "body"


def _body_not_received(exc: StarletteHTTPException) -> bool:
    """FastAPI answers 400 to any failure while it reads the body. Bytes that arrived but do not decode
    are the caller's mistake (a ValueError); a body that never arrived in full is not: the connection
    dropped, or the Serve proxy holding the stream went away (a node drained for preemption)."""
    return exc.__cause__ is not None and not isinstance(exc.__cause__, ValueError)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        errors = [{"field": _field_of(e), "message": e["msg"], "type": e["type"]} for e in exc.errors()]
        fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return _error(422, "invalid_request", f"invalid field(s): {fields}: {first['message']}",
                      field=first["field"], detail=errors)

    @app.exception_handler(FieldLimitError)
    async def _limit(_: Request, exc: FieldLimitError):
        return _error(exc.status, "too_large" if exc.status == 413 else "invalid_request", str(exc),
                      field=exc.field)

    @app.exception_handler(FieldError)
    async def _field(_: Request, exc: FieldError):
        return _error(exc.status, exc.error, f"{exc.field}: {exc.message}", field=exc.field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        # BodyTooLarge (a streamed body over the limit), or 404/405 for unknown routes and methods.
        if exc.status_code == 413:
            return _error(413, "body_too_large", str(exc.detail), field="body")
        if exc.status_code == 400 and _body_not_received(exc):
            return _error(503, "body_not_received", "the request body did not arrive in full (the connection, "
                          "or the node carrying it, went away); send it again", headers={"Retry-After": "1"})
        return _error(exc.status_code, "http_error", str(exc.detail), headers=exc.headers)

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError):
        return _error(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})


def _auth_dependency(token: str | None):
    async def check(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise AuthError("missing bearer token (Authorization: Bearer <token>)")
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise AuthError("wrong bearer token")
    return check


class _Inputs:
    """Request checks that need the config and the model: limits, image decoding, prompt length."""

    def __init__(self, engine: PairwiseJudging):
        self.engine, self.settings = engine, engine.settings

    async def image(self, value: str | None, field: str) -> Image.Image | None:
        try:
            image = await asyncio.to_thread(decode_request_image, value, self.settings.limits,
                                            self.settings.allow_remote_images)
        except ImageError as exc:
            raise FieldError(image_error_status(exc), exc.reason, field, str(exc)) from None
        if image is not None and not self.engine.model.accepts_images:
            raise FieldError(400, IMAGE_NOT_SUPPORTED, field, f"the judge '{self.engine.model.name}' is "
                                                              "text-only and takes no image")
        return image

    def text_allowed(self, question: str, a: str, b: str, prefix: str = "",
                     names: dict[str, str] | None = None) -> None:
        """422 naming the field when a text holds one of the judge's control tokens."""
        try:
            self.engine.model.check_text(question, a, b)
        except ReservedToken as exc:
            field = (names or {}).get(exc.field, exc.field)
            raise FieldError(422, "reserved_token", prefix + field,
                             f"{field} contains the model's reserved token {exc.token!r}") from None

    def prompt_fits(self, question: str, a: str, b: str, image, field: str) -> None:
        try:
            self.engine.model.check_prompt_length(question, a, b, image is not None)
        except PromptTooLong as exc:
            raise FieldError(413, "prompt_too_long", field, str(exc)) from None

    async def reward_group(self, prompt: RewardPrompt, method: RewardMethod, names: dict[str, str]) -> RewardGroup:
        """One prompt's group, its request-level fields checked (4xx naming `names[field]`); its
        completions are screened later (`screen_group`), where a bad one becomes a null reward."""
        if method == "reference" and prompt.reference is None:
            raise FieldError(422, "invalid_request", names["reference"], "required by method 'reference'")
        if method != "reference" and len(prompt.completions) < 2:
            raise FieldError(422, "invalid_request", names["completions"], f"method '{method}' compares the "
                             "completions with each other and needs at least 2")
        reference = prompt.reference if method == "reference" else None
        limits = self.settings.limits
        for field, text, limit in (("question", prompt.question, limits.max_question_chars),
                                   ("reference", reference or "", limits.max_response_chars)):
            if len(text) > limit:
                raise FieldLimitError(names[field], f"has {len(text)} characters, limit {limit}")
        if not prompt.question.strip():
            raise FieldError(422, "invalid_request", names["question"], "is empty")
        self.text_allowed(prompt.question, reference or "", "",
                          names={"question": names["question"], "response_a": names["reference"]})
        image = await self.image(prompt.image, names["image"])
        return RewardGroup(prompt.question, image, list(prompt.completions), reference)

    async def rewards(self, prompts: list[RewardPrompt], method: RewardMethod,
                      names: list[dict[str, str]]) -> list[GroupOutcome]:
        groups = [await self.reward_group(p, method, n) for p, n in zip(prompts, names)]
        await asyncio.to_thread(lambda: [screen_group(self.engine.model, self.settings.limits, g, method)
                                         for g in groups])
        return await judge_groups(self.engine, groups, method)

    async def judge_item(self, item: JudgeRequest, prefix: str = "") -> JudgeResult:
        self.text_allowed(item.question, item.response_a, item.response_b, prefix)
        image = await self.image(item.image, prefix + "image")
        await asyncio.to_thread(self.prompt_fits, item.question, item.response_a, item.response_b, image,
                                prefix.rstrip(".") or "body")
        return await self.engine.judge(item, image)


def create_app(engine: PairwiseJudging, api_token: str | None = None) -> FastAPI:
    """The FastAPI app of one replica; `api_token` None means no authentication."""
    settings = engine.settings
    app = FastAPI(title="CAREVL judge", version="1")
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes)
    app.add_middleware(RequestMetrics)  # added last = outermost: counts every answer, 413s included
    _install_error_handlers(app)
    inputs = _Inputs(engine)
    auth = [Depends(_auth_dependency(api_token))]

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(model=settings.model)

    @app.get("/v1/model", response_model=ModelInfo, dependencies=auth)
    async def model_info() -> ModelInfo:
        judge = engine.model
        return ModelInfo(model=settings.model, model_path=judge.name, default_mode=settings.default_mode,
                         verdict_prefix=VERDICT_PREFIX, max_batch_size=settings.max_batch_size,
                         batch_wait_timeout_s=settings.batch_wait_timeout_s, max_new_tokens=engine.max_new_tokens,
                         tie_on_swap_disagreement=settings.tie_on_swap_disagreement,
                         reward_method=settings.reward_method, calibration_temperature=engine.calibration_temperature,
                         allow_remote_images=settings.allow_remote_images, auth_required=api_token is not None,
                         limits=settings.limits)

    @app.post("/v1/judge", response_model=JudgeResult, dependencies=auth)
    async def judge(request: JudgeRequest) -> JudgeResult:
        check_judge_limits(request, settings.limits)
        return await inputs.judge_item(request)

    @app.post("/v1/judge/batch", response_model=JudgeBatchResult, dependencies=auth)
    async def judge_batch(request: JudgeBatchRequest) -> JudgeBatchResult:
        start = asyncio.get_running_loop().time()
        check_batch_limits(request, settings.limits)
        results = await asyncio.gather(*(inputs.judge_item(item, f"items.{n}.")
                                         for n, item in enumerate(request.items)))
        return JudgeBatchResult(results=list(results), model=settings.model,
                                latency_ms=(asyncio.get_running_loop().time() - start) * 1000.0)

    @app.post("/v1/rank", response_model=RankResult, dependencies=auth)
    async def rank(request: RankRequest) -> RankResult:
        check_rank_limits(request, settings.limits)
        for n, candidate in enumerate(request.candidates):
            inputs.text_allowed(request.question, candidate, "", names={"response_a": f"candidates.{n}"})
        image = await inputs.image(request.image, "image")
        longest = sorted(range(len(request.candidates)), key=lambda n: -len(request.candidates[n]))[:2]
        await asyncio.to_thread(inputs.prompt_fits, request.question, request.candidates[longest[0]],
                                request.candidates[longest[1]], image, "candidates")
        return await engine.rank(request, image)

    @app.post("/v1/reward", response_model=RewardResult, dependencies=auth)
    async def reward(request: RewardRequest) -> RewardResult:
        start = asyncio.get_running_loop().time()
        check_reward_limits(request, settings.limits)
        method = request.method or settings.reward_method
        names = [{f: f"prompts.{n}.{f}" for f in REWARD_FIELDS} for n in range(len(request.prompts))]
        outcomes = await inputs.rewards(request.prompts, method, names)
        failures = [RewardFailure(prompt=n, completion=i, reason=reason, message=message)
                    for n, outcome in enumerate(outcomes) for i, (reason, message) in sorted(outcome.failures.items())]
        return RewardResult(rewards=[o.rewards for o in outcomes], method=method,
                            temperature=engine.calibration_temperature,
                            comparisons=sum(o.comparisons for o in outcomes), failures=failures, model=settings.model,
                            latency_ms=(asyncio.get_running_loop().time() - start) * 1000.0)

    @app.post(openrlhf.ROUTE, response_model=openrlhf.OpenRLHFResult, dependencies=auth)
    async def openrlhf_reward(request: openrlhf.OpenRLHFRequest,
                              method: RewardMethod | None = None) -> openrlhf.OpenRLHFResult:
        return await _openrlhf_rewards(inputs, request, method or settings.reward_method)

    return app


REWARD_FIELDS = ("question", "image", "completions", "reference")


async def _openrlhf_rewards(inputs: _Inputs, request: openrlhf.OpenRLHFRequest,
                            method: RewardMethod) -> openrlhf.OpenRLHFResult:
    """OpenRLHF's protocol on the /v1/reward pipeline; a completion without a reward fails the request."""
    samples = openrlhf.samples_of(request)
    groups = openrlhf.group_samples(samples)
    if len(groups) > inputs.settings.limits.max_reward_prompts:
        raise FieldLimitError("query", f"holds {len(groups)} prompts, limit {inputs.settings.limits.max_reward_prompts}",
                              413)
    prompts, names = [], []
    for members in groups:
        first = samples[members[0]]
        if len(members) > inputs.settings.limits.max_group_completions:
            raise FieldLimitError("query", f"holds {len(members)} samples of prompts.{members[0]}, limit "
                                           f"{inputs.settings.limits.max_group_completions}", 413)
        prompts.append(RewardPrompt.model_construct(question=first.question, image=first.image, reference=first.reference,
                                                    completions=[samples[n].response for n in members]))
        names.append({"question": first.question_field, "image": f"labels.{members[0]}.image",
                      "reference": f"labels.{members[0]}.reference", "completions": "query"})
    outcomes = await inputs.rewards(prompts, method, names)
    rewards: list[float] = [0.0] * len(samples)
    for members, outcome in zip(groups, outcomes):
        for i, (reason, message) in sorted(outcome.failures.items()):
            raise FieldError(openrlhf.FAILURE_STATUS.get(reason, 500), reason, f"query.{members[i]}", message)
        for n, reward in zip(members, outcome.rewards):
            rewards[n] = float(reward)
    return openrlhf.OpenRLHFResult(rewards=rewards, scores=rewards)
