"""Request and response shapes of the complaints (case desk) API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, StringConstraints

from services.common.clock import to_rfc3339
from services.common.fields import Channel, CustomerId, EntityId, ShortText, Strict

from . import domain
from .domain import Complaint, SlaPolicy

Category = Literal["product", "logistics", "payment", "service", "website", "other"]
Severity = Literal["low", "medium", "high", "critical"]
Score = Annotated[int, Field(ge=1, le=5)]
Description = Annotated[str, StringConstraints(max_length=5000)]
Resolution = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class ComplaintIn(Strict):
    customer_id: CustomerId
    category: Category
    severity: Severity
    channel: Channel = "web"
    order_id: EntityId | None = None
    description: Description = ""
    vip: bool | None = Field(
        None, description="Override; by default VIP comes from the customer's live profile"
    )


Kind = Literal["inquiry", "suggestion", "complaint", "praise"]


class CaseIn(Strict):
    """One intake for every kind: what the customer said, where, about what."""

    kind: Kind
    channel: Channel = "web"
    customer_id: CustomerId
    order_id: EntityId | None = None
    category: Category
    text: Description = ""
    severity: Severity | None = Field(None, description="Complaints only (and then required)")
    team: EntityId | None = Field(None, description="The team that takes it (the staff directory's team id)")
    vip: bool | None = Field(
        None, description="Override; by default VIP comes from the customer's live profile"
    )


class AssignIn(Strict):
    assignee: ShortText


class NoteIn(Strict):
    note: ShortText | None = None


class ResolveIn(Strict):
    resolution: Resolution


class ReopenIn(Strict):
    reason: ShortText


class DecisionIn(Strict):
    valid: bool
    reason: Resolution
    department: ShortText | None = Field(None, description="Required for a valid complaint")
    root_cause: ShortText | None = Field(None, description="A code of the catalogue (GET /cases/catalogue)")


Points = Annotated[int, Field(ge=1, le=10_000_000)]
AmountCents = Annotated[int, Field(ge=1, le=100_000_000)]


class RefundComp(Strict):
    type: Literal["refund"]
    amount_cents: AmountCents = Field(description="A goodwill refund on the complaint's order")


class PointsComp(Strict):
    type: Literal["points"]
    points: Points


class CouponComp(Strict):
    type: Literal["coupon"]
    amount_cents: AmountCents = Field(description="Cents off the customer's next order")
    min_spend_cents: Annotated[int, Field(ge=0, le=100_000_000)] = 0
    valid_days: Annotated[int, Field(ge=1, le=365)] = 30


Compensation = Annotated[RefundComp | PointsComp | CouponComp, Discriminator("type")]


class RemedyIn(Strict):
    description: Resolution
    compensations: Annotated[list[Compensation], Field(max_length=5)] = []


class ConfirmIn(Strict):
    satisfied: bool
    note: ShortText | None = None


class Scores(Strict):
    website: Score | None = None
    product: Score | None = None
    payment: Score | None = None
    service: Score | None = None
    logistics: Score | None = None
    overall: Score | None = None


class SurveyIn(Strict):
    customer_id: CustomerId
    complaint_id: EntityId | None = Field(
        None, description="Set for the CSAT survey after a resolved complaint"
    )
    scores: Scores
    recommend: Annotated[int, Field(ge=0, le=10)] | None = None


def _ts(value: datetime | None) -> str | None:
    return to_rfc3339(value) if value else None


def _dated(part: dict[str, Any] | None) -> dict[str, Any] | None:
    if part is None:
        return None
    return {k: (to_rfc3339(v) if isinstance(v, datetime) else v) for k, v in part.items()}


def present(c: Complaint, policy: SlaPolicy, now: datetime) -> dict[str, Any]:
    due = domain.deadlines(c, policy)
    active = c.status in domain.ACTIVE
    deadline = domain.due_at(c, policy)
    return {
        "case_id": c.complaint_id,
        "complaint_id": c.complaint_id,
        "kind": c.kind,
        "team": c.team,
        "customer_id": c.customer_id,
        "category": c.category,
        "severity": c.severity,
        "channel": c.channel,
        "order_id": c.order_id,
        "description": c.description,
        "status": c.status.value,
        "allowed_actions": domain.allowed_actions(c),
        "assignee": c.assignee,
        "vip": c.vip,
        "escalation_level": c.level,
        "reopen_count": c.reopen_count,
        "opened_at": _ts(c.opened_at),
        "first_response_at": _ts(c.first_response_at),
        "resolved_at": _ts(c.resolved_at),
        "closed_at": _ts(c.closed_at),
        "resolution": c.resolution,
        "sla": {
            "first_response_target_hours": c.targets.first_response_hours,
            "resolution_target_hours": c.targets.resolution_hours,
            "first_response_due": _ts(due[domain.FIRST_RESPONSE]),
            "resolution_due": _ts(due[domain.RESOLUTION]) if active else None,
            "paused": c.paused and active,
            "elapsed_hours": round(
                domain.elapsed(c, now if active else (c.resolved_at or now), policy.calendar) / 3600, 3
            ),
            "breaches": list(c.breaches),
            "warnings": list(c.warnings),
            "due": _ts(deadline),
            # business time does not count here: the wall-clock hours to the deadline, as a
            # queue sorts by them (negative once it has passed)
            "time_left_hours": round((deadline - now).total_seconds() / 3600, 3) if deadline else None,
            "first_response_hours": c.first_response_hours,
            "resolution_hours": c.resolution_hours,
            "resolved_within_sla": c.resolved_within_sla,
        },
        "survey_id": c.survey_id,
        "procedure": {
            "decision": _dated(c.decision),
            "remedy": _dated(c.remedy),
            "confirmation": _dated(c.confirmation),
            "needs_confirmation": domain.needs_confirmation(c),
        }
        if c.kind == domain.COMPLAINT
        else None,
        "supervision_due": c.supervision_due,
        "history": [{**h, "at": to_rfc3339(h["at"])} for h in c.history],
        "version": c.version,
    }


def present_survey(s: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (to_rfc3339(v) if isinstance(v, datetime) else v)
        for k, v in s.items()
        if k not in ("_id", "submitted_ts")
    }
