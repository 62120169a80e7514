"""Case use cases (every kind; complaints with their procedure), the SLA watcher with its
warnings, escalations handed to supervisors, compensation carried out through the paying
services, and surveys. Each write stores the case with its events in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from motor.motor_asyncio import AsyncIOMotorClientSession
from prometheus_client import Counter, Gauge, Histogram

from services.common.auth import assignee_problem
from services.common.clock import Clock, bounded_period
from services.common.erasure import SCRUBBED
from services.common.errors import ConcurrentChange, Kind
from services.common.fields import new_id
from services.common.peers import Answer, Peers
from services.common.problems import Problem
from services.common.settings import Settings
from services.common.writes import IdempotencyKey, Outcome, Writes

from . import domain
from .domain import Action, Change, Complaint, ComplaintError, ComplaintFilters, Procedure, SlaPolicy
from .events import change_events, survey_event
from .models import (
    AssignIn,
    CaseIn,
    ComplaintIn,
    ConfirmIn,
    DecisionIn,
    NoteIn,
    RemedyIn,
    ReopenIn,
    ResolveIn,
    SurveyIn,
    present,
    present_survey,
)
from .store import ComplaintStore

log = structlog.get_logger(__name__)

OPENED = Counter("crm_complaints_opened_total", "Complaints opened.", ["category", "severity"])
RESOLVED = Counter(
    "crm_complaints_resolved_total",
    "Complaints resolved, and whether within the SLA (for compliance).",
    ["category", "severity", "within_sla"],
)
ESCALATED = Counter(
    "crm_complaints_escalated_total",
    "Escalations, on SLA breach or by hand.",
    ["category", "severity", "reason"],
)
BREACHES = Counter(
    "crm_complaints_sla_breaches_total", "SLA breaches detected by the watcher.", ["kind", "severity"]
)
OPEN = Gauge("crm_complaints_open", "Complaints not yet resolved.")
SCORES = Histogram(
    "crm_survey_score", "Survey scores (1 to 5) by dimension.", ["dimension"], buckets=(1, 2, 3, 4, 5)
)
RECOMMEND = Histogram(
    "crm_survey_recommend_score", "Would-you-recommend answers (0 to 10).", buckets=tuple(range(11))
)


CASES_OPENED = Counter("crm_cases_opened_total", "Cases opened, by kind.", ["kind"])
WARNINGS = Counter("crm_cases_sla_warnings_total", "Warnings before an SLA breach.", ["kind", "warning"])
COMPENSATIONS = Counter(
    "crm_cases_compensations_total", "Compensations carried out, by type and outcome.", ["type", "outcome"]
)
SUPERVISED = Counter(
    "crm_cases_supervised_total", "Escalations handed to a supervisor, or to nobody (why).", ["outcome"]
)


def _policy_file(path: Path | None) -> dict[str, Any]:
    return tomllib.loads(path.read_text()) if path is not None else {}


def load_policy(path: Path | None) -> SlaPolicy:
    return SlaPolicy.from_config(_policy_file(path).get("sla", {}))


def load_procedure(path: Path | None) -> Procedure:
    """The complaint procedure's catalogue and approval amount, from the same policy file."""
    return Procedure.from_config(_policy_file(path).get("procedure", {}))


def count(complaint: Complaint, events: list[dict[str, Any]]) -> None:
    severity = complaint.severity or "none"
    for event in events:
        kind = event["type"]
        if kind.endswith(".opened"):
            CASES_OPENED.labels(complaint.kind).inc()
        if kind == "crm.complaint.opened":
            OPENED.labels(complaint.category, severity).inc()
        elif kind == "crm.complaint.resolved":
            within = "true" if event["data"].get("within_sla") else "false"
            RESOLVED.labels(complaint.category, severity, within).inc()
        elif kind == "crm.complaint.escalated":
            ESCALATED.labels(complaint.category, severity, event["data"]["reason"]).inc()
        elif kind == "crm.case.sla_warning":
            WARNINGS.labels(complaint.kind, event["data"]["warning"]).inc()


