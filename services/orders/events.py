"""What the orders service publishes (crm.orders.v1); it consumes nothing."""

from __future__ import annotations

from typing import Any

from services.common.contracts import events_from_facts

from .domain import Change, Order

SOURCE = "/services/orders"

# The moment each event type happened, taken from its data.
WHEN = {
    "crm.order.placed": "placed_at",
    "crm.order.paid": "paid_at",
    "crm.order.shipped": "shipped_at",
    "crm.order.delivered": "delivered_at",
    "crm.order.cancelled": "cancelled_at",
    "crm.order.returned": "returned_at",
    "crm.order.refunded": "refunded_at",
}


def events_for(order: Order, facts: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return events_from_facts(
        facts, {"order_id": order.order_id, "customer_id": order.customer_id}, source=SOURCE, when=WHEN
    )


def change_events(change: Change) -> list[dict[str, Any]]:
    return events_for(change.order, change.facts)
