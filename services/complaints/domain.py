"""Case rules: business time, kinds and their states, SLA targets and clocks, warnings and
escalation, the complaint procedure (decision, remedy, approval, compensation, the customer's
confirmation), surveys. Pure. A complaint is the case of kind complaint; the dataclass keeps
its historical name `Complaint`."""

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


# Cases of every kind share one intake; each kind has its own targets and actions.
KINDS = ("inquiry", "suggestion", "complaint", "praise")
COMPLAINT = "complaint"
DEFAULT_KIND_TARGETS = {"inquiry": (2, 24), "suggestion": (24, 120), "praise": (24, 72)}
# What each kind may do (TRANSITIONS still decides when): a suggestion is not reopened, praise
# is acknowledged and closed and never escalates.
KIND_ACTIONS: dict[str, frozenset[Action]] = {
    "complaint": frozenset(Action),
    "inquiry": frozenset(Action),
    "suggestion": frozenset(Action) - {Action.REOPEN},
    "praise": frozenset({Action.ASSIGN, Action.RESOLVE, Action.CLOSE}),
}
DEFAULT_WARN_AT = 0.8  # a warning when this share of a target has run


@dataclass(frozen=True)
class SlaPolicy:
    """Complaints' targets by severity, tighter for VIP customers; the other kinds' targets
    by kind; business time from the calendar; a warning at `warn_at` of a target; reopening
    allowed for `reopen_days` after resolution."""

    standard: dict[str, Targets]
    vip: dict[str, Targets]
    calendar: Calendar = field(default_factory=Calendar)
    reopen_days: float = 14.0
    vip_abc_classes: frozenset[str] = frozenset({"A"})
    vip_tiers: frozenset[str] = frozenset({LoyaltyTier.GOLD, LoyaltyTier.PLATINUM})
    kinds: dict[str, Targets] = field(
        default_factory=lambda: {k: Targets(*v) for k, v in DEFAULT_KIND_TARGETS.items()}
    )
    warn_at: float = DEFAULT_WARN_AT

    def targets(self, severity: str | None, vip: bool, kind: str = COMPLAINT) -> Targets:
        if kind != COMPLAINT:
            return self.kinds[kind]
        return (self.vip if vip else self.standard)[severity or "medium"]

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
        kinds = dict(DEFAULT_KIND_TARGETS)
        for kind, values in config.get("kinds", {}).items():
            if kind not in kinds:
                raise ValueError(
                    f"unknown case kind {kind!r} in [kinds] (complaints use [standard] and [vip])"
                )
            kinds[kind] = (values["first_response_hours"], values["resolution_hours"])
        warn_at = float(config.get("warn_at", DEFAULT_WARN_AT))
        if not 0 < warn_at < 1:
            raise ValueError(f"warn_at {warn_at} must be between 0 and 1 (a share of the target)")
        return cls(
            {k: Targets(*v) for k, v in standard.items()},
            {k: Targets(*v) for k, v in vip.items()},
            Calendar.from_config(config.get("calendar")),
            float(config.get("reopen_days", 14)),
            frozenset(config.get("vip_abc_classes", ["A"])),
            frozenset(config.get("vip_tiers", cls.vip_tiers)),
            {k: Targets(*v) for k, v in kinds.items()},
            warn_at,
        )


@dataclass(frozen=True)
class Complaint:
    complaint_id: str  # the case id (complaints' ids start cp-, other kinds' cs-)
    customer_id: str
    category: str
    severity: str | None  # complaints only
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
    kind: str = COMPLAINT
    team: str | None = None
    warnings: tuple[str, ...] = ()  # warnings given before a breach, once each
    # The escalation level still waiting to be handed to its supervisor (and notified).
    supervision_due: int | None = None
    # The complaint procedure: {valid, reason, department, root_cause, by, at}
    decision: dict[str, Any] | None = None
    # {number, description, compensations: [{type, amount_cents|points, value_cents, status,
    #  reference, detail}], value_cents, needs_approval, approved_by, approved_at, by, at}
    remedy: dict[str, Any] | None = None
    confirmation: dict[str, Any] | None = None  # {satisfied, note, at, by}

    @property
    def paused(self) -> bool:
        return bool(self.pauses) and self.pauses[-1][1] is None

    @property
    def case_id(self) -> str:
        return self.complaint_id


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
    kind: str | None = None
    level: int | None = None
    team: str | None = None


