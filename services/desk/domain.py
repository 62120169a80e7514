"""The desk's rules, without I/O: notes and tasks (callbacks, churn actions) with their
reminders and overdue states, what one event becomes on the customer's timeline, the case fold
the service reports read, and the reports' figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from services.common.auth import assignee_problem
from services.common.clock import as_utc, parse_rfc3339, to_rfc3339
from services.common.errors import Kind, RuleBroken
from services.common.topics import topic_for_type


class DeskError(RuleBroken):
    """A note, task or report asked for in a way the desk refuses."""


# --- notes -------------------------------------------------------------------------------------


def new_note(note_id: str, customer_id: str, text: str, pinned: bool, author: str, now: datetime) -> dict:
    if not text.strip():
        raise DeskError("a note needs some text", field="text")
    return {
        "_id": note_id,
        "customer_id": customer_id,
        "text": text,
        "pinned": pinned,
        "author": author,
        "added_at": now,
        "changed_at": now,
        "erased": False,
    }


# --- tasks -------------------------------------------------------------------------------------

TASK_KINDS = ("callback", "churn_action", "follow_up")
# open: waiting for its time; due: its reminder went out; overdue: its time passed undone.
OPEN_STATES = ("open", "due", "overdue")


def new_task(
    task_id: str,
    customer_id: str,
    kind: str,
    title: str,
    due_at: datetime,
    assignee: str | None,
    team: str | None,
    created_by: str,
    now: datetime,
    remind_before: timedelta,
    case_id: str | None = None,
    episode_id: str | None = None,
) -> dict:
    if kind not in TASK_KINDS:
        raise DeskError(f"unknown task kind {kind!r}; one of {', '.join(TASK_KINDS)}", field="kind")
    due_at = as_utc(due_at)
    return {
        "_id": task_id,
        "customer_id": customer_id,
        "kind": kind,
        "title": title,
        "assignee": assignee,
        "team": team,
        "case_id": case_id,
        "episode_id": episode_id,
        "state": "open",
        "due_at": due_at,
        "due_s": due_at.timestamp(),
        # the reminder never goes before the task exists
        "remind_s": max(due_at - remind_before, now).timestamp(),
        "created_by": created_by,
        "created_at": now,
        "reminded_at": None,
        "overdue_at": None,
        "completed_at": None,
        "outcome": None,
        "erased": False,
    }


def task_status(task: dict, now: datetime) -> str:
    """The state an agent sees: a watcher moves the stored one, but a list read between its
    rounds already shows a task whose time came."""
    if task["state"] not in OPEN_STATES:
        return task["state"]
    t = now.timestamp()
    if t >= task["due_s"]:
        return "overdue"
    if t >= task["remind_s"]:
        return "due"
    return task["state"]


def complete(task: dict, outcome: str, by: str, now: datetime) -> dict:
    if task["state"] not in OPEN_STATES:
        raise DeskError(f"the task is already {task['state']}", Kind.CONFLICT, state=task["state"])
    return {"state": "done", "outcome": outcome, "completed_at": now, "completed_by": by}


def churn_task_id(episode_id: str) -> str:
    """One task per churn-warning episode, whatever is redelivered."""
    return f"t-churn-{episode_id}"


def churn_task_title(warning: dict) -> str:
    action = warning.get("recommended_action") or "call"
    reasons = ", ".join(str(r.get("code", r)) if isinstance(r, dict) else str(r) for r in warning["reasons"])
    return f"churn warning ({warning['level']}, risk {warning['risk']:.2f}): {action}" + (
        f"; {reasons}" if reasons else ""
    )


# --- task notices: the email a reminder or an overdue task sends ---------------------------------

# The watcher's verb -> the notice it owes (one email per task and notice, whatever restarts).
NOTICE_OF = {"reminded": "reminder", "overdue": "overdue"}
NOTICES = tuple(NOTICE_OF.values())


def pending_notice(notice: str) -> str:
    """The task's flag that its `notice` is still to be emailed (set with the watcher's move)."""
    return f"{notice}_notice_pending"


def notice_key(task_id: str, notice: str) -> str:
    """The engagement service's Idempotency-Key: a retry after a restart meets the first answer."""
    return f"task-{task_id}-{notice}"


