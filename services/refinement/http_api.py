"""The refinement service's OpenAI-compatible HTTP API (Starlette), served beside gRPC in one process.

``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models`` and ``GET /health``.
A generation request takes the same token bucket as gRPC (429 when it is empty), is read up to
``max_request_bytes`` (413 past it), is answered 503 while the service is not ready (the model is
loading, or the process is stopping), then goes through the same limits and strategy code as gRPC
``Generate`` (``answering``; a limit is a 400 naming it). Errors carry OpenAI's error body. Every
answer names the model version that produced it: ``system_fingerprint`` and the
``x-selfimprove-model-version`` header (a promotion swaps the model between two requests).
With a guard, every route but ``/health`` needs a credential first (``http_auth``: 401 / 403).
The mapping itself is pure (``openai_api``); this module is the I/O around it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from selfimprove.core import compute
from selfimprove.core.grpcserve import TokenBucket
from selfimprove.core.guard import Guard
from selfimprove.refinement import answering, openai_api
from selfimprove.refinement.http_auth import AuthMiddleware
from selfimprove.refinement.limits import Limits
from selfimprove.refinement.metrics import RefinementMetrics
from selfimprove.refinement.openai_api import ApiError, ChatRequest, CompletionRequest
from selfimprove.refinement.served import ServedModel
from selfimprove.runtime import strategies

log = logging.getLogger(__name__)
VERSION_HEADER = "x-selfimprove-model-version"
STRATEGY_HEADER = "x-selfimprove-strategy"
# the request metrics' code label, named as gRPC names them so both transports share one series
CODES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
    500: "INTERNAL",
}


@dataclass
class HttpApi:
    """What the routes answer from: the served model, the limits, and the process's shared state."""

    model: ServedModel
    limits: Limits
    sampling: strategies.Settings
    max_request_bytes: int
    ready: Callable[[], bool]
    bucket: TokenBucket | None = None
    metrics: RefinementMetrics | None = None
    guard: Guard | None = None  # the credential check; None: every route open


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 once it is longer than ``limit`` bytes (without reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413, f"the request is {declared} bytes, over max_request_bytes={limit}", None, "request_too_large"
        )
    body = bytearray()
    try:
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise ApiError(
                    413, f"the request is over max_request_bytes={limit}", None, "request_too_large"
                )
    except ClientDisconnect:  # nobody reads the answer: a 400 in the metrics, not an internal error
        raise ApiError(
            400, "the client disconnected before sending the whole body", None, "client_disconnected"
        ) from None
    return bytes(body)


def error_response(exc: ApiError) -> JSONResponse:
    headers = {"retry-after": "1"} if exc.status in (429, 503) else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def make_app(api: HttpApi) -> Starlette:
    """The Starlette app of ``api``'s routes."""

    async def generate(request: Request, chat: bool) -> Response:
        method = "ChatCompletions" if chat else "Completions"
        start = time.perf_counter()
        strategy, code = "", "OK"
        try:
            if api.bucket is not None and not api.bucket.take():
                raise ApiError(
                    429,
                    "rate limit: too many requests, retry later",
                    None,
                    "rate_limit_exceeded",
                    "rate_limit_error",
                )
            if not api.ready():
                raise ApiError(
                    503,
                    "no model is being served (the service is starting or stopping); retry later",
                    None,
                    "model_not_loaded",
                    "server_error",
                )
            raw = await read_body(request, api.max_request_bytes)
            req: ChatRequest | CompletionRequest
            if chat:
                req = openai_api.parse_request(ChatRequest, raw)
                ask, stops = openai_api.chat_ask(req)
            else:
                req = openai_api.parse_request(CompletionRequest, raw)
                ask, stops = openai_api.completion_ask(req)
            served = api.model.current()
            strategy = ask.strategy or served.strategy
            try:
                admitted = answering.plan(served, ask, api.limits, api.sampling)
            except ValueError as exc:  # a LimitError, or a strategy or top_p out of range
                raise ApiError(400, str(exc), None, "invalid_value") from None
            reply = await compute.run(answering.answer, admitted)
            if api.metrics is not None:
                api.metrics.generated(reply.completion_tokens, reply.seconds)
            rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
            created = int(time.time())
            headers = {VERSION_HEADER: reply.model_version, STRATEGY_HEADER: reply.strategy}
            if req.stream:
                include_usage = bool((req.stream_options or {}).get("include_usage"))
                make = openai_api.chat_chunks if chat else openai_api.completion_chunks
                events = list(make(rid, created, reply, stops, include_usage))
                return StreamingResponse(_events(events), media_type="text/event-stream", headers=headers)
            body = (openai_api.chat_completion if chat else openai_api.completion)(rid, created, reply, stops)
            return JSONResponse(body, headers=headers)
        except ApiError as exc:
            code = CODES.get(exc.status, "INTERNAL")
            return error_response(exc)
        except Exception:
            code = "INTERNAL"
            log.exception("%s failed", method)
            return error_response(
                ApiError(500, "internal error (see the service log)", None, None, "server_error")
            )
        finally:
            if api.metrics is not None:
                api.metrics.request(method, strategy, code, time.perf_counter() - start)

    async def chat_completions(request: Request) -> Response:
        return await generate(request, chat=True)

    async def completions(request: Request) -> Response:
        return await generate(request, chat=False)

    async def models(request: Request) -> Response:
        served = api.model.current()
        return JSONResponse(openai_api.model_list(served.strategy, api.limits.max_n, served.version))

    async def health(request: Request) -> Response:
        served = api.model.current()
        ready = api.ready()
        body: dict[str, Any] = {
            "status": "ok" if ready else "starting",
            "model_version": served.version,
            "strategy": served.strategy,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return error_response(ApiError(status, f"{request.method} {request.url.path}: {detail}"))

    return Starlette(
        middleware=[Middleware(AuthMiddleware, guard=api.guard)] if api.guard is not None else [],
        exception_handlers={HTTPException: http_error},
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
    )


async def _events(events: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for event in events:
        yield openai_api.sse(event)
    yield openai_api.sse("[DONE]")
