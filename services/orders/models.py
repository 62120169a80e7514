"""Request and response shapes of the orders API."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from services.common.clock import to_rfc3339
from services.common.fields import Cents, Channel, Currency, CustomerId, EntityId, PastTime, ShortText, Strict

from .domain import Order, allowed_actions


class ItemIn(Strict):
    sku: EntityId
    category: ShortText
    brand: ShortText
    qty: Annotated[int, Field(ge=1, le=10_000)]
    unit_price_cents: Annotated[int, Field(ge=0, le=100_000_000)]


class OrderIn(Strict):
    order_id: EntityId | None = Field(None, description="The shop's own id; generated when absent")
    customer_id: CustomerId
    items: Annotated[list[ItemIn], Field(min_length=1, max_length=500)]
    currency: Currency
    channel: Channel = "web"
    discount_cents: Cents = 0
    amount_cents: Cents | None = Field(None, description="If given, must equal items minus discount")
    promised_delivery_date: date | None = None
    placed_at: PastTime | None = Field(None, description="For history; defaults to now")
    coupon_code: Annotated[str, StringConstraints(min_length=4, max_length=40)] | None = Field(
        None,
        description="A coupon from engagement: its discount is added to discount_cents; it is "
        "redeemed when the order is paid and released when it is cancelled",
    )
    tier_benefits: bool = Field(
        False,
        description="Apply the customer's loyalty tier benefits, as loyalty states them now: the "
        "tier's discount percent of the total after the other discounts is added to "
        "discount_cents, and free shipping is marked on the order (`benefits`)",
    )


class At(Strict):
    at: PastTime | None = Field(None, description="When it happened; defaults to now")


class PayIn(At):
    amount_cents: Cents | None = Field(None, description="If given, must equal the order amount")


class ShipIn(At):
    carrier: ShortText | None = None
    tracking_number: ShortText | None = None


class CancelIn(At):
    reason: ShortText = "customer request"


class ReturnLineIn(Strict):
    sku: EntityId
    qty: Annotated[int, Field(ge=1, le=10_000)]


class ReturnIn(At):
    reason: ShortText
    items: Annotated[list[ReturnLineIn], Field(min_length=1, max_length=500)] | None = Field(
        None, description="Which items; everything not yet returned when absent"
    )


class RefundIn(At):
    amount_cents: Annotated[int, Field(ge=1, le=100_000_000_000)] | None = Field(
        None, description="Defaults to what returns are owed; otherwise a goodwill refund"
    )


class ImportLine(Strict):
    """One historical order. Its state is given by which times are present."""

    order_id: EntityId
    customer_id: CustomerId
    items: Annotated[list[ItemIn], Field(min_length=1, max_length=500)]
    currency: Currency
    channel: Channel = "import"
    discount_cents: Cents = 0
    amount_cents: Cents | None = None
    promised_delivery_date: date | None = None
    placed_at: PastTime
    paid_at: PastTime | None = None
    shipped_at: PastTime | None = None
    delivered_at: PastTime | None = None
    cancelled_at: PastTime | None = None
    returned_at: PastTime | None = None
    return_reason: ShortText = "historical return"


def present(order: Order) -> dict[str, Any]:
    """The order as the API shows it."""
    return {
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "status": order.status.value,
        "allowed_actions": [a.value for a in allowed_actions(order)],
        "items": [
            {
                "sku": i.sku,
                "category": i.category,
                "brand": i.brand,
                "qty": i.qty,
                "unit_price_cents": i.unit_price_cents,
                "net_cents": i.net_cents,
                "returned_qty": i.returned_qty,
            }
            for i in order.items
        ],
        "currency": order.currency,
        "channel": order.channel,
        "gross_cents": order.gross_cents,
        "discount_cents": order.discount_cents,
        "benefits": order.benefits,
        "amount_cents": order.amount_cents,
        "paid_cents": order.paid_cents,
        "returned_cents": order.returned_cents,
        "refunded_cents": order.refunded_cents,
        "promised_delivery_date": order.promised_delivery_date.isoformat()
        if order.promised_delivery_date
        else None,
        "late": order.late,
        "placed_at": to_rfc3339(order.placed_at),
        "history": [{**h, "at": to_rfc3339(h["at"])} for h in order.history],
        "version": order.version,
    }