@dataclass(frozen=True)
class Change:
    complaint: Complaint
    facts: list[tuple[str, dict[str, Any]]]


# Breach kinds, in the order they can happen; each escalates one level.
FIRST_RESPONSE = "first_response_breach"
RESOLUTION = "resolution_breach"
OVERDUE = "resolution_overdue"  # still unresolved at twice the resolution target
# Warnings before a breach (at `warn_at` of the target), each given once.
FIRST_RESPONSE_WARNING = "first_response_warning"
RESOLUTION_WARNING = "resolution_warning"
WARNING_OF = {FIRST_RESPONSE_WARNING: FIRST_RESPONSE, RESOLUTION_WARNING: RESOLUTION}
BREACH_REASON = {
    FIRST_RESPONSE: "first_response_breach",
    RESOLUTION: "resolution_breach",
    OVERDUE: "resolution_breach",
}


# Complaint events keep the names they always had; every other change, and every change of the
# other kinds, is a `crm.case.<verb>` event naming its kind (docs/architecture.md, "Cases").
COMPLAINT_VERBS = frozenset({"opened", "escalated", "resolved", "reopened", "closed"})


def event_type(c: Complaint, verb: str) -> str:
    family = "complaint" if c.kind == COMPLAINT and verb in COMPLAINT_VERBS else "case"
    return f"crm.{family}.{verb}"


def open_complaint(
    *,
    complaint_id: str,
    customer_id: str,
    category: str,
    severity: str | None,
    channel: str,
    order_id: str | None,
    description: str,
    vip: bool,
    at: datetime,
    policy: SlaPolicy,
    by: str,
    kind: str = COMPLAINT,
    team: str | None = None,
) -> Change:
    if kind not in KINDS:
        raise ComplaintError(f"unknown case kind {kind!r}; one of {', '.join(KINDS)}", field="kind")
    if kind == COMPLAINT and severity is None:
        raise ComplaintError("a complaint needs a severity", field="severity")
    if kind != COMPLAINT:
        severity = None  # severity grades complaints only
    targets = policy.targets(severity, vip, kind)
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
        kind=kind,
        team=team,
    )
    due = deadlines(complaint, policy)
    data = {
        "category": category,
        "channel": channel,
        "order_id": order_id,
        "opened_at": at,
        "first_response_due": due[FIRST_RESPONSE],
        "resolution_due": due[RESOLUTION],
        "vip": vip,
    }
    if kind == COMPLAINT:
        data["severity"] = severity
    return Change(complaint, [(event_type(complaint, "opened"), data)])


def allowed_actions(complaint: Complaint) -> list[str]:
    permitted = KIND_ACTIONS[complaint.kind]
    actions = [a for a in TRANSITIONS[complaint.status] if a in permitted]
    if Action.ESCALATE in actions and complaint.level >= MAX_LEVEL:
        actions.remove(Action.ESCALATE)
    if Action.CLOSE in actions and needs_confirmation(complaint):
        actions.remove(Action.CLOSE)
    return [a.value for a in actions]


def needs_confirmation(c: Complaint) -> bool:
    """A complaint taken through the procedure (a validity decision) closes only once the
    customer has confirmed the outcome; a complaint handled without it closes as before."""
    return c.kind == COMPLAINT and c.decision is not None and not (c.confirmation or {}).get("satisfied")


