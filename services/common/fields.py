"""Pydantic field types for request models, taken from `schemas/common/v1.json` so that
what an API accepts and what its events promise cannot drift apart."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Query, Request
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from .contracts import SCHEMA_BASE, registry
from .problems import Problem

_DEFS = registry().documents[f"{SCHEMA_BASE}/common/v1.json"]["$defs"]
ID_PATTERN = _DEFS["id"]["pattern"]
CURRENCIES = frozenset(_DEFS["currency"]["enum"])
CHANNELS = tuple(_DEFS["channel"]["enum"])
MAX_CENTS = _DEFS["amount_cents"]["maximum"]


def new_id(prefix: str) -> str:
    """A fresh entity id that fits EntityId: 'o-…', 'cp-…'."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def _currency(value: str) -> str:
    if value not in CURRENCIES:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code (e.g. CNY, EUR, USD)")
    return value


EntityId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
CustomerId = EntityId
Currency = Annotated[str, AfterValidator(_currency)]
Channel = Literal[CHANNELS]  # type: ignore[valid-type]
Gender = Literal["female", "male", "other", "unspecified"]
CityTier = Annotated[int, Field(ge=1, le=5)]
Locale = Literal["zh-CN", "en"]  # the languages messages are written in


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Asia/Shanghai)") from None
    return value


TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_zone)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
LongText = Annotated[str, StringConstraints(max_length=2000)]
Cents = Annotated[int, Field(ge=0, le=MAX_CENTS)]
Limit = Annotated[int, Field(ge=1, le=500)]
# Free-form numbers (e.g. interaction attributes): integers every JSON reader holds exactly
# (I-JSON, RFC 7493), so a bigger one is a 422, not a failure to store or publish it.
JsonInt = Annotated[int, Field(ge=-(2**53 - 1), le=2**53 - 1)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _not_future(value: datetime) -> datetime:
    if value > datetime.now(UTC) + timedelta(minutes=5):
        raise ValueError("must not be in the future")
    return value.astimezone(UTC)


PastTime = Annotated[AwareDatetime, AfterValidator(_not_future)]
# A half-open time range in query parameters: ?from=...&to=...
Since = Annotated[AwareDatetime | None, Query(alias="from")]
Until = Annotated[AwareDatetime | None, Query(alias="to")]


class Strict(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def only_params(*allowed: str):
    """Dependency: a query parameter the endpoint does not know is a 400, not ignored."""
    allowed_set = frozenset(allowed)

    def check(request: Request) -> None:
        unknown = sorted(set(request.query_params) - allowed_set)
        if unknown:
            raise Problem(
                400,
                f"unknown query parameter(s): {', '.join(unknown)}; known: "
                f"{', '.join(sorted(allowed_set)) or 'none'}",
            )

    return check
