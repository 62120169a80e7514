"""HTTP entrypoints of the loyalty service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import ORJSONResponse

from services.common.auth import Principal, require
from services.common.endpoints import RequiredIdempotencyHeader, answer, idempotency
from services.common.fields import CustomerId, Limit, only_params

from .models import AdjustmentIn, RedemptionIn
from .service import LoyaltyService

router = APIRouter(tags=["loyalty"])


def loyalty(request: Request) -> LoyaltyService:
    return request.app.state.loyalty


@router.get("/tiers", summary="Tiers, thresholds and benefits")
async def tiers(
    _: Principal = Depends(require("viewer")), service: LoyaltyService = Depends(loyalty)
) -> dict:
    return service.tiers()


@router.get("/accounts/{customer_id}", summary="Balance, tier, benefits and points expiring soon")
async def get_account(
    customer_id: CustomerId,
    _: Principal = Depends(require("viewer")),
    service: LoyaltyService = Depends(loyalty),
) -> dict[str, Any]:
    return await service.account(customer_id)


@router.get(
    "/accounts/{customer_id}/ledger",
    summary="Ledger entries, newest first",
    dependencies=[Depends(only_params("limit", "cursor"))],
)
async def get_ledger(
    customer_id: CustomerId,
    limit: Limit = 50,
    cursor: str | None = None,
    _: Principal = Depends(require("viewer")),
    service: LoyaltyService = Depends(loyalty),
) -> dict[str, Any]:
    return await service.ledger(customer_id, limit, cursor)


@router.post("/accounts/{customer_id}/redemptions", status_code=201, summary="Spend points (oldest first)")
async def redeem(
    customer_id: CustomerId,
    body: RedemptionIn,
    key: RequiredIdempotencyHeader,
    principal: Principal = Depends(require("agent")),
    service: LoyaltyService = Depends(loyalty),
) -> ORJSONResponse:
    idem = idempotency(key, principal, f"POST /accounts/{customer_id}/redemptions", body)
    return answer(await service.redeem(customer_id, body.points, body.reason, idem))


@router.post(
    "/accounts/{customer_id}/adjustments", status_code=201, summary="Admin correction, with a reason"
)
async def adjust(
    customer_id: CustomerId,
    body: AdjustmentIn,
    key: RequiredIdempotencyHeader,
    principal: Principal = Depends(require("admin")),
    service: LoyaltyService = Depends(loyalty),
) -> ORJSONResponse:
    idem = idempotency(key, principal, f"POST /accounts/{customer_id}/adjustments", body)
    return answer(await service.adjust(customer_id, body.points, body.reason, principal.label, idem))