def _check(complaint: Complaint, action: Action, at: datetime) -> None:
    if action.value not in allowed_actions(complaint):
        allowed = allowed_actions(complaint)
        raise ComplaintError(
            f"cannot {action.value} a {complaint.kind} that is {complaint.status.value}"
            + (
                " at the top escalation level"
                if action is Action.ESCALATE and complaint.level >= MAX_LEVEL
                else ""
            )
            + (
                " before the customer confirmed the outcome (POST .../confirm)"
                if action is Action.CLOSE and needs_confirmation(complaint)
                else ""
            )
            + (
                f" (a {complaint.kind} cannot {action.value})"
                if action not in KIND_ACTIONS[complaint.kind]
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


def _responded(before: Complaint, after: Complaint) -> list[tuple[str, dict[str, Any]]]:
    """The first response, as its own event, when this change was it."""
    if before.first_response_at is not None or after.first_response_at is None:
        return []
    within = after.first_response_hours <= after.targets.first_response_hours and (
        FIRST_RESPONSE not in after.breaches
    )
    return [
        (
            event_type(after, "responded"),
            {
                "responded_at": after.first_response_at,
                "first_response_hours": after.first_response_hours,
                "within_sla": within,
            },
        )
    ]


def assign(
    c: Complaint,
    at: datetime,
    assignee: str,
    by: str,
    calendar: Calendar | None = None,
    team: str | None = None,
) -> Change:
    _check(c, Action.ASSIGN, at)
    moved = _moved(
        c,
        Action.ASSIGN,
        at,
        by,
        Status.ASSIGNED,
        f"to {assignee}",
        calendar,
        assignee=assignee,
        team=team or c.team,
        pauses=_resume(c, at),
    )
    return Change(
        moved,
        [(event_type(moved, "assigned"), {"assigned_at": at, "by": by}), *_responded(c, moved)],
    )


def await_customer(
    c: Complaint, at: datetime, by: str, note: str | None, calendar: Calendar | None = None
) -> Change:
    _check(c, Action.AWAIT_CUSTOMER, at)
    moved = _moved(
        c, Action.AWAIT_CUSTOMER, at, by, Status.AWAITING_CUSTOMER, note, calendar, pauses=_pause(c, at)
    )
    return Change(
        moved,
        [(event_type(moved, "awaiting_customer"), {"awaiting_at": at, "by": by}), *_responded(c, moved)],
    )


def resolve(c: Complaint, at: datetime, resolution: str, by: str, policy: SlaPolicy) -> Change:
    _check(c, Action.RESOLVE, at)
    _check_procedure_done(c)
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
            *_responded(c, done),  # resolving at once is the first response too
            (
                event_type(done, "resolved"),
                {
                    "resolved_at": at,
                    "resolution": resolution,
                    "within_sla": within,
                    "resolution_hours": round(hours, 3),
                },
            ),
        ],
    )


def close(c: Complaint, at: datetime, by: str) -> Change:
    _check(c, Action.CLOSE, at)
    return Change(
        _moved(c, Action.CLOSE, at, by, Status.CLOSED, closed_at=at),
        [(event_type(c, "closed"), {"closed_at": at})],
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
        confirmation=None,
    )
    return Change(reopened, [(event_type(c, "reopened"), {"reopened_at": at, "reason": reason})])


def escalate(c: Complaint, at: datetime, by: str, note: str | None) -> Change:
    _check(c, Action.ESCALATE, at)
    level = c.level + 1
    raised = _moved(c, Action.ESCALATE, at, by, c.status, note, level=level, supervision_due=level)
    return Change(
        raised,
        [(event_type(c, "escalated"), {"level": level, "reason": "manual", "escalated_at": at, "by": by})],
    )


