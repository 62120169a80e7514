"""Complaint rules: business time, states, SLA targets and clocks, escalation on breach,
surveys. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from services.common.contracts import SATISFACTION_DIMENSIONS
from services.common.errors import Kind, RuleBroken
from services.common.vocabulary import LoyaltyTier

# --- business time: which hours count toward an SLA ------------------------------------------

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Calendar:
    """Opening hours per weekday in a time zone, minus holidays. `hours` None: around the clock."""

    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    hours: dict[int, tuple[time, time]] | None = None
    holidays: frozenset[date] = frozenset()

    @classmethod
    def from_config(cls, config: dict | None) -> Calendar:
        """{"timezone": "Asia/Shanghai", "hours": {"mon": ["09:00", "18:00"], ...}, "holidays": ["2026-10-01"]}"""
        if not config:
            return cls()
        hours = None
        if config.get("hours"):
            hours = {}
            for name, span in config["hours"].items():
                opens, closes = time.fromisoformat(span[0]), time.fromisoformat(span[1])
                if closes <= opens:
                    raise ValueError(f"business hours on {name}: {span[1]} is not after {span[0]}")
                hours[DAYS.index(name.lower()[:3])] = (opens, closes)
        return cls(
            ZoneInfo(config.get("timezone", "UTC")),
            hours,
            frozenset(date.fromisoformat(d) for d in config.get("holidays", [])),
        )

    @property
    def always_open(self) -> bool:
        return self.hours is None and not self.holidays

    def _open_spans(self, start: datetime, end: datetime):
        """(open, close) UTC spans that overlap [start, end), clipped to it."""
        local_day = start.astimezone(self.tz).date() - timedelta(days=1)
        last_day = end.astimezone(self.tz).date()
        while local_day <= last_day:
            if local_day not in self.holidays:
                span = (time(0), None) if self.hours is None else self.hours.get(local_day.weekday())
                if span is not None:
                    opens = datetime.combine(local_day, span[0], self.tz).astimezone(UTC)
                    closes = (
                        datetime.combine(local_day + timedelta(days=1), time(0), self.tz)
                        if span[1] is None
                        else datetime.combine(local_day, span[1], self.tz)
                    ).astimezone(UTC)
                    lo, hi = max(opens, start), min(closes, end)
                    if lo < hi:
                        yield lo, hi
            local_day += timedelta(days=1)

    def seconds_between(self, start: datetime, end: datetime) -> float:
        if end <= start:
            return 0.0
        if self.always_open:
            return (end - start).total_seconds()
        return sum((hi - lo).total_seconds() for lo, hi in self._open_spans(start, end))

    def add(self, start: datetime, seconds: float) -> datetime:
        """The moment `seconds` of business time after `start`."""
        if self.always_open:
            return start + timedelta(seconds=seconds)
        if self.hours is not None and not self.hours:
            raise ValueError("a calendar with no opening hours never reaches a deadline")
        left = seconds
        window_start = start
        while True:
            window_end = window_start + timedelta(days=14)
            for lo, hi in self._open_spans(window_start, window_end):
                span = (hi - lo).total_seconds()
                if span >= left:
                    return lo + timedelta(seconds=left)
                left -= span
            window_start = window_end


# --- complaints ---------------------------------------------------------------------------


class Status(StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    AWAITING_CUSTOMER = "awaiting_customer"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Action(StrEnum):
    ASSIGN = "assign"
    AWAIT_CUSTOMER = "await-customer"
    RESOLVE = "resolve"
    CLOSE = "close"
    REOPEN = "reopen"
    ESCALATE = "escalate"


ACTIVE = (Status.OPEN, Status.ASSIGNED, Status.AWAITING_CUSTOMER)
TRANSITIONS: dict[Status, tuple[Action, ...]] = {
    Status.OPEN: (Action.ASSIGN, Action.RESOLVE, Action.ESCALATE),
    Status.ASSIGNED: (Action.ASSIGN, Action.AWAIT_CUSTOMER, Action.RESOLVE, Action.ESCALATE),
    # Assigning again means the customer answered and work resumes.
    Status.AWAITING_CUSTOMER: (Action.ASSIGN, Action.RESOLVE, Action.ESCALATE),
    Status.RESOLVED: (Action.CLOSE, Action.REOPEN),
    Status.CLOSED: (Action.REOPEN,),
}
MAX_LEVEL = 3


class ComplaintError(RuleBroken):
    """A complaint or survey rule was broken."""


def no_complaint(complaint_id: str) -> ComplaintError:
    return ComplaintError(f"no complaint {complaint_id}", Kind.NOT_FOUND)


@dataclass(frozen=True)
class Targets:
    first_response_hours: float
    resolution_hours: float


@dataclass(frozen=True)
class SlaPolicy:
    """Targets by severity, tighter for VIP customers; business time from the calendar;
    reopening allowed for `reopen_days` after resolution."""

    standard: dict[str, Targets]
    vip: dict[str, Targets]
    calendar: Calendar = field(default_factory=Calendar)
    reopen_days: float = 14.0
    vip_abc_classes: frozenset[str] = frozenset({"A"})
    vip_tiers: frozenset[str] = frozenset({LoyaltyTier.GOLD, LoyaltyTier.PLATINUM})

    def targets(self, severity: str, vip: bool) -> Targets:
        return (self.vip if vip else self.standard)[severity]

    def is_vip(self, abc_class: str | None, tier: str | None) -> bool:
        return abc_class in self.vip_abc_classes or tier in self.vip_tiers

    @classmethod
    def default(cls) -> SlaPolicy:
        return cls.from_config({})

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SlaPolicy:
        """The [sla] table of the policy file; anything left out keeps its default."""
        standard = {"critical": (1, 8), "high": (4, 24), "medium": (8, 72), "low": (24, 120)}
        vip = {"critical": (0.5, 4), "high": (2, 12), "medium": (4, 36), "low": (12, 72)}
        for name, table in (("standard", standard), ("vip", vip)):
            for severity, values in config.get(name, {}).items():
                if severity not in table:
                    raise ValueError(f"unknown severity {severity!r} in [{name}]")
                table[severity] = (values["first_response_hours"], values["resolution_hours"])
        return cls(
            {k: Targets(*v) for k, v in standard.items()},
            {k: Targets(*v) for k, v in vip.items()},
            Calendar.from_config(config.get("calendar")),
            float(config.get("reopen_days", 14)),
            frozenset(config.get("vip_abc_classes", ["A"])),
            frozenset(config.get("vip_tiers", cls.vip_tiers)),
        )


@dataclass(frozen=True)
class Complaint:
    complaint_id: str
    customer_id: str
    category: str
    severity: str
    channel: str
    order_id: str | None
    description: str
    vip: bool
    opened_at: datetime
    targets: Targets
    status: Status = Status.OPEN
    assignee: str | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    resolution: str | None = None
    level: int = 0
    # Periods the SLA clock stands still: awaiting the customer, and resolved-then-reopened.
    pauses: tuple[tuple[datetime, datetime | None], ...] = ()
    breaches: tuple[str, ...] = ()
    reopen_count: int = 0
    first_response_hours: float | None = None  # SLA (business) hours, fixed when they happen
    resolution_hours: float | None = None
    resolved_within_sla: bool | None = None
    survey_id: str | None = None
    history: tuple[dict[str, Any], ...] = ()
    version: int = 0

    @property
    def paused(self) -> bool:
        return bool(self.pauses) and self.pauses[-1][1] is None


@dataclass(frozen=True)
class ComplaintFilters:
    """Which complaints a list asks for; None leaves a criterion out. Opened in [from, to)."""

    status: Status | None = None
    category: str | None = None
    severity: str | None = None
    breached: bool | None = None
    assignee: str | None = None
    customer_id: str | None = None
    opened_from: datetime | None = None
    opened_to: datetime | None = None


@dataclass(frozen=True)
class Change:
    complaint: Complaint
    facts: list[tuple[str, dict[str, Any]]]


# Breach kinds, in the order they can happen; each escalates one level.
FIRST_RESPONSE = "first_response_breach"
RESOLUTION = "resolution_breach"
OVERDUE = "resolution_overdue"  # still unresolved at twice the resolution target
BREACH_REASON = {
    FIRST_RESPONSE: "first_response_breach",
    RESOLUTION: "resolution_breach",
    OVERDUE: "resolution_breach",
}


def open_complaint(
    *,
    complaint_id: str,
    customer_id: str,
    category: str,
    severity: str,
    channel: str,
    order_id: str | None,
    description: str,
    vip: bool,
    at: datetime,
    policy: SlaPolicy,
    by: str,
) -> Change:
    targets = policy.targets(severity, vip)
    complaint = Complaint(
        complaint_id,
        customer_id,
        category,
        severity,
        channel,
        order_id,
        description,
        vip,
        at,
        targets,
        history=({"action": "open", "at": at, "by": by, "to": Status.OPEN.value},),
    )
    due = deadlines(complaint, policy)
    return Change(
        complaint,
        [
            (
                "crm.complaint.opened",
                {
                    "category": category,
                    "severity": severity,
                    "channel": channel,
                    "order_id": order_id,
                    "opened_at": at,
                    "first_response_due": due[FIRST_RESPONSE],
                    "resolution_due": due[RESOLUTION],
                    "vip": vip,
                },
            )
        ],
    )


def allowed_actions(complaint: Complaint) -> list[str]:
    actions = list(TRANSITIONS[complaint.status])
    if Action.ESCALATE in actions and complaint.level >= MAX_LEVEL:
        actions.remove(Action.ESCALATE)
    return [a.value for a in actions]


def _check(complaint: Complaint, action: Action, at: datetime) -> None:
    if action.value not in allowed_actions(complaint):
        allowed = allowed_actions(complaint)
        raise ComplaintError(
            f"cannot {action.value} a complaint that is {complaint.status.value}"
            + (
                " at the top escalation level"
                if action is Action.ESCALATE and complaint.level >= MAX_LEVEL
                else ""
            )
            + f"; allowed now: {', '.join(allowed) or 'nothing'}",
            Kind.CONFLICT,
            current_status=complaint.status.value,
            allowed=allowed,
        )
    last = complaint.history[-1]["at"] if complaint.history else complaint.opened_at
    if at < last:
        raise ComplaintError(f"time {at.isoformat()} is before the complaint's last change", field="at")


def _moved(
    c: Complaint,
    action: Action,
    at: datetime,
    by: str,
    to: Status,
    note: str | None = None,
    calendar: Calendar | None = None,
    **changes: Any,
) -> Complaint:
    entry = {"action": action.value, "at": at, "by": by, "from": c.status.value, "to": to.value}
    if note:
        entry["note"] = note
    if c.first_response_at is None and action in (Action.ASSIGN, Action.AWAIT_CUSTOMER, Action.RESOLVE):
        # The first time an agent acts on it is the first response.
        changes["first_response_at"] = at
        changes["first_response_hours"] = round(
            (calendar or Calendar()).seconds_between(c.opened_at, at) / 3600, 3
        )
    return replace(c, status=to, history=(*c.history, entry), **changes)


def _pause(c: Complaint, at: datetime) -> tuple:
    return c.pauses if c.paused else (*c.pauses, (at, None))


def _resume(c: Complaint, at: datetime) -> tuple:
    return (*c.pauses[:-1], (c.pauses[-1][0], at)) if c.paused else c.pauses


def assign(c: Complaint, at: datetime, assignee: str, by: str, calendar: Calendar | None = None) -> Change:
    _check(c, Action.ASSIGN, at)
    return Change(
        _moved(
            c,
            Action.ASSIGN,
            at,
            by,
            Status.ASSIGNED,
            f"to {assignee}",
            calendar,
            assignee=assignee,
            pauses=_resume(c, at),
        ),
        [],
    )


def await_customer(
    c: Complaint, at: datetime, by: str, note: str | None, calendar: Calendar | None = None
) -> Change:
    _check(c, Action.AWAIT_CUSTOMER, at)
    return Change(
        _moved(
            c, Action.AWAIT_CUSTOMER, at, by, Status.AWAITING_CUSTOMER, note, calendar, pauses=_pause(c, at)
        ),
        [],
    )


def resolve(c: Complaint, at: datetime, resolution: str, by: str, policy: SlaPolicy) -> Change:
    _check(c, Action.RESOLVE, at)
    resumed = replace(c, pauses=_resume(c, at))
    hours = elapsed(resumed, at, policy.calendar) / 3600
    within = hours <= c.targets.resolution_hours and RESOLUTION not in c.breaches
    # A resolved complaint's clock stands still until (and unless) it is reopened.
    done = _moved(
        resumed,
        Action.RESOLVE,
        at,
        by,
        Status.RESOLVED,
        None,
        policy.calendar,
        resolved_at=at,
        resolution=resolution,
        pauses=(*resumed.pauses, (at, None)),
        resolution_hours=round(hours, 3),
        resolved_within_sla=within,
    )
    return Change(
        done,
        [
            (
                "crm.complaint.resolved",
                {
                    "resolved_at": at,
                    "resolution": resolution,
                    "within_sla": within,
                    "resolution_hours": round(hours, 3),
                },
            )
        ],
    )


def close(c: Complaint, at: datetime, by: str) -> Change:
    _check(c, Action.CLOSE, at)
    return Change(
        _moved(c, Action.CLOSE, at, by, Status.CLOSED, closed_at=at),
        [("crm.complaint.closed", {"closed_at": at})],
    )


def reopen(c: Complaint, at: datetime, reason: str, by: str, policy: SlaPolicy) -> Change:
    _check(c, Action.REOPEN, at)
    window_end = c.resolved_at + timedelta(days=policy.reopen_days)
    if at > window_end:
        raise ComplaintError(
            f"the reopen window ({policy.reopen_days:g} days after resolution) ended "
            f"{window_end.isoformat()}; open a new complaint",
            Kind.CONFLICT,
        )
    to = Status.ASSIGNED if c.assignee else Status.OPEN
    reopened = _moved(
        c,
        Action.REOPEN,
        at,
        by,
        to,
        reason,
        resolved_at=None,
        closed_at=None,
        resolution=None,
        reopen_count=c.reopen_count + 1,
        pauses=_resume(c, at),
        resolution_hours=None,
        resolved_within_sla=None,
    )
    return Change(reopened, [("crm.complaint.reopened", {"reopened_at": at, "reason": reason})])


def escalate(c: Complaint, at: datetime, by: str, note: str | None) -> Change:
    _check(c, Action.ESCALATE, at)
    level = c.level + 1
    raised = _moved(c, Action.ESCALATE, at, by, c.status, note, level=level)
    return Change(
        raised,
        [("crm.complaint.escalated", {"level": level, "reason": "manual", "escalated_at": at, "by": by})],
    )


def with_survey(c: Complaint, customer_id: str, survey_id: str) -> Complaint:
    """The CSAT survey answered for this complaint: by its own customer, after resolution,
    once."""
    if c.customer_id != customer_id:
        raise ComplaintError("the complaint belongs to another customer", field="customer_id")
    if c.status not in (Status.RESOLVED, Status.CLOSED):
        raise ComplaintError(
            f"the complaint is {c.status.value}; a CSAT survey follows resolution", Kind.CONFLICT
        )
    if c.survey_id:
        raise ComplaintError(f"the complaint's survey was already answered ({c.survey_id})", Kind.CONFLICT)
    return replace(c, survey_id=survey_id)


# --- SLA clocks --------------------------------------------------------------------------


def paused_seconds(c: Complaint, until: datetime, calendar: Calendar) -> float:
    return sum(
        calendar.seconds_between(start, min(end or until, until)) for start, end in c.pauses if start < until
    )


def elapsed(c: Complaint, now: datetime, calendar: Calendar) -> float:
    """Business seconds the SLA clock has run: since opening, less the pauses."""
    return calendar.seconds_between(c.opened_at, now) - paused_seconds(c, now, calendar)


def deadlines(c: Complaint, policy: SlaPolicy) -> dict[str, datetime | None]:
    """When each breach happens if nothing changes; None once answered, or while the clock
    stands still."""
    cal = policy.calendar
    first = None if c.first_response_at else cal.add(c.opened_at, c.targets.first_response_hours * 3600)
    if c.paused:
        return {FIRST_RESPONSE: first, RESOLUTION: None, OVERDUE: None}
    stood_still = sum(cal.seconds_between(start, end) for start, end in c.pauses)  # every pause has ended
    return {
        FIRST_RESPONSE: first,
        RESOLUTION: cal.add(c.opened_at, c.targets.resolution_hours * 3600 + stood_still),
        OVERDUE: cal.add(c.opened_at, 2 * c.targets.resolution_hours * 3600 + stood_still),
    }


def next_check(c: Complaint, policy: SlaPolicy) -> datetime | None:
    """The next moment a breach could happen, for the watcher's index."""
    if c.status not in ACTIVE:
        return None
    due = deadlines(c, policy)
    pending = [when for kind, when in due.items() if when is not None and kind not in c.breaches]
    return min(pending, default=None)


