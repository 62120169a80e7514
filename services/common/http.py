"""The HTTP shell every service shares: health, readiness and metrics endpoints, request ids,
per-route metrics, body size and content-type limits, problem+json errors, API keys."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, FastAPI
from fastapi.responses import ORJSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics, problems
from .auth import api_keys
from .settings import Settings

ReadyCheck = Callable[[], Awaitable[bool]]
JSON = "application/json"


class BodyPolicy:
    """Which media types and how many bytes a request body may have, per path."""

    def __init__(
        self,
        default_limit: int,
        overrides: dict[str, tuple[set[str], int]] | None = None,
        media_types: set[str] | None = None,
    ) -> None:
        self.default = (media_types or {JSON, "application/merge-patch+json"}, default_limit)
        self.overrides = overrides or {}

    def for_path(self, path: str) -> tuple[set[str], int]:
        return self.overrides.get(path, self.default)

    def describe(self) -> str:
        """The limits as the OpenAPI document states them."""
        lines = [
            f"Request bodies: at most {self.default[1]:,} bytes (413 beyond) of "
            f"{' or '.join(sorted(self.default[0]))} (415 otherwise), valid UTF-8 JSON without "
            "lone surrogates, NaN or Infinity, nested at most 1,024 deep (422 otherwise)."
        ]
        for path, (media_types, limit) in sorted(self.overrides.items()):
            lines.append(f"`{path}`: at most {limit:,} bytes of {' or '.join(sorted(media_types))}.")
        return " ".join(lines)


class _TooLarge(Exception):
    pass


class RequestShell:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path)."""

    def __init__(self, app: ASGIApp, policy: BodyPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:100] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status_holder = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            refusal = self._refuse(scope, headers)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
                return
            limit = self.policy.for_path(scope["path"])[1]
            receive = _limited(receive, limit)
            if _json_body(scope, headers):
                body = await _read_body(receive)
                unreadable = _unreadable_json(body)
                if unreadable is not None:
                    await problems.problem_response(
                        422,
                        f"body: not valid JSON: {unreadable}",
                        errors=[{"field": "body", "message": unreadable, "in": "body"}],
                    )(scope, receive, send_with_id)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_with_id)
        except _TooLarge:
            if not status_holder["started"]:
                limit = self.policy.for_path(scope["path"])[1]
                await problems.problem_response(413, f"request body larger than {limit} bytes")(
                    scope, receive, send_with_id
                )
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                "unmatched" if status_holder["status"] == 404 else "other"
            )
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method, template, str(status_holder["status"])).inc()
            metrics.HTTP_LATENCY.labels(method, template).observe(time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("request_id")

    def _refuse(self, scope: Scope, headers: dict[bytes, bytes]) -> Response | None:
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return None
        media_types, limit = self.policy.for_path(scope["path"])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                if int(length) > limit:
                    return problems.problem_response(413, f"request body larger than {limit} bytes")
            except ValueError:
                return problems.problem_response(400, "Content-Length is not a number")
            if int(length) == 0:
                return None
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if content_type not in media_types:
            wanted = " or ".join(sorted(media_types))
            return problems.problem_response(
                415,
                f"Content-Type must be {wanted}, not {content_type or 'missing'}",
                accepted=sorted(media_types),
            )
        return None


def _json_body(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    if scope["method"] not in ("POST", "PUT", "PATCH"):
        return False
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return content_type == b"application/json" or content_type.endswith(b"+json")


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _unreadable_json(body: bytes) -> str | None:
    """Why a JSON body cannot be taken in, or None. Read with orjson, strict where Python's own
    parser is lenient and what it lets through breaks later (a 500 instead of a 4xx): lone
    surrogates, NaN and Infinity, numbers beyond a double (1e400), invalid UTF-8, nesting
    deeper than 1,024. The endpoint parses the same bytes again, knowing they are sound."""
    if not body.strip():
        return None  # transitions take an empty body; FastAPI reports a missing one
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return str(exc)
    return None


def _replay(body: bytes, receive_rest: Receive) -> Receive:
    """The body read already, then whatever the client sends next (its disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await receive_rest()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge()
        return message

    return wrapped


def create_app(
    *,
    service: str,
    title: str,
    settings: Settings,
    routers: Sequence[APIRouter],
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    ready_checks: dict[str, ReadyCheck],
    body_overrides: dict[str, tuple[set[str], int]] | None = None,
    body_media_types: set[str] | None = None,
    description: str = "",
) -> FastAPI:
    policy = BodyPolicy(settings.max_body_bytes, body_overrides, body_media_types)
    app = FastAPI(
        title=title,
        description=f"{description}\n\n{policy.describe()}".strip(),
        version="1.0.0",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.api_keys = api_keys(settings)
    problems.install(app)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["operations"], summary="Broker and database reachable")
    async def readyz() -> Response:
        names = list(ready_checks)
        results = await asyncio.gather(*(ready_checks[n]() for n in names), return_exceptions=True)
        checks = {n: (r is True) for n, r in zip(names, results, strict=True)}
        ready = all(checks.values())
        return ORJSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    for router in routers:
        app.include_router(router)
    app.add_middleware(RequestShell, policy=policy)
    return app
