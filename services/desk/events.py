"""What the desk publishes (crm.desk.v1: crm.note.added, crm.note.changed; crm.task.created,
reminded, overdue, completed) and consumes: every event about a customer on the orders,
complaints (cases and surveys), interactions, engagement, loyalty and desk topics becomes an
entry of the customer's timeline, and the case events and CSAT surveys feed the service
reports; a churn warning (crm.signals.v1) opens a churn-action task. Types are taken from the
schemas of those topics, so a new event type (the cases' `crm.case.*`) flows in once it has
its schema. Erasure is followed by services/common/erasure.py."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.common import topics
from services.common.contracts import build_event, jsonable, registry
from services.common.handlers import Handlers

from .domain import DeskError

if TYPE_CHECKING:
    from .service import DeskService

SOURCE = "/services/desk"
GROUP = "crm-desk"
TIMELINE_TOPICS = (
    topics.ORDERS,
    topics.COMPLAINTS,
    topics.INTERACTIONS,
    topics.ENGAGEMENT,
    topics.LOYALTY,
    topics.DESK,
)
CHURN_WARNING = "crm.profile.churn_warning"


def event(event_type: str, data: dict[str, Any], at: datetime) -> dict[str, Any]:
    """Validated once, when the outbox stores it."""
    return build_event(f"crm.{event_type}", jsonable(data), source=SOURCE, time=at, validate=False)


def note_event(event_type: str, note: dict[str, Any], at: datetime) -> dict[str, Any]:
    data = {
        "note_id": note["_id"],
        "customer_id": note["customer_id"],
        "text": note["text"],
        "pinned": note["pinned"],
        "author": note["author"],
    }
    return event(f"note.{event_type}", {**data, f"{event_type}_at": at}, at)


def task_event(event_type: str, task: dict[str, Any], at: datetime, **extra: Any) -> dict[str, Any]:
    data = {
        "task_id": task["_id"],
        "customer_id": task["customer_id"],
        "kind": task["kind"],
        "assignee": task["assignee"],
        "team": task["team"],
        "due_at": task["due_at"],
        **extra,
    }
    return event(f"task.{event_type}", {**data, f"{event_type}_at": at}, at)


def timeline_types() -> list[str]:
    known = []
    for event_type in registry().event_types():
        try:
            if topics.topic_for_type(event_type) in TIMELINE_TOPICS:
                known.append(event_type)
        except ValueError:  # a schema whose family no topic carries yet
            continue
    return known


# --- consumed --------------------------------------------------------------------------------------

CONSUMED: Handlers[DeskService] = Handlers()


@CONSUMED.on(*timeline_types())
async def happened(desk: DeskService, e: dict[str, Any], arrived: list[dict[str, Any]]) -> None:
    if not e["data"].get("customer_id"):  # a type of the future that names nobody: set aside
        raise DeskError(f"{e['type']} names no customer_id: it belongs on no timeline")
    arrived.append(e)  # stored with the rest of its batch (DeskService.handle_batch)


@CONSUMED.on(CHURN_WARNING)
async def churn_warning(desk: DeskService, e: dict[str, Any], arrived: list[dict[str, Any]]) -> None:
    await desk.churn_warned(e["data"])
