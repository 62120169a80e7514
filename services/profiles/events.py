"""What the profiles service publishes (crm.customers.v1, crm.interactions.v1) and consumes
(crm.signals.v1: churn warnings for the workflow, segment moves for the summary)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.common.clock import parse_rfc3339
from services.common.contracts import events_from_facts
from services.common.handlers import Handlers

if TYPE_CHECKING:
    from .service import ProfilesService

SOURCE = "/services/profiles"
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


# --- consumed: the scorer's signals --------------------------------------------------------------

CONSUMED: Handlers[ProfilesService] = Handlers()


@CONSUMED.on("crm.profile.churn_warning")
async def churn_warning(profiles: ProfilesService, event: dict[str, Any]) -> None:
    await profiles.warned(event["subject"], event["data"])


@CONSUMED.on("crm.profile.churn_recovered")
async def churn_recovered(profiles: ProfilesService, event: dict[str, Any]) -> None:
    data = event["data"]
    await profiles.recovered(data["episode_id"], parse_rfc3339(data["recovered_at"]), data.get("ended_by"))


@CONSUMED.on("crm.profile.segment_changed")
async def segment_changed(profiles: ProfilesService, event: dict[str, Any]) -> None:
    await profiles.segment_moved(event["id"], event["subject"], event["data"])
