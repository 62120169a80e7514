"""What the engagement service publishes (crm.engagement.v1: crm.message.sent, delivered,
failed, opened, clicked; crm.coupon.issued, redeemed, released) and consumes: the scorer's signals that
trigger campaigns (crm.signals.v1), loyalty's tier changes and points about to expire, registrations and consent
(crm.customers.v1, the contacts it reaches), and paid and cancelled orders (crm.orders.v1:
coupons redeemed or released, conversions measured). Erasure is followed by
services/common/erasure.py."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.common.clock import parse_rfc3339
from services.common.contracts import build_event, jsonable
from services.common.handlers import Handlers

from .domain import consent_from

if TYPE_CHECKING:
    from .service import EngagementService

SOURCE = "/services/engagement"
GROUP = "crm-engagement"


def event(event_type: str, data: dict[str, Any], at: datetime) -> dict[str, Any]:
    """Validated once, when the outbox stores it."""
    return build_event(f"crm.{event_type}", jsonable(data), source=SOURCE, time=at, validate=False)


def message_event(event_type: str, message: dict[str, Any], at: datetime, **data: Any) -> dict[str, Any]:
    ids = {
        "customer_id": message["customer_id"],
        "message_id": message["_id"],
        "campaign_id": message["campaign_id"],
        "channel": message["channel"],
    }
    return event(f"message.{event_type}", {**ids, **data}, at)


# --- consumed --------------------------------------------------------------------------------------

CONSUMED: Handlers[EngagementService] = Handlers()
# locale and time_zone choose the template's language and keep quiet hours in the customer's zone.
CONTACT_FIELDS = ("name", "email", "phone", "city", "gender", "birth_date", "locale", "time_zone")


@CONSUMED.on("crm.customer.registered")
async def registered(engagement: EngagementService, e: dict[str, Any]) -> None:
    d = e["data"]
    fields = {k: d.get(k) for k in CONTACT_FIELDS}
    await engagement.contact_changed(d["customer_id"], {**fields, "consent": consent_from(d)})


@CONSUMED.on("crm.customer.updated")
async def updated(engagement: EngagementService, e: dict[str, Any]) -> None:
    changes = {k: v for k, v in e["data"]["changes"].items() if k in CONTACT_FIELDS}
    if changes:
        await engagement.contact_changed(e["data"]["customer_id"], changes)


@CONSUMED.on("crm.customer.consent_changed")
async def consent_changed(engagement: EngagementService, e: dict[str, Any]) -> None:
    await engagement.contact_changed(e["data"]["customer_id"], {"consent": consent_from(e["data"])})


@CONSUMED.on("crm.profile.care_due")
async def care_due(engagement: EngagementService, e: dict[str, Any]) -> None:
    # Once a year: the occasion is this birthday's date.
    await engagement.signalled(
        "care_due", e["subject"], e["data"], e["data"]["date"], parse_rfc3339(e["time"])
    )


@CONSUMED.on("crm.profile.churn_warning")
async def churn_warning(engagement: EngagementService, e: dict[str, Any]) -> None:
    d = e["data"]
    await engagement.signalled("churn_warning", e["subject"], d, d["episode_id"], parse_rfc3339(e["time"]))


@CONSUMED.on("crm.profile.lifecycle_changed")
async def lifecycle_changed(engagement: EngagementService, e: dict[str, Any]) -> None:
    if e["data"]["to_stage"] == "decline":
        d = e["data"]
        await engagement.signalled(
            "lifecycle_decline", e["subject"], d, d["changed_at"], parse_rfc3339(e["time"])
        )


@CONSUMED.on("crm.loyalty.tier_changed")
async def tier_changed(engagement: EngagementService, e: dict[str, Any]) -> None:
    d = e["data"]
    await engagement.signalled("tier_changed", e["subject"], d, d["changed_at"], parse_rfc3339(e["time"]))


@CONSUMED.on("crm.loyalty.points_expiring")
async def points_expiring(engagement: EngagementService, e: dict[str, Any]) -> None:
    # Once per lot: loyalty announces each lot once, and the lot is the occasion.
    d = e["data"]
    await engagement.signalled("points_expiring", e["subject"], d, d["lot_id"], parse_rfc3339(e["time"]))


@CONSUMED.on("crm.profile.churn_recovered")
async def churn_recovered(engagement: EngagementService, e: dict[str, Any]) -> None:
    d = e["data"]
    await engagement.recovered(d["episode_id"], d["customer_id"], parse_rfc3339(d["recovered_at"]))


@CONSUMED.on("crm.order.paid")
async def order_paid(engagement: EngagementService, e: dict[str, Any]) -> None:
    d = e["data"]
    await engagement.order_paid(
        d["order_id"], d["customer_id"], d["amount_cents"], parse_rfc3339(d["paid_at"])
    )


@CONSUMED.on("crm.order.cancelled")
async def order_cancelled(engagement: EngagementService, e: dict[str, Any]) -> None:
    await engagement.order_cancelled(e["data"]["order_id"], parse_rfc3339(e["data"]["cancelled_at"]))
