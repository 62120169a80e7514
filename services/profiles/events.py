"""What the profiles service publishes (crm.customers.v1, crm.interactions.v1) and consumes
(crm.signals.v1: churn warnings for the workflow, segment moves for the summary)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.common import topics
from services.common.contracts import events_from_facts

SOURCE = "/services/profiles"
CONSUMES = (topics.SIGNALS,)
GROUP = "crm-profiles"
WHEN = {
    "crm.customer.registered": "registered_at",
    "crm.customer.updated": None,
    "crm.customer.consent_changed": None,
    "crm.customer.erased": None,
    "crm.interaction.recorded": "occurred_at",
}


def events_of(
    customer_id: str, facts: list[tuple[str, dict[str, Any]]], at: datetime
) -> list[dict[str, Any]]:
    return events_from_facts(facts, {"customer_id": customer_id}, source=SOURCE, when=WHEN, default_time=at)