def supervised(c: Complaint, at: datetime, level: int, supervisor: str | None, why: str) -> Change:
    """An escalation handed to the supervisor of its level (`supervisor` None: the case's team
    names nobody for that level, `why` says so): the case is theirs from now on."""
    if c.supervision_due != level:
        return Change(c, [])
    entry = {"action": "supervise", "at": at, "by": "supervision", "from": c.status.value, "note": why}
    if supervisor is None or c.status not in ACTIVE:
        return Change(
            replace(c, supervision_due=None, history=(*c.history, {**entry, "to": c.status.value})), []
        )
    to = Status.ASSIGNED if c.status is Status.OPEN else c.status
    moved = replace(
        c,
        status=to,
        assignee=supervisor,
        supervision_due=None,
        history=(*c.history, {**entry, "to": to.value}),
    )
    return Change(
        moved,
        [(event_type(moved, "assigned"), {"assigned_at": at, "by": "supervision", "level": level})],
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


KIND_NAMES_ZH = {"inquiry": "咨询", "suggestion": "建议", "complaint": "投诉", "praise": "表扬"}


def escalation_notice(
    c: Complaint, level: int, supervisor: str, role: str, locale: str | None
) -> tuple[str, str]:
    """The email an escalation sends (subject, text) to the supervisor who now has the case or
    to the agent who had it, in the reader's language (the staff directory's locale)."""
    why = next(
        (h.get("note") or h["action"] for h in reversed(c.history) if h["action"] in ("escalate", "breach")),
        "manual",
    )
    if locale == "zh-CN":
        subject = f"[督办] {KIND_NAMES_ZH[c.kind]} {c.complaint_id} 升级至第 {level} 级"
        lead = (
            f"该案件已转交给您（{supervisor}）督办。"
            if role == "supervisor"
            else f"该案件已转交主管 {supervisor} 督办。"
        )
        text = (
            f"{lead}\n\n案件：{c.complaint_id}（{KIND_NAMES_ZH[c.kind]}，类别 {c.category}）\n"
            f"客户：{c.customer_id}\n升级级别：{level}\n原因：{why}\n受理时间：{c.opened_at.isoformat()}\n"
        )
    else:
        subject = f"[Escalation] {c.kind} {c.complaint_id} raised to level {level}"
        lead = (
            f"This case is now yours ({supervisor}) to supervise."
            if role == "supervisor"
            else f"This case went to the supervisor {supervisor}."
        )
        text = (
            f"{lead}\n\nCase: {c.complaint_id} ({c.kind}, category {c.category})\n"
            f"Customer: {c.customer_id}\nLevel: {level}\nReason: {why}\nOpened: {c.opened_at.isoformat()}\n"
        )
    return subject, text


# --- the complaint procedure ----------------------------------------------------------------

DEFAULT_ROOT_CAUSES = {
    "product.defect": "The product was faulty",
    "product.not_as_described": "The product differs from its description",
    "logistics.late": "Delivered late",
    "logistics.damaged": "Damaged in transit",
    "logistics.lost": "Lost in transit",
    "payment.error": "Charged wrongly",
    "service.conduct": "Staff conduct",
    "service.process": "A process failed the customer",
    "website.defect": "The website failed",
    "customer.misunderstanding": "The customer misunderstood (no fault of the shop)",
    "other": "Other",
}
DEFAULT_DEPARTMENTS = (
    "customer_service",
    "quality",
    "warehouse",
    "logistics",
    "finance",
    "merchandising",
    "it",
)
COMPENSATION_TYPES = ("refund", "points", "coupon")


@dataclass(frozen=True)
class Procedure:
    """The complaint procedure's catalogue and limits: root-cause codes, the departments a
    complaint can be laid at, and the compensation value (in cents; a loyalty point counts
    `point_value_cents`) above which a supervisor must approve."""

    root_causes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ROOT_CAUSES))
    departments: tuple[str, ...] = DEFAULT_DEPARTMENTS
    approval_above_cents: int = 20_000
    point_value_cents: float = 1.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Procedure:
        """The [procedure] table of the policy file; anything left out keeps its default."""
        root_causes = config.get("root_causes", DEFAULT_ROOT_CAUSES)
        if not root_causes or not all(isinstance(v, str) for v in root_causes.values()):
            raise ValueError("[procedure.root_causes] maps each code to its description")
        approval = int(config.get("approval_above_cents", 20_000))
        point_value = float(config.get("point_value_cents", 1.0))
        if approval < 0 or point_value <= 0:
            raise ValueError("approval_above_cents must be 0 or more and point_value_cents above 0")
        return cls(
            dict(root_causes), tuple(config.get("departments", DEFAULT_DEPARTMENTS)), approval, point_value
        )

    def value_cents(self, compensation: dict[str, Any]) -> int:
        if compensation["type"] == "points":
            return round(compensation["points"] * self.point_value_cents)
        return int(compensation["amount_cents"])


def _procedure_step(c: Complaint, what: str) -> None:
    if c.kind != COMPLAINT:
        raise ComplaintError(
            f"{what} is part of the complaint procedure; this case is a {c.kind}", Kind.CONFLICT
        )
    if c.status not in ACTIVE:
        raise ComplaintError(
            f"{what} happens before resolution; the complaint is {c.status.value}", Kind.CONFLICT
        )


def _compensation_started(c: Complaint) -> bool:
    """Whether the current remedy is under way: something of it paid and nothing refused (a
    refusal, say a refund on an order not yet delivered, calls for a new remedy, which takes
    over what the old one did not pay)."""
    statuses = [item["status"] for item in ((c.remedy or {}).get("compensations") or [])]
    return "paid" in statuses and "refused" not in statuses


