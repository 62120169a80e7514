"""Pieces every HTTP entrypoint uses: the Idempotency-Key header, answering with a write's
outcome, and optional JSON bodies for transition endpoints."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel, ValidationError

from .auth import Principal
from .writes import IdempotencyKey, Outcome

IdempotencyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="A retry with the same key returns the first result"),
]
# Money moves (payments, returns, refunds, cancellations that refund, redemptions, adjustments)
# need the key: without it a client's retry would move the money again. Missing, the request
# is a 400 naming the header (problems.py turns a missing header into a 400).
RequiredIdempotencyHeader = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        description="Required: this moves money, and a retry with the same key returns the first "
        "result instead of moving it again",
    ),
]


def optional_key(key: IdempotencyHeader = None) -> str | None:
    """Dependency form of IdempotencyHeader, for endpoints built in a loop."""
    return key


def required_key(key: RequiredIdempotencyHeader) -> str:
    """Dependency form of RequiredIdempotencyHeader, for endpoints built in a loop."""
    return key


Model = TypeVar("Model", bound=BaseModel)


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema for a hand-written `requestBody` in the OpenAPI, with the models it
    uses inlined: pydantic refers to them as `#/$defs/...`, which does not resolve inside the
    OpenAPI document (request models are not recursive, so inlining ends)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(
                    {**defs[ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
                )
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


def answer(outcome: Outcome) -> ORJSONResponse:
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return ORJSONResponse(outcome.body, status_code=outcome.status, headers=headers)


def idempotency(
    key: str | None, principal: Principal, operation: str, body: BaseModel | None
) -> IdempotencyKey | None:
    payload = body.model_dump_json().encode() if body is not None else b""
    return IdempotencyKey.from_request(key, principal, operation, payload)


async def optional_body(request: Request, model: type[Model] | None) -> Model | None:
    """A transition's body may be left out entirely; when present it must be valid."""
    if model is None:
        return None
    raw = await request.body()
    try:
        return model.model_validate_json(raw) if raw.strip() else model()
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