class StaffDirectory:
    """The staff service's directory as the case desk needs it (docs/architecture.md, "Cases"):
    a user (`GET /users/{id}`: active, roles, team, email, locale) and the supervisor of a
    team's escalation level (`GET /teams/{id}`: supervisors[level - 1]). A small adapter, so
    the peer's shape is known in one place."""

    def __init__(self, peers: Peers, authorization: str | None) -> None:
        self.peers = peers
        self.authorization = authorization

    async def user(self, user_id: str) -> Answer:
        return await self.peers.staff_user(user_id, self.authorization)

    async def supervisor(self, team: str | None, level: int) -> tuple[str | None, str | None]:
        """(supervisor, why not); raises Unavailable-like ComplaintError when the directory
        does not answer, so the caller tries again later."""
        if team is None:
            return None, "the case has no team, so no supervisor"
        answer = await self.peers.staff_team(team, self.authorization)
        if answer.status == "unavailable":
            raise ComplaintError(f"the staff directory did not answer: {answer.error}", Kind.UNAVAILABLE)
        if not answer.ok:
            return None, f"no team {team} in the staff directory"
        supervisors = answer.body.get("supervisors") or []
        if len(supervisors) < level:
            return None, f"team {team} names no supervisor for level {level}"
        return supervisors[level - 1], None