def notice_recipient(task: dict, team_supervisors: list[str] | None) -> str | None:
    """Who is told: the assignee, or for a team's task the team's level-1 supervisor."""
    if task["assignee"]:
        return task["assignee"]
    return (team_supervisors or [None])[0]


def task_notice(task: dict, notice: str, locale: str | None) -> tuple[str, str]:
    """The email (subject, text) in the reader's language (the staff directory's locale)."""
    due = to_rfc3339(task["due_at"])
    whose = "" if task["assignee"] else f" ({task['team']})"
    if locale == "zh-CN":
        lead = "任务即将到期" if notice == "reminder" else "任务已逾期"
        subject = f"[{lead}] {task['title']}"
        text = (
            f"{lead}{whose}。\n\n任务：{task['_id']}（{task['kind']}）\n标题：{task['title']}\n"
            f"客户：{task['customer_id']}\n到期时间：{due}\n"
        )
    else:
        lead = "Task due soon" if notice == "reminder" else "Task overdue"
        subject = f"[{lead}] {task['title']}"
        text = (
            f"{lead}{whose}.\n\nTask: {task['_id']} ({task['kind']})\nTitle: {task['title']}\n"
            f"Customer: {task['customer_id']}\nDue: {due}\n"
        )
    if task.get("case_id"):
        text += f"Case: {task['case_id']}\n"
    return subject, text


def assignee_refusal(
    user_id: str, status: str, user: dict | None, code: int | None = None
) -> DeskError | None:
    """Whether the staff directory's answer about `user_id` (a peers.Answer's status, body and
    HTTP code) lets them be an assignee; the rule is auth.assignee_problem. None when it does.
    A 4xx other than 404 (an id no login can be) names nobody, like a 404."""
    if status == "unavailable" and not (code is not None and 400 <= code < 500):
        return DeskError(
            "the staff directory did not answer, so the assignee cannot be checked; try again",
            Kind.UNAVAILABLE,
            field="assignee",
        )
    problem = assignee_problem(user_id, user if status == "ok" else None)
    return None if problem is None else DeskError(problem, field="assignee")


# --- the customer timeline ---------------------------------------------------------------------

# Data fields that may describe the person in their own or an agent's words: kept apart in an
# entry so erasure can drop them and keep the rest (what happened, when, the amounts).
PERSONAL_FIELDS = frozenset(
    {
        "text",
        "title",
        "resolution",
        "reason",
        "remedy",
        "outcome",
        "attributes",
        "url",
        "name",
        "email",
        "phone",
        "by",
    }
)
# The entity an entry is about, by event family; a new family's `<family>_id` is found alone.
SUBJECT_KEYS = {"loyalty": "entry_id"}


def family_of(event_type: str) -> str:
    return event_type.split(".")[1]


def occurred_at(event: dict) -> datetime:
    """When it happened: the data's own `<verb>_at` (placed_at, resolved_at, points earned_at),
    else `occurred_at`, else the event's time."""
    data = event["data"]
    verb = event["type"].split(".")[2]
    for name in (f"{verb}_at", f"{verb.rsplit('_', 1)[-1]}_at", "occurred_at"):
        value = data.get(name)
        if isinstance(value, str):
            return parse_rfc3339(value)
    return parse_rfc3339(event["time"])


def timeline_entry(event: dict, erased: bool = False) -> dict:
    """One event as a timeline entry. `erased`: the customer was erased before it arrived, so
    it is kept without its personal content."""
    data = event["data"]
    family = family_of(event["type"])
    at = occurred_at(event)
    personal = {k: v for k, v in data.items() if k in PERSONAL_FIELDS}
    summary = {k: v for k, v in data.items() if k not in PERSONAL_FIELDS and k != "customer_id"}
    return {
        "_id": event["id"],
        "event_id": event["id"],
        "customer_id": data["customer_id"],
        "type": event["type"],
        "source": topic_for_type(event["type"]),
        "subject": data.get(SUBJECT_KEYS.get(family, f"{family}_id")),
        "at": at,
        "at_s": at.timestamp(),
        "summary": summary,
        "personal": {} if erased else personal,
        "erased": erased,
    }


