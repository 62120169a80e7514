"""HTTP entrypoints of the loyalty service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import ORJSONResponse
from pydantic import Field

from services.common.auth import Principal, require
from services.common.clock import to_rfc3339
from services.common.endpoints import IdempotencyHeader, answer, idempotency
from services.common.fields import CustomerId, Limit, ShortText, Strict, only_params
from services.common.problems import Problem

from .service import LoyaltyService

router = APIRouter(tags=["loyalty"])


class RedemptionIn(Strict):
    points: Annotated[int, Field(ge=1, le=10_000_000)]
    reason: ShortText


class AdjustmentIn(Strict):
    points: Annotated[int, Field(ge=-10_000_000, le=10_000_000)]
    reason: ShortText


def loyalty(request: Request) -> LoyaltyService:
    return request.app.state.loyalty


@router.get("/tiers", summary="Tiers, thresholds and benefits")
async def tiers(
    _: Principal = Depends(require("viewer")), service: LoyaltyService = Depends(loyalty)
) -> dict:
    return {
        "items": [
            {
                "name": t.name,
                "threshold_cents": t.threshold_cents,
                "earn_multiplier": t.earn_multiplier,
                "discount_percent": t.discount_percent,
                "free_shipping": t.free_shipping,
            }
            for t in service.programme.tiers
        ],
        "spend_window_days": service.programme.spend_window.days,
        "points_expire_after_days": service.programme.lot_lifetime.days,
    }


@router.get("/accounts/{customer_id}", summary="Balance, tier, benefits and points expiring soon")
async def get_account(
    customer_id: CustomerId,
    _: Principal = Depends(require("viewer")),
    service: LoyaltyService = Depends(loyalty),
) -> dict[str, Any]:
    account = await service.store.get(customer_id)
    if account is None:
        raise Problem(404, f"no loyalty account for {customer_id}")
    return service.present(account)


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
    docs, next_cursor = await service.store.ledger_page(customer_id, limit, cursor)
    items = [
        {
            **{k: v for k, v in d.items() if k != "_id"},
            "entry_id": d["_id"],
            "at": to_rfc3339(d["at"]),
            "expires_at": to_rfc3339(d["expires_at"]) if d.get("expires_at") else None,
        }
        for d in docs
    ]
    return {"items": items, "next_cursor": next_cursor}


@router.post("/accounts/{customer_id}/redemptions", status_code=201, summary="Spend points (oldest first)")
async def redeem(
    customer_id: CustomerId,
    body: RedemptionIn,
    key: IdempotencyHeader = None,
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
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("admin")),
    service: LoyaltyService = Depends(loyalty),
) -> ORJSONResponse:
    idem = idempotency(key, principal, f"POST /accounts/{customer_id}/adjustments", body)
    return answer(await service.adjust(customer_id, body.points, body.reason, principal.label, idem))
