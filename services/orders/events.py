"""What the orders service publishes (crm.orders.v1); it consumes nothing."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from services.common.clock import to_rfc3339
from services.common.contracts import build_event

from .domain import Change, Order

SOURCE = "/services/orders"

# The moment each event type happened, taken from its data.
_WHEN = {
    "crm.order.placed": "placed_at",
    "crm.order.paid": "paid_at",
    "crm.order.shipped": "shipped_at",
    "crm.order.delivered": "delivered_at",
    "crm.order.cancelled": "cancelled_at",
    "crm.order.returned": "returned_at",
    "crm.order.refunded": "refunded_at",
}


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def events_for(order: Order, facts: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """CloudEvents for an order's facts, timed when each happened (historical times on import).
    Validation happens once, when the outbox stores them."""
    out = []
    for event_type, data in facts:
        body = {"order_id": order.order_id, "customer_id": order.customer_id, **_json(data)}
        out.append(build_event(event_type, body, source=SOURCE, time=data[_WHEN[event_type]], validate=False))
    return out


def change_events(change: Change) -> list[dict[str, Any]]:
    return events_for(change.order, change.facts)