class ComplaintService:
    def __init__(
        self,
        store: ComplaintStore,
        writes: Writes,
        clock: Clock,
        policy: SlaPolicy,
        peers: Peers,
        procedure: Procedure | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.store = store
        self.writes = writes
        self.clock = clock
        self.policy = policy
        self.peers = peers
        self.procedure = procedure or Procedure()
        own_key = settings.complaints_api_key if settings else None
        # The desk's own key pays compensation and sends notices: one caller, so a payment's
        # Idempotency-Key is one scope at the paying service whoever asks here, and a retry
        # after a restart meets the first answer.
        self.own_authorization = f"Bearer {own_key}" if own_key else None
        self.staff = StaffDirectory(peers, self.own_authorization)

    def show(self, complaint: Complaint) -> dict[str, Any]:
        return present(complaint, self.policy, self.clock.now())

    async def is_vip(self, customer_id: str, authorization: str | None) -> bool:
        """VIP by the customer's live profile, read through the profiles API with the caller's
        key. A customer profiles does not know is not VIP. When profiles does not answer in
        time the complaint opens on standard targets rather than not at all (logged here,
        counted in crm_peer_requests_total{service="profiles",outcome="unavailable"});
        an agent who knows better sends `vip`."""
        answer = await self.peers.get("profiles", f"/customers/{customer_id}", authorization)
        if answer.status == "unavailable":
            log.warning(
                "vip check fell back to standard targets", customer_id=customer_id, error=answer.error
            )
        if not answer.ok:
            return False
        profile = answer.body
        abc_class = (profile.get("value") or {}).get("abc_class")
        tier = (profile.get("loyalty") or {}).get("tier")
        return self.policy.is_vip(abc_class, tier)

    async def open(
        self, body: ComplaintIn | CaseIn, by: str, key: IdempotencyKey | None, authorization: str | None
    ) -> Outcome:
        """The one intake: `POST /cases` for every kind, `POST /complaints` for complaints."""
        if isinstance(body, ComplaintIn):
            kind, text, team = domain.COMPLAINT, body.description, None
        else:
            kind, text, team = body.kind, body.text, body.team
        if kind == domain.COMPLAINT and body.severity is None:
            raise ComplaintError(
                "a complaint needs a severity (low, medium, high, critical)", field="severity"
            )
        vip = body.vip
        if vip is None:
            vip = await self.is_vip(body.customer_id, authorization)
        change = domain.open_complaint(
            complaint_id=new_id("cp" if kind == domain.COMPLAINT else "cs"),
            customer_id=body.customer_id,
            category=body.category,
            severity=body.severity,
            channel=body.channel,
            order_id=body.order_id,
            description=text,
            vip=vip,
            at=self.clock.now(),
            policy=self.policy,
            by=by,
            kind=kind,
            team=team,
        )

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            await self.store.insert(
                change.complaint,
                domain.next_check(change.complaint, self.policy),
                session,
                domain.due_at(change.complaint, self.policy),
            )
            return Outcome(201, self.show(change.complaint), change_events(change))

        outcome = await self.writes.run(work, key)
        if not outcome.replayed:
            count(change.complaint, outcome.events)
        return outcome

    async def assignee_team(self, assignee: str) -> str | None:
        """The assignee as the staff directory knows them: refused unless an active user with
        the agent role or above; their team comes with them. While the directory does not
        answer (or before it is deployed) the assignment stands on the name alone, logged and
        counted in crm_peer_requests_total{service="staff",outcome="unavailable"}."""
        answer = await self.staff.user(assignee)
        if answer.status == "unavailable":
            log.warning("assignee not checked: the staff directory did not answer", assignee=assignee)
            return None
        user = answer.body if answer.ok else None
        if (problem := assignee_problem(assignee, user)) is not None:
            raise ComplaintError(f"cannot assign: {problem}", field="assignee")
        return user.get("team")

    def _rule(
        self, action: Action, body: Any, at: datetime, by: str, team: str | None = None
    ) -> Callable[[Complaint], Change]:
        cal = self.policy.calendar
        if action is Action.ASSIGN:
            assert isinstance(body, AssignIn)
            return lambda c: domain.assign(c, at, body.assignee, by, cal, team)
        if action is Action.AWAIT_CUSTOMER:
            return lambda c: domain.await_customer(c, at, by, getattr(body, "note", None), cal)
        if action is Action.RESOLVE:
            assert isinstance(body, ResolveIn)
            return lambda c: domain.resolve(c, at, body.resolution, by, self.policy)
        if action is Action.CLOSE:
            return lambda c: domain.close(c, at, by)
        if action is Action.REOPEN:
            assert isinstance(body, ReopenIn)
            return lambda c: domain.reopen(c, at, body.reason, by, self.policy)
        assert isinstance(body, NoteIn | None)
        return lambda c: domain.escalate(c, at, by, body.note if body else None)

    async def act(
        self, complaint_id: str, action: Action, body: Any, by: str, key: IdempotencyKey | None
    ) -> Outcome:
        team = None
        if action is Action.ASSIGN:
            assert isinstance(body, AssignIn)
            team = await self.assignee_team(body.assignee)
        apply = self._rule(action, body, self.clock.now(), by, team)
        outcome, complaint = await self._change(complaint_id, apply, key)
        if not outcome.replayed and complaint is not None:
            count(complaint, outcome.events)
            if complaint.supervision_due is not None:
                await self.supervise(complaint.complaint_id)
        return outcome

    def _procedure_rule(self, step: str, body: Any, at: datetime, by: str) -> Callable[[Complaint], Change]:
        if step == "decision":
            assert isinstance(body, DecisionIn)
            return lambda c: domain.decide(
                c,
                at,
                by,
                valid=body.valid,
                reason=body.reason,
                department=body.department,
                root_cause=body.root_cause,
                procedure=self.procedure,
            )
        if step == "remedy":
            assert isinstance(body, RemedyIn)
            items = [item.model_dump() for item in body.compensations]
            return lambda c: domain.propose_remedy(
                c, at, by, description=body.description, compensations=items, procedure=self.procedure
            )
        if step == "approve":
            return lambda c: domain.approve_remedy(c, at, by, body.note if body else None)
        assert isinstance(body, ConfirmIn)
        return lambda c: domain.confirm(c, at, by, body.satisfied, body.note, self.policy)

    async def procedure_step(
        self, complaint_id: str, step: str, body: Any, by: str, key: IdempotencyKey | None
    ) -> Outcome:
        """decision, remedy, approve, confirm: the complaint procedure's recorded steps."""
        outcome, _ = await self._change(
            complaint_id, self._procedure_rule(step, body, self.clock.now(), by), key
        )
        return outcome

    def catalogue(self) -> dict[str, Any]:
        p = self.procedure
        return {
            "kinds": {
                kind: (
                    {"by_severity": {k: t.__dict__ for k, t in self.policy.standard.items()}}
                    if kind == domain.COMPLAINT
                    else self.policy.kinds[kind].__dict__
                )
                for kind in domain.KINDS
            },
            "warn_at": self.policy.warn_at,
            "root_causes": p.root_causes,
            "departments": list(p.departments),
            "approval_above_cents": p.approval_above_cents,
            "point_value_cents": p.point_value_cents,
        }

    # --- compensation, carried out once ----------------------------------------------------

    async def compensate(self, complaint_id: str, by: str, key: IdempotencyKey) -> Outcome:
        """Carry out what the remedy still owes, one compensation at a time, each at its paying
        service with an Idempotency-Key of the case and remedy (domain.compensation_key): a
        retry, a second agent, or a restart between the payment and its record here meets the
        paying service's first answer, so nothing is paid twice. The outcome of each is
        recorded on the case (paid with the reference, or refused with the reason); one whose
        service does not answer stays due and the answer is a 503 to retry."""
        if self.own_authorization is None:
            raise Problem(503, "the case desk has no key of its own to pay with (CRM_COMPLAINTS_API_KEY)")
        case = await self.store.get(complaint_id)
        if case is None:
            raise domain.no_complaint(complaint_id)
        due = domain.compensations_due(case)
        number = case.remedy["number"]
        waiting = []
        for index, item in due:
            payment_key = domain.compensation_key(case, number, index)
            answer = await self._pay(case, item, payment_key)
            # A key the paying service does not accept is the desk's configuration, not the
            # payment's refusal: it stays due.
            if answer.status == "unavailable" or answer.code in (401, 403):
                COMPENSATIONS.labels(item["type"], "unavailable").inc()
                waiting.append(f"{item['type']}: {answer.service} did not answer ({answer.error})")
                continue
            paid = answer.ok
            reference = _reference(item, answer) if paid else None
            detail = None if paid else (answer.error or f"refused by {answer.service}")
            at = self.clock.now()
            await self._change(
                complaint_id,
                lambda c, i=index, p=paid, r=reference, d=detail, t=at: domain.compensated(
                    c, t, number, i, paid=p, reference=r, detail=d
                ),
            )
            COMPENSATIONS.labels(item["type"], "paid" if paid else "refused").inc()
        if waiting:
            raise Problem(
                503, "compensation not finished, retry: " + "; ".join(waiting), headers={"Retry-After": "5"}
            )
        current = await self.store.get(complaint_id)

        async def answered(session: AsyncIOMotorClientSession) -> Outcome:
            return Outcome(200, self.show(current))

        return await self.writes.run(answered, key)

    async def _pay(self, case: Complaint, item: dict[str, Any], payment_key: str) -> Answer:
        auth = self.own_authorization
        if item["type"] == "refund":
            return await self.peers.send(
                "orders",
                f"/orders/{case.order_id}/refund",
                auth,
                {"amount_cents": item["amount_cents"]},
                idempotency_key=payment_key,
            )
        if item["type"] == "points":
            return await self.peers.send(
                "loyalty",
                f"/accounts/{case.customer_id}/adjustments",
                auth,
                {"points": item["points"], "reason": f"complaint {case.complaint_id}: compensation"},
                idempotency_key=payment_key,
            )
        # A coupon: a service campaign of one recipient named by the payment key, so it exists
        # once (a second creation is a 409 that means it is there already).
        answer = await self.peers.send(
            "engagement",
            "/campaigns",
            auth,
            coupon_campaign(case, item, payment_key),
            idempotency_key=payment_key,
        )
        if answer.status == "refused" and answer.code == 409:
            return Answer("engagement", "ok", {"campaign_id": payment_key}, code=200)
        return answer

    async def _change(
        self, complaint_id: str, apply: Callable[[Complaint], Change], key: IdempotencyKey | None = None
    ) -> tuple[Outcome, Complaint | None]:
        changed: list[Complaint] = []

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            current = await self.store.get(complaint_id, session)
            if current is None:
                raise domain.no_complaint(complaint_id)
            change = apply(current)
            saved = await self.store.replace(
                change.complaint,
                domain.next_check(change.complaint, self.policy, self.clock.now()),
                session,
                domain.due_at(change.complaint, self.policy),
            )
            changed.append(saved)
            return Outcome(200, self.show(saved), change_events(Change(saved, change.facts)))

        return await self.writes.run(work, key), (changed[-1] if changed else None)

    # --- reading ---------------------------------------------------------------------------

    async def complaint(self, complaint_id: str) -> dict[str, Any]:
        complaint = await self.store.get(complaint_id)
        if complaint is None:
            raise domain.no_complaint(complaint_id)
        return self.show(complaint)

    async def complaints(
        self, filters: ComplaintFilters, limit: int, cursor: str | None, by_time_left: bool = False
    ) -> dict[str, Any]:
        found, next_cursor = await self.store.list(filters, limit, cursor, by_time_left)
        return {"items": [self.show(c) for c in found], "next_cursor": next_cursor}

    async def complaint_stats(
        self, since: datetime | None, until: datetime | None, category: str | None, severity: str | None
    ) -> dict[str, Any]:
        since, until = bounded_period(since, until, self.clock.now())
        found = await self.store.opened_between(since, until, category, severity)
        return {
            "from": since,
            "to": until,
            "hours": "SLA hours (business calendar, pauses excluded)",
            **domain.complaint_stats(found),
        }

    async def survey_stats(self, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        since, until = bounded_period(since, until, self.clock.now())
        return {
            "from": since,
            "to": until,
            **domain.survey_stats(await self.store.surveys_between(since, until)),
        }

    async def surveys_of(self, customer_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
        found, next_cursor = await self.store.surveys_of(customer_id, limit, cursor)
        return {"items": [present_survey(d) for d in found], "next_cursor": next_cursor}

    # --- the SLA watcher --------------------------------------------------------------------

    async def forget(self, customer_id: str) -> None:
        """Erasure: scrub the free text of every complaint of this customer."""
        for complaint in await self.store.of_customer(customer_id):
            for _ in range(5):
                try:
                    await self.store.overwrite_text(complaint, domain.anonymise(complaint, SCRUBBED))
                    break
                except ConcurrentChange:  # an agent or the watcher got there first: read again
                    complaint = await self.store.get(complaint.complaint_id)
                    if complaint is None:
                        break
            else:
                raise ConcurrentChange(complaint.complaint_id)  # redelivered and retried later

    async def watch_once(self) -> int:
        """Escalate every complaint whose SLA deadline has passed. Returns escalations made.
        Each breach is recorded on the complaint in the same transaction as its event, and the
        write only lands on the version read, so a breach escalates exactly once."""
        now = self.clock.now()
        escalations = 0
        for complaint_id in await self.store.due_for_check(now):
            new_breaches: list[str] = []

            def breach(c: Complaint, found: list[str] = new_breaches) -> Change:
                change = domain.breaches_at(c, now, self.policy)
                found[:] = [k for k in change.complaint.breaches if k not in c.breaches]
                return change

            try:
                outcome, complaint = await self._change(complaint_id, breach)
            except (Problem, ComplaintError):  # changed or gone meanwhile; the next round looks again
                continue
            if complaint is None:
                continue
            for kind in new_breaches:
                BREACHES.labels(kind, complaint.severity or "none").inc()
            count(complaint, outcome.events)
            escalations += sum(1 for e in outcome.events if e["type"].endswith(".escalated"))
            if complaint.supervision_due is not None:
                await self.supervise(complaint_id)
        OPEN.set(await self.store.open_count())
        return escalations

    # --- supervision: an escalation goes to the supervisor of its level -------------------------

    async def supervise(self, complaint_id: str) -> None:
        """Hand the case's pending escalation to the supervisor of its level in its team (the
        staff directory), and tell the agent who had it and the supervisor by email (the
        engagement service's notices, once each per escalation whatever is retried). While the
        directory or engagement does not answer, the escalation stays pending and the watcher's
        next round tries again."""
        case = await self.store.get(complaint_id)
        if case is None or case.supervision_due is None:
            return
        level = case.supervision_due
        try:
            supervisor, why = await self.staff.supervisor(case.team, level)
            if supervisor is not None:
                await self._notify_escalation(case, level, supervisor)
        except ComplaintError as exc:
            log.warning("escalation waits for its supervisor", case_id=complaint_id, reason=exc.detail)
            return
        try:
            await self._change(
                complaint_id,
                lambda c: domain.supervised(
                    c, self.clock.now(), level, supervisor, why or f"to {supervisor}"
                ),
            )
        except (Problem, ComplaintError):  # changed meanwhile: the next round looks again
            return
        SUPERVISED.labels("assigned" if supervisor else "nobody").inc()

    async def _notify_escalation(self, case: Complaint, level: int, supervisor: str) -> None:
        recipients = [("supervisor", supervisor)]
        if case.assignee and case.assignee != supervisor:
            recipients.append(("agent", case.assignee))
        for role, user_id in recipients:
            answer = await self.staff.user(user_id)
            if answer.status == "unavailable":
                raise ComplaintError(f"the staff directory did not answer: {answer.error}", Kind.UNAVAILABLE)
            if not answer.ok or not answer.body.get("email"):
                log.warning("no email for an escalation notice", case_id=case.complaint_id, user=user_id)
                continue
            user = answer.body
            subject, text = domain.escalation_notice(case, level, supervisor, role, user.get("locale"))
            sent = await self.peers.send(
                "engagement",
                "/notifications",
                self.own_authorization,
                {"to": user["email"], "subject": subject, "text": text},
                idempotency_key=f"case-{case.complaint_id}-escalation-{level}-{role}-{user_id}",
            )
            if sent.status == "unavailable":
                raise ComplaintError(f"engagement did not answer: {sent.error}", Kind.UNAVAILABLE)
            if not sent.ok:
                log.warning(
                    "escalation notice refused", case_id=case.complaint_id, user=user_id, error=sent.error
                )

    async def run_watcher(self, stop: asyncio.Event, every: float) -> None:
        while not stop.is_set():
            try:
                made = await self.watch_once()
                if made:
                    log.info("sla watcher escalated", escalations=made)
            except Exception:
                log.exception("sla watcher round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    # --- surveys ----------------------------------------------------------------------------

    async def submit_survey(self, body: SurveyIn, by: str, key: IdempotencyKey | None) -> Outcome:
        scores = body.scores.model_dump(exclude_none=True)
        kind = "csat" if body.complaint_id else "general"
        domain.check_survey(kind, scores, body.recommend)
        now = self.clock.now()
        survey = {
            "survey_id": new_id("sv"),
            "customer_id": body.customer_id,
            "complaint_id": body.complaint_id,
            "kind": kind,
            "scores": scores,
            "recommend": body.recommend,
            "submitted_at": now,
            "recorded_by": by,
        }

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            if body.complaint_id:
                complaint = await self.store.get(body.complaint_id, session)
                if complaint is None:
                    raise domain.no_complaint(body.complaint_id)
                await self.store.replace(
                    domain.with_survey(complaint, body.customer_id, survey["survey_id"]),
                    domain.next_check(complaint, self.policy),
                    session,
                )
            await self.store.insert_survey(survey, session)
            return Outcome(201, present_survey(survey), [survey_event(survey)])

        outcome = await self.writes.run(work, key)
        if not outcome.replayed:
            for dimension, score in scores.items():
                SCORES.labels(dimension).observe(score)
            if body.recommend is not None:
                RECOMMEND.observe(body.recommend)
        return outcome


def coupon_campaign(case: Complaint, item: dict[str, Any], campaign_id: str) -> dict[str, Any]:
    """The engagement campaign that issues one compensation coupon to the complaint's customer
    (a service message, not marketing: nobody held out, no consent needed). Built from the
    case alone, so a retry sends the same request."""
    yuan = item["amount_cents"] / 100
    return {
        "campaign_id": campaign_id,
        "name": f"Compensation for complaint {case.complaint_id}",
        "kind": "manual",
        "channel": "email",
        "purpose": "service",
        "control_share": 0,
        "recipients": [case.customer_id],
        "offer": {
            "kind": "amount",
            "value": item["amount_cents"],
            "min_spend_cents": item.get("min_spend_cents", 0),
            "valid_days": item.get("valid_days", 30),
        },
        "default_locale": "zh-CN",
        "templates": {
            "en": {
                "subject": "A coupon for you, with our apologies",
                "text": f"We are sorry for the trouble (complaint {case.complaint_id}). Your coupon: "
                "{{ offer.code }}, " + f"{yuan:g} yuan off, until " + "{{ offer.expires_at[:10] }}.",
                "html": f"<p>We are sorry for the trouble (complaint {case.complaint_id}).</p>"
                "<p>Your coupon: <b>{{ offer.code }}</b>, " + f"{yuan:g} yuan off, until "
                "{{ offer.expires_at[:10] }}.</p>",
            },
            "zh-CN": {
                "subject": "致歉优惠券",
                "text": f"给您带来不便，深表歉意（投诉 {case.complaint_id}）。优惠券："
                "{{ offer.code }}，" + f"立减{yuan:g}元，" + "{{ offer.expires_at[:10] }}前有效。",
                "html": f"<p>给您带来不便，深表歉意（投诉 {case.complaint_id}）。</p>"
                "<p>优惠券：<b>{{ offer.code }}</b>，" + f"立减{yuan:g}元，"
                "{{ offer.expires_at[:10] }}前有效。</p>",
            },
        },
    }


def _reference(item: dict[str, Any], answer: Answer) -> str | None:
    """What the paying service calls the payment: the order, the ledger entry, the campaign."""
    body = answer.body if isinstance(answer.body, dict) else {}
    for field_name in ("refund_id", "entry_id", "campaign_id", "order_id"):
        if body.get(field_name):
            return str(body[field_name])[:200]
    return None
