"""What the profiles service publishes (crm.customers.v1, crm.interactions.v1) and consumes
(crm.signals.v1: churn warnings for the workflow, segment moves for the summary; orders,
complaints and surveys, loyalty and registrations and erasures: the 360 view's read model)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.common.clock import parse_rfc3339
from services.common.contracts import events_from_facts
from services.common.handlers import Handlers

from . import activity

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


# --- consumed: what the 360 view's read model folds (activity.py) ---------------------------------

# A group of its own, so the read model never waits behind the churn-warning workflow. The
# handler only gathers a batch's events by customer: ProfilesService.fold_activity folds them
# in one read and one bulk write per batch.
ACTIVITY_GROUP = "crm-profiles-activity"
FOLDED_INTO_ACTIVITY: Handlers[dict[str, list[dict[str, Any]]]] = Handlers()


@FOLDED_INTO_ACTIVITY.on(*activity.FOLDED)
async def gathered_for_activity(by_customer: dict[str, list[dict[str, Any]]], event: dict[str, Any]) -> None:
    by_customer.setdefault(event["data"]["customer_id"], []).append(event)