# --- the case fold -----------------------------------------------------------------------------

CASE_FAMILIES = ("complaint", "case")
OPENED = frozenset({"opened"})
# Verbs that are the desk's first answer to the customer; a resolution answers too.
RESPONDED = frozenset({"responded", "answered", "first_responded"})
RESOLVED = frozenset({"resolved", "answered"})
REOPENED = frozenset({"reopened"})
ESCALATED = frozenset({"escalated"})
COMPENSATED = frozenset({"compensated", "compensation_paid"})
# What a case's events may tell the reports; anything else (texts) is never kept.
CASE_FIELDS = (
    "kind",
    "assignee",
    "team",
    "category",
    "department",
    "root_cause",
    "severity",
    "channel",
    "first_response_due",
    "resolution_due",
    "within_sla",
    "amount_cents",
    "compensation_cents",
    "compensation_id",
)


def case_record(event: dict) -> dict | None:
    """What one event adds to a case's history, or None when it is about no case. Complaint
    events are cases of kind complaint; `crm.case.*` events name their kind; a CSAT survey
    belongs to the case it rates. New verbs and kinds are kept as they come: the fold reads
    those it knows."""
    data = event["data"]
    family = family_of(event["type"])
    if family in CASE_FAMILIES:
        case_id = data.get("case_id") or data.get("complaint_id")
    elif family == "survey" and data.get("kind") == "csat":
        case_id = data.get("case_id") or data.get("complaint_id")
    else:
        return None
    if not case_id:
        return None
    at = occurred_at(event)
    record: dict[str, Any] = {
        "_id": event["id"],
        "case_id": case_id,
        "customer_id": data["customer_id"],
        "verb": "survey" if family == "survey" else event["type"].split(".")[2],
        "at": at,
        "at_s": at.timestamp(),
    }
    fields = {k: data[k] for k in CASE_FIELDS if data.get(k) is not None}
    if family == "complaint":
        fields.setdefault("kind", "complaint")
    if family == "survey":
        fields = {"score": data["scores"].get("overall")}
    record["fields"] = fields
    return record


@dataclass
class CaseFacts:
    case_id: str
    opened_at: datetime | None = None
    kind: str | None = None
    agent: str | None = None
    team: str | None = None
    category: str | None = None
    department: str | None = None
    root_cause: str | None = None
    resolution_due: datetime | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    within_sla: bool | None = None  # as the case service judged it (business hours, pauses)
    reopened: bool = False
    escalated: bool = False
    compensation_cents: int = 0
    csat: list[int] = field(default_factory=list)

    def value(self, dimension: str) -> str:
        return getattr(self, dimension) or UNASSIGNED.get(dimension, "unknown")


def fold_case(case_id: str, records: list[dict]) -> CaseFacts:
    """A case's history folded in time order (ties by event id, so redelivery and reordering
    give the same facts)."""
    facts = CaseFacts(case_id)
    paid: set[str] = set()
    for r in sorted(records, key=lambda r: (r["at_s"], r["_id"])):
        f, verb, at = r["fields"], r["verb"], as_utc(r["at"])
        for name in ("kind", "team", "category", "department", "root_cause"):
            if f.get(name):
                setattr(facts, name, f[name])
        if f.get("assignee"):
            facts.agent = f["assignee"]
        if f.get("resolution_due"):
            facts.resolution_due = parse_rfc3339(f["resolution_due"])
        if verb in OPENED and facts.opened_at is None:
            facts.opened_at = at
        if verb in RESPONDED | RESOLVED and facts.first_response_at is None:
            facts.first_response_at = at
        if verb in RESOLVED:
            facts.resolved_at = facts.resolved_at or at
            if "within_sla" in f:
                facts.within_sla = facts.within_sla is not False and bool(f["within_sla"])
        if verb in REOPENED:
            facts.reopened = True
        if verb in ESCALATED:
            facts.escalated = True
        if verb in COMPENSATED:
            payment = f.get("compensation_id") or r["_id"]
            if payment not in paid:
                paid.add(payment)
                facts.compensation_cents += int(f.get("amount_cents") or f.get("compensation_cents") or 0)
        if verb == "survey" and f.get("score") is not None:
            facts.csat.append(int(f["score"]))
    return facts


