"""What the scorer consumes (every input topic, crm.*.v1) and publishes (crm.signals.v1:
segment and lifecycle changes, churn warnings and recoveries, care due)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.common import topics
from services.common.contracts import encode, events_from_facts, registry

SOURCE = "/services/scoring"
CONSUMES = topics.INPUTS
GROUP = "crm-scoring"  # the faust app id, without the topic prefix
WHEN = {
    "crm.profile.segment_changed": "changed_at",
    "crm.profile.lifecycle_changed": "changed_at",
    "crm.profile.churn_warning": "warned_at",
    "crm.profile.churn_recovered": "recovered_at",
    "crm.profile.care_due": None,
}


def signal_events(customer_id: str, signals: list[tuple[str, dict[str, Any]]], now: datetime) -> list[str]:
    """The profile build's signals as encoded events (text: see store.encode_facts), each
    validated: a signal that breaks its contract is a bug here, not downstream."""
    schemas = registry()
    encoded = []
    for event in events_from_facts(
        signals, {"customer_id": customer_id}, source=SOURCE, when=WHEN, default_time=now
    ):
        schemas.validate(event)
        encoded.append(encode(event).decode())
    return encoded
