"""What the loyalty service publishes (crm.loyalty.v1) and consumes (paid, returned and
refunded orders on crm.orders.v1, registrations on crm.customers.v1; erasure is followed by
services/common/erasure.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from motor.motor_asyncio import AsyncIOMotorClientSession

from services.common.clock import parse_rfc3339
from services.common.contracts import events_from_facts
from services.common.handlers import Handlers

from . import domain
from .domain import Change

if TYPE_CHECKING:
    from .service import LoyaltyService

SOURCE = "/services/loyalty"
GROUP = "crm-loyalty"
WHEN = {
    "crm.loyalty.points_earned": "earned_at",
    "crm.loyalty.points_redeemed": "redeemed_at",
    "crm.loyalty.points_expired": "expired_at",
    "crm.loyalty.points_expiring": "announced_at",
    "crm.loyalty.points_reversed": "reversed_at",
    "crm.loyalty.tier_changed": "changed_at",
}


def change_events(change: Change) -> list[dict[str, Any]]:
    return events_from_facts(
        change.facts, {"customer_id": change.account.customer_id}, source=SOURCE, when=WHEN
    )


# --- consumed: each handler returns the events its change publishes ------------------------------

CONSUMED: Handlers[LoyaltyService] = Handlers()
Session = AsyncIOMotorClientSession


@CONSUMED.on("crm.order.paid")
async def order_paid(loyalty: LoyaltyService, event: dict[str, Any], session: Session) -> list[dict]:
    d = event["data"]
    at = parse_rfc3339(event["time"])
    return await loyalty.earn(
        d["customer_id"], d["order_id"], d["amount_cents"], d["currency"], at, event["id"], session
    )


@CONSUMED.on("crm.order.returned")
async def order_returned(loyalty: LoyaltyService, event: dict[str, Any], session: Session) -> list[dict]:
    d, at = event["data"], parse_rfc3339(event["time"])
    return await loyalty.reverse(
        d["customer_id"], d["order_id"], d["amount_cents"], "return", at, event["id"], session
    )


@CONSUMED.on("crm.order.refunded")
async def order_refunded(loyalty: LoyaltyService, event: dict[str, Any], session: Session) -> list[dict]:
    d, at = event["data"], parse_rfc3339(event["time"])
    reason = domain.reversal_reason(d["reason"])
    if reason is None:
        return []
    return await loyalty.reverse(
        d["customer_id"], d["order_id"], d["amount_cents"], reason, at, event["id"], session
    )


@CONSUMED.on("crm.customer.registered")
async def customer_registered(loyalty: LoyaltyService, event: dict[str, Any], session: Session) -> list[dict]:
    d = event["data"]
    return await loyalty.registered(
        d["customer_id"], d.get("referred_by"), parse_rfc3339(event["time"]), session
    )