def breaches_at(c: Complaint, now: datetime, policy: SlaPolicy) -> Change:
    """Every breach that has happened by `now` and was not yet recorded, each escalating one
    level (up to the top) with one event. Recording it on the complaint makes it once only."""
    if c.status not in ACTIVE:
        return Change(c, [])
    cal = policy.calendar
    spent = elapsed(c, now, cal) / 3600
    found = []
    if (
        c.first_response_at is None
        and cal.seconds_between(c.opened_at, now) / 3600 > c.targets.first_response_hours
    ):
        found.append(FIRST_RESPONSE)
    if spent > c.targets.resolution_hours:
        found.append(RESOLUTION)
    if spent > 2 * c.targets.resolution_hours:
        found.append(OVERDUE)
    facts, level, breaches, history = [], c.level, c.breaches, c.history
    for kind in found:
        if kind in breaches:
            continue
        breaches = (*breaches, kind)
        if level < MAX_LEVEL:
            level += 1
            facts.append(
                (
                    "crm.complaint.escalated",
                    {"level": level, "reason": BREACH_REASON[kind], "escalated_at": now, "by": "sla-watcher"},
                )
            )
        history = (
            *history,
            {
                "action": "breach",
                "at": now,
                "by": "sla-watcher",
                "from": c.status.value,
                "to": c.status.value,
                "note": kind,
            },
        )
    return Change(replace(c, level=level, breaches=breaches, history=history), facts)