def decide(
    c: Complaint,
    at: datetime,
    by: str,
    *,
    valid: bool,
    reason: str,
    department: str | None,
    root_cause: str | None,
    procedure: Procedure,
) -> Change:
    """Whether the complaint is valid and why; for a valid one, the department responsible and
    the root cause from the catalogue. It may be revised until compensation has begun."""
    _procedure_step(c, "a decision")
    if c.decision and _compensation_started(c):
        raise ComplaintError("compensation has begun; the decision stands", Kind.CONFLICT)
    if valid:
        if root_cause not in procedure.root_causes:
            raise ComplaintError(
                f"unknown root cause {root_cause!r}; the catalogue has {', '.join(procedure.root_causes)}",
                field="root_cause",
            )
        if department not in procedure.departments:
            raise ComplaintError(
                f"unknown department {department!r}; one of {', '.join(procedure.departments)}",
                field="department",
            )
    elif root_cause is not None and root_cause not in procedure.root_causes:
        raise ComplaintError(f"unknown root cause {root_cause!r}", field="root_cause")
    decision = {
        "valid": valid,
        "reason": reason,
        "department": department,
        "root_cause": root_cause,
        "by": by,
        "at": at,
    }
    moved = _noted(c, "decide", at, by, reason, decision=decision, remedy=None if not valid else c.remedy)
    return Change(
        moved,
        [
            (
                event_type(moved, "decided"),
                {
                    "valid": valid,
                    "department": department,
                    "root_cause": root_cause,
                    "decided_at": at,
                    "by": by,
                },
            )
        ],
    )


def propose_remedy(
    c: Complaint,
    at: datetime,
    by: str,
    *,
    description: str,
    compensations: list[dict[str, Any]],
    procedure: Procedure,
) -> Change:
    """The remedy for a valid complaint: what the shop does, and the compensation it pays
    (a goodwill refund on the complaint's order, loyalty points, a coupon). Above the
    approval amount it waits for a supervisor. A new proposal replaces one not yet paid."""
    _procedure_step(c, "a remedy")
    if not (c.decision or {}).get("valid"):
        raise ComplaintError("a remedy follows a decision that the complaint is valid", Kind.CONFLICT)
    if _compensation_started(c):
        raise ComplaintError(
            "the current remedy's compensation has begun; it cannot be replaced", Kind.CONFLICT
        )
    items = []
    for i, comp in enumerate(compensations):
        if comp["type"] not in COMPENSATION_TYPES:
            raise ComplaintError(f"unknown compensation {comp['type']!r}", field=f"compensations[{i}].type")
        if comp["type"] == "refund" and not c.order_id:
            raise ComplaintError(
                "a goodwill refund needs the complaint's order; this complaint names none",
                field=f"compensations[{i}]",
            )
        items.append({**comp, "value_cents": procedure.value_cents(comp), "status": "due"})
    value = sum(item["value_cents"] for item in items)
    number = (c.remedy or {}).get("number", 0) + 1
    remedy = {
        "number": number,
        "description": description,
        "compensations": items,
        "value_cents": value,
        "needs_approval": value > procedure.approval_above_cents,
        "approved_by": None,
        "approved_at": None,
        "by": by,
        "at": at,
    }
    moved = _noted(c, "propose-remedy", at, by, description, remedy=remedy)
    return Change(
        moved,
        [
            (
                event_type(moved, "remedy_proposed"),
                {
                    "remedy": number,
                    "compensation_cents": value,
                    "compensations": [item["type"] for item in items],
                    "needs_approval": remedy["needs_approval"],
                    "proposed_at": at,
                    "by": by,
                },
            )
        ],
    )


def approve_remedy(c: Complaint, at: datetime, by: str, note: str | None) -> Change:
    """A supervisor's approval of a remedy whose compensation is above the approval amount
    (the caller checked the supervisor role)."""
    _procedure_step(c, "an approval")
    remedy = c.remedy
    if remedy is None:
        raise ComplaintError("there is no remedy to approve", Kind.CONFLICT)
    if not remedy["needs_approval"]:
        raise ComplaintError(
            f"the remedy's compensation ({remedy['value_cents']} cents) needs no approval", Kind.CONFLICT
        )
    if remedy["approved_by"]:
        raise ComplaintError(f"the remedy was approved by {remedy['approved_by']}", Kind.CONFLICT)
    if by == remedy["by"]:
        raise ComplaintError("a remedy is approved by someone other than who proposed it", Kind.CONFLICT)
    moved = _noted(c, "approve-remedy", at, by, note, remedy={**remedy, "approved_by": by, "approved_at": at})
    return Change(
        moved,
        [
            (
                event_type(moved, "remedy_approved"),
                {
                    "remedy": remedy["number"],
                    "compensation_cents": remedy["value_cents"],
                    "approved_at": at,
                    "by": by,
                },
            )
        ],
    )


