"""What the loyalty service publishes (crm.loyalty.v1) and consumes (crm.orders.v1,
crm.customers.v1)."""

from __future__ import annotations

from typing import Any

from services.common import topics
from services.common.contracts import events_from_facts

from .domain import Change

SOURCE = "/services/loyalty"
CONSUMES = (topics.ORDERS, topics.CUSTOMERS)
GROUP = "crm-loyalty"
WHEN = {
    "crm.loyalty.points_earned": "earned_at",
    "crm.loyalty.points_redeemed": "redeemed_at",
    "crm.loyalty.points_expired": "expired_at",
    "crm.loyalty.points_reversed": "reversed_at",
    "crm.loyalty.tier_changed": "changed_at",
}


def change_events(change: Change) -> list[dict[str, Any]]:
    return events_from_facts(
        change.facts, {"customer_id": change.account.customer_id}, source=SOURCE, when=WHEN
    )
