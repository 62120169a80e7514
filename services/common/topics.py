"""The topic catalogue: which topic carries which event type."""

from __future__ import annotations

from .settings import Settings

ORDERS = "crm.orders.v1"
COMPLAINTS = "crm.complaints.v1"
INTERACTIONS = "crm.interactions.v1"
LOYALTY = "crm.loyalty.v1"
CUSTOMERS = "crm.customers.v1"
SIGNALS = "crm.signals.v1"
ENGAGEMENT = "crm.engagement.v1"
STAFF = "crm.staff.v1"
DESK = "crm.desk.v1"
DEADLETTER = "crm.deadletter.v1"
# Which dead letters `crm deadletters replay` sent back (services/stack/deadletters.py).
DEADLETTER_REPLAYS = "crm.deadletter.replays.v1"

ALL = (
    ORDERS,
    COMPLAINTS,
    INTERACTIONS,
    LOYALTY,
    CUSTOMERS,
    SIGNALS,
    ENGAGEMENT,
    STAFF,
    DESK,
    DEADLETTER,
    DEADLETTER_REPLAYS,
)
INPUTS = (ORDERS, COMPLAINTS, INTERACTIONS, LOYALTY, CUSTOMERS, ENGAGEMENT)

# Event type family (second dotted part of the type) -> topic.
_FAMILY_TOPIC = {
    "customer": CUSTOMERS,
    "order": ORDERS,
    "complaint": COMPLAINTS,
    "case": COMPLAINTS,  # cases of every kind (issue 21): the complaints service is the case desk
    "survey": COMPLAINTS,
    "interaction": INTERACTIONS,
    "loyalty": LOYALTY,
    "profile": SIGNALS,
    "message": ENGAGEMENT,
    "coupon": ENGAGEMENT,
    "staff": STAFF,
    "note": DESK,
    "task": DESK,
}


def topic_for_type(event_type: str) -> str:
    """'crm.order.paid' -> 'crm.orders.v1' (unprefixed)."""
    parts = event_type.split(".")
    if len(parts) != 3 or parts[0] != "crm" or parts[1] not in _FAMILY_TOPIC:
        raise ValueError(f"unknown event type {event_type!r}")
    return _FAMILY_TOPIC[parts[1]]


def physical(topic: str, settings: Settings) -> str:
    """The name on the broker: the configured prefix, then the catalogue name."""
    return f"{settings.topic_prefix}{topic}"