# --- surveys and statistics ----------------------------------------------------------------

DIMENSIONS = SATISFACTION_DIMENSIONS


def check_survey(kind: str, scores: dict[str, int], recommend: int | None) -> None:
    """A general survey answers every dimension, overall, and would-you-recommend; a CSAT
    survey (after a resolved complaint) needs at least the overall score."""
    if kind == "general":
        missing = [d for d in (*DIMENSIONS, "overall") if d not in scores]
        if missing or recommend is None:
            raise ComplaintError(
                "a general survey needs scores for "
                + ", ".join(missing or [])
                + (" and " if missing and recommend is None else "")
                + ("recommend (0 to 10)" if recommend is None else ""),
                field="scores",
            )
    elif "overall" not in scores:
        raise ComplaintError("a CSAT survey needs an overall score", field="scores")


def nps(recommends: list[int]) -> float | None:
    """Promoters (9-10) minus detractors (0-6), in percent of answers."""
    if not recommends:
        return None
    promoters = sum(1 for r in recommends if r >= 9)
    detractors = sum(1 for r in recommends if r <= 6)
    return round(100 * (promoters - detractors) / len(recommends), 1)


def survey_stats(surveys: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(values: list[int]) -> float | None:
        return round(sum(values) / len(values), 3) if values else None

    csat = [s["scores"]["overall"] for s in surveys if s["kind"] == "csat"]
    recommends = [s["recommend"] for s in surveys if s.get("recommend") is not None]
    return {
        "surveys": len(surveys),
        "dimensions": {
            d: mean([s["scores"][d] for s in surveys if d in s["scores"]]) for d in (*DIMENSIONS, "overall")
        },
        "csat": {
            "responses": len(csat),
            "average": mean(csat),
            "satisfied_share": round(sum(1 for v in csat if v >= 4) / len(csat), 4) if csat else None,
        },
        "nps": {
            "responses": len(recommends),
            "score": nps(recommends),
            "promoters": sum(1 for r in recommends if r >= 9),
            "passives": sum(1 for r in recommends if 7 <= r <= 8),
            "detractors": sum(1 for r in recommends if r <= 6),
        },
    }


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else round((ordered[mid - 1] + ordered[mid]) / 2, 3)


def complaint_stats(complaints: list[Complaint]) -> dict[str, Any]:
    """Counts, SLA compliance and median SLA hours to first response and to resolution."""

    def summary(group: list[Complaint]) -> dict[str, Any]:
        resolved = [c for c in group if c.resolution_hours is not None]
        responded = [c for c in group if c.first_response_hours is not None]
        fr_met = [
            c
            for c in responded
            if c.first_response_hours <= c.targets.first_response_hours and FIRST_RESPONSE not in c.breaches
        ]
        return {
            "count": len(group),
            "open": sum(1 for c in group if c.status in ACTIVE),
            "resolved": len(resolved),
            "breached": sum(1 for c in group if c.breaches),
            "escalated": sum(1 for c in group if c.level > 0),
            "resolution_sla_compliance": round(
                sum(1 for c in resolved if c.resolved_within_sla) / len(resolved), 4
            )
            if resolved
            else None,
            "first_response_sla_compliance": round(len(fr_met) / len(responded), 4) if responded else None,
            "median_hours_to_first_response": _median([c.first_response_hours for c in responded]),
            "median_hours_to_resolution": _median([c.resolution_hours for c in resolved]),
        }

    return {
        "total": summary(complaints),
        "by_category": {
            k: summary([c for c in complaints if c.category == k])
            for k in sorted({c.category for c in complaints})
        },
        "by_severity": {
            k: summary([c for c in complaints if c.severity == k])
            for k in ("critical", "high", "medium", "low")
            if any(c.severity == k for c in complaints)
        },
    }


FREE_TEXT = ("note", "reason")  # what agents write in a complaint's history


def anonymise(c: Complaint, text: str) -> Complaint:
    """Erasure: the person's words and what agents wrote about them go; categories,
    severities, times and SLA figures stay, as the service statistics need them."""
    return replace(
        c,
        description=text if c.description else c.description,
        resolution=text if c.resolution else c.resolution,
        history=tuple({k: (text if k in FREE_TEXT else v) for k, v in h.items()} for h in c.history),
    )
