"""Complaint use cases, the SLA watcher and surveys. Each write stores the complaint with its
events in one transaction."""

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

from services.common.clock import Clock, bounded_period
from services.common.erasure import SCRUBBED
from services.common.errors import ConcurrentChange
from services.common.fields import new_id
from services.common.peers import Peers
from services.common.problems import Problem
from services.common.writes import IdempotencyKey, Outcome, Writes

from . import domain
from .domain import Action, Change, Complaint, ComplaintError, ComplaintFilters, SlaPolicy
from .events import change_events, survey_event
from .models import AssignIn, ComplaintIn, NoteIn, ReopenIn, ResolveIn, SurveyIn, present, present_survey
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


def load_policy(path: Path | None) -> SlaPolicy:
    if path is None:
        return SlaPolicy.default()
    return SlaPolicy.from_config(tomllib.loads(path.read_text()).get("sla", {}))


def count(complaint: Complaint, events: list[dict[str, Any]]) -> None:
    for event in events:
        kind = event["type"]
        if kind == "crm.complaint.opened":
            OPENED.labels(complaint.category, complaint.severity).inc()
        elif kind == "crm.complaint.resolved":
            within = "true" if event["data"].get("within_sla") else "false"
            RESOLVED.labels(complaint.category, complaint.severity, within).inc()
        elif kind == "crm.complaint.escalated":
            ESCALATED.labels(complaint.category, complaint.severity, event["data"]["reason"]).inc()


class ComplaintService:
    def __init__(
        self, store: ComplaintStore, writes: Writes, clock: Clock, policy: SlaPolicy, peers: Peers
    ) -> None:
        self.store = store
        self.writes = writes
        self.clock = clock
        self.policy = policy
        self.peers = peers

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
        self, body: ComplaintIn, by: str, key: IdempotencyKey | None, authorization: str | None
    ) -> Outcome:
        vip = body.vip
        if vip is None:
            vip = await self.is_vip(body.customer_id, authorization)
        change = domain.open_complaint(
            complaint_id=new_id("cp"),
            customer_id=body.customer_id,
            category=body.category,
            severity=body.severity,
            channel=body.channel,
            order_id=body.order_id,
            description=body.description,
            vip=vip,
            at=self.clock.now(),
            policy=self.policy,
            by=by,
        )

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            await self.store.insert(
                change.complaint, domain.next_check(change.complaint, self.policy), session
            )
            return Outcome(201, self.show(change.complaint), change_events(change))

        outcome = await self.writes.run(work, key)
        if not outcome.replayed:
            count(change.complaint, outcome.events)
        return outcome

    def _rule(self, action: Action, body: Any, at: datetime, by: str) -> Callable[[Complaint], Change]:
        cal = self.policy.calendar
        if action is Action.ASSIGN:
            assert isinstance(body, AssignIn)
            return lambda c: domain.assign(c, at, body.assignee, by, cal)
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
        apply = self._rule(action, body, self.clock.now(), by)
        outcome, complaint = await self._change(complaint_id, apply, key)
        if not outcome.replayed and complaint is not None:
            count(complaint, outcome.events)
        return outcome

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
                change.complaint, domain.next_check(change.complaint, self.policy), session
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

    async def complaints(self, filters: ComplaintFilters, limit: int, cursor: str | None) -> dict[str, Any]:
        found, next_cursor = await self.store.list(filters, limit, cursor)
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
                BREACHES.labels(kind, complaint.severity).inc()
            count(complaint, outcome.events)
            escalations += len(outcome.events)
        OPEN.set(await self.store.open_count())
        return escalations

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
