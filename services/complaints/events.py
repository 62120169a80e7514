"""What the complaints service publishes (crm.complaints.v1); it consumes nothing."""

from __future__ import annotations

from typing import Any

from services.common.contracts import events_from_facts

from .domain import Change

SOURCE = "/services/complaints"
WHEN = {
    "crm.complaint.opened": "opened_at",
    "crm.complaint.escalated": "escalated_at",
    "crm.complaint.resolved": "resolved_at",
    "crm.complaint.reopened": "reopened_at",
    "crm.complaint.closed": "closed_at",
    "crm.survey.submitted": "submitted_at",
}


def change_events(change: Change) -> list[dict[str, Any]]:
    c = change.complaint
    return events_from_facts(
        change.facts, {"complaint_id": c.complaint_id, "customer_id": c.customer_id}, source=SOURCE, when=WHEN
    )


def survey_event(survey: dict[str, Any]) -> dict[str, Any]:
    data = {
        k: survey[k] for k in ("survey_id", "complaint_id", "kind", "scores", "recommend", "submitted_at")
    }
    return events_from_facts(
        [("crm.survey.submitted", data)], {"customer_id": survey["customer_id"]}, source=SOURCE, when=WHEN
    )[0]