def compensation_key(c: Complaint, number: int, index: int) -> str:
    """The Idempotency-Key of one compensation at the service that pays it: the same for
    every retry and after any restart, so the payment happens once."""
    return f"case-{c.complaint_id}-remedy-{number}-{index}"


def compensations_due(c: Complaint) -> list[tuple[int, dict[str, Any]]]:
    """What is still to pay of the current remedy, in order; refuses while approval is
    missing. Nothing to pay is an empty list (a retry after everything was paid)."""
    _procedure_step(c, "compensation")
    remedy = c.remedy
    if remedy is None:
        raise ComplaintError("there is no remedy to carry out", Kind.CONFLICT)
    if remedy["needs_approval"] and not remedy["approved_by"]:
        raise ComplaintError(
            f"the compensation ({remedy['value_cents']} cents) is above the approval amount and "
            "needs a supervisor's approval first (POST .../approve)",
            Kind.CONFLICT,
        )
    return [(i, item) for i, item in enumerate(remedy["compensations"]) if item["status"] == "due"]


def compensated(
    c: Complaint,
    at: datetime,
    number: int,
    index: int,
    *,
    paid: bool,
    reference: str | None,
    detail: str | None,
) -> Change:
    """The outcome of one compensation, recorded once: paid (with the paying service's
    reference) or refused (with its reason)."""
    remedy = c.remedy
    if remedy is None or remedy["number"] != number or remedy["compensations"][index]["status"] != "due":
        return Change(c, [])  # recorded before (a retry): nothing changes
    items = list(remedy["compensations"])
    item = {**items[index], "status": "paid" if paid else "refused", "reference": reference, "detail": detail}
    items[index] = item
    moved = _noted(
        c,
        "compensate",
        at,
        "compensation",
        f"{item['type']} {'paid' if paid else 'refused'}" + (f": {detail}" if detail else ""),
        remedy={**remedy, "compensations": items},
    )
    if not paid:
        return Change(moved, [])
    data = {
        "compensation_id": compensation_key(c, number, index),
        "type": item["type"],
        "amount_cents": item["value_cents"],
        "reference": reference,
        "compensated_at": at,
    }
    if item["type"] == "points":
        data["points"] = item["points"]
    return Change(moved, [(event_type(moved, "compensated"), data)])


def _check_procedure_done(c: Complaint) -> None:
    """A complaint taken through the procedure is resolved once its remedy is carried out."""
    if c.kind != COMPLAINT or c.decision is None or not c.decision["valid"]:
        return
    if c.remedy is None:
        raise ComplaintError(
            "a valid complaint is resolved after its remedy (POST .../remedy)", Kind.CONFLICT
        )
    statuses = {item["status"] for item in c.remedy["compensations"]}
    if "due" in statuses:
        raise ComplaintError(
            "the remedy's compensation is not carried out yet (POST .../compensate)", Kind.CONFLICT
        )
    if "refused" in statuses:
        raise ComplaintError(
            "part of the remedy's compensation was refused; propose a new remedy (POST .../remedy)",
            Kind.CONFLICT,
        )


def confirm(
    c: Complaint, at: datetime, by: str, satisfied: bool, note: str | None, policy: SlaPolicy
) -> Change:
    """The customer's word on the outcome after resolution: satisfied lets the case close;
    not satisfied reopens it (within the reopen window)."""
    if c.status is not Status.RESOLVED:
        raise ComplaintError(
            f"the customer confirms a resolved case; this one is {c.status.value}", Kind.CONFLICT
        )
    confirmation = {"satisfied": satisfied, "note": note, "at": at, "by": by}
    fact = (event_type(c, "confirmed"), {"satisfied": satisfied, "confirmed_at": at, "by": by})
    if satisfied:
        moved = _noted(c, "confirm", at, by, note, confirmation=confirmation)
        return Change(moved, [fact])
    reopened = reopen(c, at, note or "the customer is not satisfied", by, policy)
    return Change(replace(reopened.complaint, confirmation=confirmation), [fact, *reopened.facts])


