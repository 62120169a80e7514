"""What the complaints service (the case desk) publishes on crm.complaints.v1; it consumes
nothing but erasures. Complaint events keep their names (`crm.complaint.*`); every other case
change is `crm.case.<verb>` (domain.event_type). Each carries the case's id, kind, customer,
assignee, team and category, so a timeline or a service report folds them without asking."""

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
    "crm.case.opened": "opened_at",
    "crm.case.assigned": "assigned_at",
    "crm.case.responded": "responded_at",
    "crm.case.awaiting_customer": "awaiting_at",
    "crm.case.escalated": "escalated_at",
    "crm.case.sla_warning": "warned_at",
    "crm.case.resolved": "resolved_at",
    "crm.case.reopened": "reopened_at",
    "crm.case.closed": "closed_at",
    "crm.case.decided": "decided_at",
    "crm.case.remedy_proposed": "proposed_at",
    "crm.case.remedy_approved": "approved_at",
    "crm.case.compensated": "compensated_at",
    "crm.case.confirmed": "confirmed_at",
}
CASE_EVENT_TYPES = tuple(t for t in WHEN if t.startswith("crm.case."))


def change_events(change: Change) -> list[dict[str, Any]]:
    c = change.complaint
    ids = {
        "case_id": c.complaint_id,
        "kind": c.kind,
        "customer_id": c.customer_id,
        "assignee": c.assignee,
        "team": c.team,
        "category": c.category,
    }
    facts = [
        (
            event_type,
            {"complaint_id": c.complaint_id, **data} if event_type.startswith("crm.complaint.") else data,
        )
        for event_type, data in change.facts
    ]
    return events_from_facts(facts, ids, source=SOURCE, when=WHEN)


def survey_event(survey: dict[str, Any]) -> dict[str, Any]:
    data = {
        k: survey[k] for k in ("survey_id", "complaint_id", "kind", "scores", "recommend", "submitted_at")
    }
    return events_from_facts(
        [("crm.survey.submitted", data)], {"customer_id": survey["customer_id"]}, source=SOURCE, when=WHEN
    )[0]
