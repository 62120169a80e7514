"""HTTP entrypoints of the profiles service: translate requests to use cases, nothing more."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import ORJSONResponse, StreamingResponse
from pydantic import AwareDatetime

from services.common.auth import BULK_EXPORT_ROLE, Principal, require
from services.common.clock import PERIOD_RULE
from services.common.endpoints import IdempotencyHeader, answer, idempotency, optional_body
from services.common.fields import Channel, CustomerId, EntityId, Limit, ShortText, Since, Until, only_params
from services.common.problems import Problem
from services.common.vocabulary import AGE_BAND_NAMES, ChurnLevel, LifecycleStage, LoyaltyTier, Segment
from services.common.writes import IdempotencyKey

from .domain import SEARCH_ORDERS, ProfileFilters, WarningFilters, WarningStatus
from .models import (
    CSV_COLUMNS,
    MAX_INTERACTIONS,
    ActionIn,
    AssignIn,
    ConsentIn,
    CustomerIn,
    CustomerPatch,
    EraseIn,
    Gender,
    OutcomeIn,
    csv_cell,
    present_warning,
)
from .service import ProfilesService

router = APIRouter()


def profiles(request: Request) -> ProfilesService:
    return request.app.state.profiles


# --- customers ---------------------------------------------------------------------------------


@router.post("/customers", status_code=201, tags=["customers"], summary="Register a customer")
async def register_customer(
    body: CustomerIn,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    return answer(await service.register(body, idempotency(key, principal, "POST /customers", body)))


@router.patch("/customers/{customer_id}", tags=["customers"], summary="Change registration attributes")
async def update_customer(
    customer_id: CustomerId,
    body: CustomerPatch,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise Problem(422, "nothing to change: send at least one field")
    idem = idempotency(key, principal, f"PATCH /customers/{customer_id}", body)
    return answer(await service.update(customer_id, changes, idem))


@router.put(
    "/customers/{customer_id}/consent",
    tags=["customers"],
    summary="Give or withdraw marketing consent, for every channel or per channel",
)
async def set_consent(
    customer_id: CustomerId,
    body: ConsentIn,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    idem = idempotency(key, principal, f"PUT /customers/{customer_id}/consent", body)
    return answer(await service.set_consent(customer_id, body, principal.label, idem))


@router.get(
    "/customers/{customer_id}/consent", tags=["customers"], summary="Consent per channel and its history"
)
async def get_consent(
    customer_id: CustomerId,
    _: Principal = Depends(require("viewer")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    return ORJSONResponse(await service.consent(customer_id))


FILTERS = ("segment", "lifecycle_stage", "abc_class", "tier", "churn_level", "min_risk", "city")
FILTERS += (
    "gender",
    "age_band",
    "city_tier",
    "channel",
    "marketing_consent",
    "category",
    "brand",
    "min_affinity",
)
SEARCH_PARAMS = (*FILTERS, "registered_from", "registered_to", "sort", "order", "limit", "cursor", "format")


@router.get(
    "/customers",
    tags=["customers"],
    summary="Search live profiles; format=csv exports the whole result",
    dependencies=[Depends(only_params(*SEARCH_PARAMS))],
)
async def search_customers(
    segment: Segment | None = None,
    lifecycle_stage: LifecycleStage | None = None,
    abc_class: Literal["A", "B", "C"] | None = None,
    tier: LoyaltyTier | None = None,
    churn_level: ChurnLevel | None = None,
    min_risk: Annotated[float | None, Query(ge=0, le=1)] = None,
    city: ShortText | None = None,
    registered_from: AwareDatetime | None = None,
    registered_to: AwareDatetime | None = None,
    gender: Gender | None = None,
    age_band: Literal[AGE_BAND_NAMES] | None = None,  # type: ignore[valid-type]
    city_tier: Annotated[int | None, Query(ge=1, le=5)] = None,
    channel: Channel | None = None,
    marketing_consent: bool | None = None,
    category: Annotated[ShortText | None, Query(description="bought in the last 12 months")] = None,
    brand: ShortText | None = None,
    min_affinity: Annotated[
        float | None, Query(gt=0, le=1, description="with category or brand: least share of 12 months' spend")
    ] = None,
    sort: Literal[tuple(SEARCH_ORDERS)] = "clv",  # type: ignore[valid-type]
    order: Literal["asc", "desc"] | None = Query(None, description="Default: desc, recency asc"),
    limit: Limit = 50,
    cursor: str | None = None,
    format: Literal["json", "csv"] = Query(
        "json",
        description=f"csv: every matching customer at once; needs the {BULK_EXPORT_ROLE} role and is recorded",
    ),
    principal: Principal = Depends(require("viewer")),
    service: ProfilesService = Depends(profiles),
) -> Any:
    filters = ProfileFilters(
        segment=segment,
        lifecycle_stage=lifecycle_stage,
        abc_class=abc_class,
        tier=tier,
        churn_level=churn_level,
        min_risk=min_risk,
        city=city,
        registered_from=registered_from,
        registered_to=registered_to,
        gender=gender,
        age_band=age_band,
        city_tier=city_tier,
        channel=channel,
        marketing_consent=marketing_consent,
        category=category,
        brand=brand,
        min_affinity=min_affinity,
    )
    if min_affinity is not None and category is None and brand is None:
        raise Problem(400, "min_affinity goes with category or brand")
    if format == "csv":
        if cursor:
            raise Problem(400, "format=csv exports the whole result; leave out cursor")
        if not principal.can(BULK_EXPORT_ROLE):
            raise Problem(
                403,
                f"a bulk export of personal data needs the {BULK_EXPORT_ROLE} role; the key has {principal.role}",
            )
        await service.record_export(principal, filters, sort, order)
        return StreamingResponse(
            _csv(service.search_all(filters, sort, order)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="customers.csv"'},
        )
    return ORJSONResponse(await service.search(filters, sort, order, limit, cursor))


async def _csv(rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    count = 0
    async for row in rows:
        writer.writerow([csv_cell(row[c]) for c in CSV_COLUMNS])
        count += 1
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@router.get(
    "/customers/{customer_id}", tags=["customers"], summary="The live profile, every score and its reasons"
)
async def get_customer(
    customer_id: CustomerId,
    _: Principal = Depends(require("viewer")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    return ORJSONResponse(await service.customer_view(customer_id))


@router.get(
    "/customers/{customer_id}/360",
    tags=["customers"],
    summary="Profile, recent orders, complaints, surveys, loyalty: one answer from the read model kept "
    "from events (each section with as_of), or read through to the services (partial if one is down)",
    dependencies=[Depends(only_params("source"))],
)
async def customer_360(
    customer_id: CustomerId,
    request: Request,
    source: Annotated[
        Literal["read_model", "services"],
        Query(description="read_model: kept from events, each section with as_of; services: ask them now"),
    ] = "read_model",
    _: Principal = Depends(require("viewer")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    return ORJSONResponse(await service.view_360(customer_id, request.headers.get("authorization"), source))


@router.get(
    "/customers/{customer_id}/export",
    tags=["privacy"],
    summary="Everything the platform holds about a customer, from every service",
)
async def export_customer(
    customer_id: CustomerId,
    request: Request,
    _: Principal = Depends(require("admin")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    body = await service.export(customer_id, request.headers.get("authorization"))
    return ORJSONResponse(
        body, headers={"Content-Disposition": f'attachment; filename="customer-{customer_id}.json"'}
    )


@router.delete(
    "/customers/{customer_id}",
    status_code=202,
    tags=["privacy"],
    summary="Erase: remove the person here and tell every service to (crm.customer.erased)",
)
async def erase_customer(
    customer_id: CustomerId,
    request: Request,
    principal: Principal = Depends(require("admin")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    body = await optional_body(request, EraseIn)
    return answer(await service.erase(customer_id, body.reason, principal.label))


# --- interactions ------------------------------------------------------------------------------


@router.post(
    "/interactions",
    tags=["interactions"],
    summary=f"A batch of up to {MAX_INTERACTIONS} interactions; valid ones are published, rejects reported by index",
)
async def record_interactions(
    items: Annotated[
        list[dict[str, Any]],
        Body(
            description=f"InteractionIn objects; more than {MAX_INTERACTIONS} is a 413",
            json_schema_extra={"maxItems": MAX_INTERACTIONS},
        ),
    ],
    request: Request,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    # The batch as sent identifies the request (items are not validated yet, so not re-encoded).
    idem = IdempotencyKey.from_request(key, principal, "POST /interactions", await request.body())
    return answer(await service.record_interactions(items, idem))


# --- summaries ---------------------------------------------------------------------------------


@router.get(
    "/segments",
    tags=["analytics"],
    summary="Counts, revenue share and average CLV by segment, stage, ABC class and tier; moves in a period",
    description=PERIOD_RULE,
    dependencies=[Depends(only_params("from", "to"))],
)
async def segments(
    since: Since = None,
    until: Until = None,
    _: Principal = Depends(require("viewer")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    return ORJSONResponse(await service.segments(since, until))


@router.get(
    "/analytics/seasonality",
    tags=["analytics"],
    summary="Monthly seasonal index of net sales (month over the average month), overall and per year",
    dependencies=[Depends(only_params("currency", "from", "to"))],
)
async def seasonality(
    request: Request,
    currency: Annotated[str | None, Query(pattern="^[A-Z]{3}$")] = None,
    since: Since = None,
    until: Until = None,
    _: Principal = Depends(require("viewer")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    return ORJSONResponse(
        await service.seasonality(currency, since, until, request.headers.get("authorization"))
    )


# --- churn warnings ----------------------------------------------------------------------------


@router.get(
    "/churn-warnings",
    tags=["churn warnings"],
    summary="Warnings, open first, by value at risk, each with its customer's name",
    dependencies=[Depends(only_params("status", "assignee", "customer_id", "limit", "cursor"))],
)
async def list_warnings(
    status: WarningStatus | None = None,
    assignee: ShortText | None = None,
    customer_id: CustomerId | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
    _: Principal = Depends(require("viewer")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    filters = WarningFilters(status, assignee, customer_id)
    return ORJSONResponse(await service.warnings(filters, limit, cursor))


@router.get("/churn-warnings/{warning_id}", tags=["churn warnings"], summary="One warning with its history")
async def get_warning(
    warning_id: EntityId,
    _: Principal = Depends(require("viewer")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    return ORJSONResponse(present_warning(await service.warning(warning_id)))


@router.post("/churn-warnings/{warning_id}/assign", tags=["churn warnings"], summary="Give it to an agent")
async def assign_warning(
    warning_id: EntityId,
    body: AssignIn,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    idem = idempotency(key, principal, f"POST /churn-warnings/{warning_id}/assign", body)
    return answer(await service.assign(warning_id, body.assignee, principal.label, idem))


@router.post(
    "/churn-warnings/{warning_id}/actions",
    tags=["churn warnings"],
    summary="Record a retention action (published as a churn_action interaction); coupon and "
    "email also have engagement issue the coupon and send the message",
)
async def act_on_warning(
    warning_id: EntityId,
    body: ActionIn,
    request: Request,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    idem = idempotency(key, principal, f"POST /churn-warnings/{warning_id}/actions", body)
    authorization = request.headers.get("authorization")
    return answer(await service.act(warning_id, body, principal.label, idem, authorization))


@router.post(
    "/churn-warnings/{warning_id}/outcome", tags=["churn warnings"], summary="Retained or lost: closes it"
)
async def close_warning(
    warning_id: EntityId,
    body: OutcomeIn,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: ProfilesService = Depends(profiles),
) -> ORJSONResponse:
    idem = idempotency(key, principal, f"POST /churn-warnings/{warning_id}/outcome", body)
    return answer(await service.close_warning(warning_id, body.outcome, principal.label, idem))
