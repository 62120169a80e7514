"""RFC 9457 problem details: every error a client sees is application/problem+json with a
clear `detail`. Bad input is a 4xx; only our own faults are 500s."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from pymongo.errors import ConnectionFailure as PyMongoConnectionFailure
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import Kind, RuleBroken

log = structlog.get_logger(__name__)
PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

# The one place a domain's kind of refusal becomes an HTTP status.
STATUS_OF_KIND = {
    Kind.INVALID: 422,
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.TOO_LARGE: 413,
    Kind.UNAVAILABLE: 503,
}


class Problem(Exception):
    """Raise from anywhere in a request to answer with problem+json. `extra` members are
    added to the body (e.g. `allowed` transitions on a 409)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.type = type_
        self.headers = headers
        self.extra = extra


def problem_body(
    status: int, detail: str, *, title: str | None = None, type_: str = "about:blank"
) -> dict[str, Any]:
    """The members every problem document has (RFC 9457)."""
    return {"type": type_, "title": title or _TITLES.get(status, "Error"), "status": status, "detail": detail}


def problem_response(
    status: int,
    detail: str,
    request: Request | None = None,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ORJSONResponse:
    body = problem_body(status, detail, title=title, type_=type_)
    if request is not None:
        body["instance"] = request.url.path
        request_id = request.scope.get("state", {}).get("request_id")
        if request_id:
            body["request_id"] = request_id
    body.update(extra)
    return ORJSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def describe_validation_errors(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Pydantic errors -> one readable sentence naming the fields, and the list."""
    items = []
    for err in errors[:20]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc) or "body"
        items.append(
            {"field": field, "message": err.get("msg", "invalid"), "in": (err.get("loc") or ["body"])[0]}
        )
    detail = "; ".join(f"{i['field']}: {i['message']}" for i in items[:5])
    return detail or "invalid request", items


def missing_headers(errors: list[dict[str, Any]]) -> list[str]:
    """Required request headers left out (e.g. Idempotency-Key on a money route): a malformed
    request, 400, rather than invalid content, 422."""
    return [
        str(err["loc"][1])
        for err in errors
        if err.get("type") == "missing" and len(err.get("loc") or ()) == 2 and err["loc"][0] == "header"
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(RuleBroken)
    async def _rule(request: Request, exc: RuleBroken) -> ORJSONResponse:
        return problem_response(STATUS_OF_KIND[exc.kind], exc.detail, request, **exc.extra)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> ORJSONResponse:
        return problem_response(
            exc.status, exc.detail, request, title=exc.title, type_=exc.type, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> ORJSONResponse:
        errors = list(exc.errors())
        missing = missing_headers(errors)
        if missing:
            return problem_response(400, f"missing header(s): {', '.join(missing)}", request, missing=missing)
        detail, items = describe_validation_errors(errors)
        return problem_response(422, detail, request, errors=items)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> ORJSONResponse:
        return problem_response(
            exc.status_code, str(exc.detail), request, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(PyMongoError)
    async def _database_away(request: Request, exc: PyMongoError) -> ORJSONResponse:
        # The database is unreachable or did not answer in time, not the request at fault.
        # Writes are transactions: a refused one changed nothing, but one that timed out while
        # committing may have landed, hence the Idempotency-Key advice.
        if not (exc.timeout or isinstance(exc, PyMongoConnectionFailure)):
            return await _unexpected(request, exc)
        log.warning("database unavailable", path=request.url.path, error=str(exc), timeout=exc.timeout)
        detail = (
            "the database did not answer in time; retry shortly (with the same Idempotency-Key "
            "if the request must not be applied twice)"
            if exc.timeout
            else "the database is unavailable; nothing was changed, retry shortly"
        )
        return problem_response(503, detail, request, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> ORJSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return problem_response(500, "internal error; the request id identifies it in the logs", request)