def sla_met(facts: CaseFacts, as_of: datetime) -> bool | None:
    """Whether the case met its resolution target: the case service's own judgement when it
    gave one, else resolved by the due time; an open case counts once its time has passed."""
    if facts.resolved_at is not None:
        if facts.within_sla is not None:
            return facts.within_sla
        if facts.resolution_due is not None:
            return facts.resolved_at <= facts.resolution_due
        return None
    if facts.resolution_due is not None and as_of > facts.resolution_due:
        return False
    return None


# --- service reports ---------------------------------------------------------------------------

DIMENSIONS = ("agent", "team", "kind", "category", "department", "root_cause")
UNASSIGNED = {"agent": "unassigned", "team": "unassigned"}


def report_dimension(by: str | None) -> str:
    by = by or "kind"
    if by not in DIMENSIONS:
        raise DeskError(f"unknown dimension {by!r}; one of {', '.join(DIMENSIONS)}", field="by")
    return by


def percentiles(hours: list[float]) -> dict[str, float | None]:
    if not hours:
        return {"p50": None, "p90": None}
    p50, p90 = np.percentile(np.array(hours, dtype=float), [50, 90])
    return {"p50": round(float(p50), 2), "p90": round(float(p90), 2)}


def _hours(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds() / 3600


def figures(cases: list[CaseFacts], as_of: datetime) -> dict[str, Any]:
    """Volume, first response and resolution times, SLA compliance, reopen rate, compensation
    paid and CSAT of a group of cases."""
    first = [h for c in cases if (h := _hours(c.opened_at, c.first_response_at)) is not None]
    resolution = [h for c in cases if (h := _hours(c.opened_at, c.resolved_at)) is not None]
    judged = [m for c in cases if (m := sla_met(c, as_of)) is not None]
    resolved = [c for c in cases if c.resolved_at is not None]
    reopened = sum(1 for c in cases if c.reopened)
    scores = [s for c in cases for s in c.csat]
    return {
        "cases": len(cases),
        "resolved": len(resolved),
        "first_response_hours": percentiles(first),
        "resolution_hours": percentiles(resolution),
        "sla": {
            "met": sum(judged),
            "breached": len(judged) - sum(judged),
            "compliance": round(sum(judged) / len(judged), 4) if judged else None,
        },
        "reopened": reopened,
        "reopen_rate": round(reopened / len(resolved), 4) if resolved else None,
        "escalated": sum(1 for c in cases if c.escalated),
        "compensation_cents": sum(c.compensation_cents for c in cases),
        "csat": {
            "responses": len(scores),
            "average": round(sum(scores) / len(scores), 3) if scores else None,
            "satisfied_share": round(sum(1 for s in scores if s >= 4) / len(scores), 4) if scores else None,
        },
    }


def service_report(cases: list[CaseFacts], by: str, as_of: datetime) -> dict[str, Any]:
    """The cases grouped by one dimension, busiest first, and the period's total."""
    groups: dict[str, list[CaseFacts]] = {}
    for c in cases:
        groups.setdefault(c.value(by), []).append(c)
    rows = [{by: value, **figures(group, as_of)} for value, group in groups.items()]
    rows.sort(key=lambda row: (-row["cases"], row[by]))
    return {"by": by, "rows": rows, "total": figures(cases, as_of)}