def _noted(c: Complaint, action: str, at: datetime, by: str, note: str | None, **changes: Any) -> Complaint:
    """A change that is not a move between states, in the history all the same."""
    last = c.history[-1]["at"] if c.history else c.opened_at
    if at < last:
        raise ComplaintError(f"time {at.isoformat()} is before the case's last change", field="at")
    entry = {"action": action, "at": at, "by": by, "from": c.status.value, "to": c.status.value}
    if note:
        entry["note"] = note
    return replace(c, history=(*c.history, entry), **changes)


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
    first_target = c.targets.first_response_hours * 3600
    first, first_warning = (
        (None, None)
        if c.first_response_at
        else (cal.add(c.opened_at, first_target), cal.add(c.opened_at, policy.warn_at * first_target))
    )
    if c.paused:
        return {
            FIRST_RESPONSE: first,
            RESOLUTION: None,
            OVERDUE: None,
            FIRST_RESPONSE_WARNING: first_warning,
            RESOLUTION_WARNING: None,
        }
    stood_still = sum(cal.seconds_between(start, end) for start, end in c.pauses)  # every pause has ended
    target = c.targets.resolution_hours * 3600
    return {
        FIRST_RESPONSE: first,
        RESOLUTION: cal.add(c.opened_at, target + stood_still),
        OVERDUE: cal.add(c.opened_at, 2 * target + stood_still),
        FIRST_RESPONSE_WARNING: first_warning,
        RESOLUTION_WARNING: cal.add(c.opened_at, policy.warn_at * target + stood_still),
    }


def due_at(c: Complaint, policy: SlaPolicy) -> datetime | None:
    """The deadline an agent works against, for the queue's "time left": the first response's
    until there is one, then the resolution's (past once breached: the most urgent). None
    while the clock stands still or once the case is done."""
    if c.status not in ACTIVE:
        return None
    due = deadlines(c, policy)
    return due[FIRST_RESPONSE] if c.first_response_at is None else due[RESOLUTION]


def next_check(c: Complaint, policy: SlaPolicy, now: datetime | None = None) -> datetime | None:
    """The next moment a warning or breach could happen, for the watcher's index; `now` (or
    the opening) while an escalation still waits for its supervisor, so the watcher retries."""
    if c.status not in ACTIVE:
        return None
    due = deadlines(c, policy)
    done = (*c.breaches, *c.warnings)
    pending = [when for kind, when in due.items() if when is not None and kind not in done]
    if c.supervision_due is not None:
        pending.append(now or c.opened_at)
    return min(pending, default=None)


def breaches_at(c: Complaint, now: datetime, policy: SlaPolicy) -> Change:
    """Every breach that has happened by `now` and was not yet recorded, each escalating one
    level (up to the top) with one event. Recording it on the complaint makes it once only."""
    if c.status not in ACTIVE:
        return Change(c, [])
    cal = policy.calendar
    spent = elapsed(c, now, cal) / 3600
    warnings, warning_facts = c.warnings, []
    due = deadlines(c, policy)
    for warning, breach in WARNING_OF.items():
        when = due[warning]
        if when is None or when > now or warning in warnings or breach in c.breaches:
            continue
        warnings = (*warnings, warning)
        warning_facts.append(
            (
                event_type(c, "sla_warning"),
                {"warning": warning, "due": due[breach], "warned_at": now, "share": policy.warn_at},
            )
        )
    c = replace(c, warnings=warnings)
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
    facts, level, breaches, history = warning_facts, c.level, c.breaches, c.history
    supervision_due = c.supervision_due
    for kind in found:
        if kind in breaches:
            continue
        breaches = (*breaches, kind)
        if level < MAX_LEVEL and Action.ESCALATE in KIND_ACTIONS[c.kind]:
            level += 1
            supervision_due = level
            facts.append(
                (
                    event_type(c, "escalated"),
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
    return Change(
        replace(c, level=level, breaches=breaches, history=history, supervision_due=supervision_due), facts
    )


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
        decision={**c.decision, "reason": text} if c.decision else None,
        remedy={**c.remedy, "description": text} if c.remedy else None,
        confirmation={**c.confirmation, "note": text if c.confirmation.get("note") else None}
        if c.confirmation
        else None,
    )
