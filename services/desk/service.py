"""The desk's use cases: notes and tasks written with their events (outbox), the watcher that
sends reminders and marks tasks overdue, the timeline and case history folded from every
topic, and the service reports."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import structlog
from motor.motor_asyncio import AsyncIOMotorClientSession
from prometheus_client import Counter

from services.common import kafka
from services.common.clock import Clock, bounded_period, parse_rfc3339, to_rfc3339
from services.common.errors import Kind
from services.common.fields import new_id
from services.common.peers import Peers, Unavailable
from services.common.settings import Settings
from services.common.writes import IdempotencyKey, Outcome, Writes

from . import domain
from .events import CONSUMED, GROUP, note_event, task_event
from .models import NoteChange, NoteIn, TaskDone, TaskIn
from .staff import StaffDirectory
from .store import DeskStore

log = structlog.get_logger(__name__)
TASKS_WATCHED = Counter("crm_desk_task_transitions_total", "Tasks the watcher moved, by state.", ["state"])
TASK_NOTICES = Counter(
    "crm_desk_task_notices_total",
    "Task reminder and overdue emails, by notice and outcome (sent, nobody, refused, skipped, unavailable).",
    ["notice", "outcome"],
)


def _time(value: Any) -> str | None:
    return to_rfc3339(value) if value is not None else None


class DeskService:
    def __init__(
        self,
        store: DeskStore,
        writes: Writes,
        clock: Clock,
        settings: Settings,
        staff: StaffDirectory,
        peers: Peers,
    ) -> None:
        self.store = store
        self.writes = writes
        self.clock = clock
        self.settings = settings
        self.staff = staff
        self.peers = peers
        self.remind_before = timedelta(minutes=settings.desk_remind_minutes)

    async def consume(self, settings: Settings, stop: asyncio.Event) -> None:
        await kafka.consume(settings, GROUP, CONSUMED.topics, self.handle_batch, stop)

    async def handle_batch(self, batch: list[kafka.Delivered]) -> list[kafka.Refused]:
        """Each event to its handler; what reaches the timeline is stored for the whole batch
        at once (a few writes a batch rather than a few an event)."""
        refused: list[kafka.Refused] = []
        arrived: list[dict[str, Any]] = []
        for delivered in batch:
            await CONSUMED.dispatch(self, delivered, arrived, refused=refused)
        if arrived:
            await self.record(arrived)
        return refused

    # --- notes ---

    def show_note(self, note: dict) -> dict[str, Any]:
        return {
            "note_id": note["_id"],
            "customer_id": note["customer_id"],
            "text": note["text"],
            "pinned": note["pinned"],
            "author": note["author"],
            "added_at": _time(note["added_at"]),
            "changed_at": _time(note["changed_at"]),
            "erased": note.get("erased", False),
        }

    async def add_note(self, customer_id: str, body: NoteIn, by: str, key: IdempotencyKey | None) -> Outcome:
        now = self.clock.now()
        note = domain.new_note(new_id("n"), customer_id, body.text, body.pinned, by, now)

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            await self.store.insert_note(note, session)
            return Outcome(201, self.show_note(note), [note_event("added", note, now)])

        return await self.writes.run(work, key)

    async def change_note(self, note_id: str, body: NoteChange, key: IdempotencyKey | None) -> Outcome:
        changes = body.model_dump(exclude_none=True)
        if not changes:
            raise domain.DeskError("nothing to change: give pinned or text")

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            now = self.clock.now()
            note = await self.store.set_note(note_id, {**changes, "changed_at": now}, session)
            if note is None:
                raise domain.DeskError(f"no note {note_id}", Kind.NOT_FOUND)
            return Outcome(200, self.show_note(note), [note_event("changed", note, now)])

        return await self.writes.run(work, key)

    async def notes(self, customer_id: str, limit: int) -> dict[str, Any]:
        return {"items": [self.show_note(n) for n in await self.store.notes_of(customer_id, limit)]}

    # --- tasks ---

    def show_task(self, task: dict) -> dict[str, Any]:
        return {
            "task_id": task["_id"],
            "customer_id": task["customer_id"],
            "kind": task["kind"],
            "title": task["title"],
            "assignee": task["assignee"],
            "team": task["team"],
            "case_id": task.get("case_id"),
            "episode_id": task.get("episode_id"),
            "status": domain.task_status(task, self.clock.now()),
            "due_at": _time(task["due_at"]),
            "created_by": task["created_by"],
            "created_at": _time(task["created_at"]),
            "reminded_at": _time(task.get("reminded_at")),
            "overdue_at": _time(task.get("overdue_at")),
            "completed_at": _time(task.get("completed_at")),
            "outcome": task.get("outcome"),
            "erased": task.get("erased", False),
        }

    async def create_task(
        self, body: TaskIn, by: str, key: IdempotencyKey | None, authorization: str | None
    ) -> Outcome:
        if body.assignee is not None:
            await self.staff.ensure_assignable(body.assignee, authorization)
        now = self.clock.now()
        task = domain.new_task(
            new_id("t"),
            body.customer_id,
            body.kind,
            body.title,
            body.due_at,
            body.assignee,
            body.team,
            by,
            now,
            self.remind_before,
            case_id=body.case_id,
        )
        return await self._open_task(task, now, key)

    async def _open_task(self, task: dict, now: Any, key: IdempotencyKey | None = None) -> Outcome:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            if not await self.store.insert_task(task, session):
                return Outcome(200, None)
            created = task_event(
                "created",
                task,
                now,
                title=task["title"],
                case_id=task["case_id"],
                episode_id=task["episode_id"],
            )
            return Outcome(201, self.show_task(task), [created])

        return await self.writes.run(work, key)

    async def churn_warned(self, warning: dict[str, Any]) -> None:
        """A churn warning opens one churn-action task for the team's queue, due within
        CRM_DESK_CHURN_TASK_HOURS of the warning."""
        warned_at = parse_rfc3339(warning["warned_at"])
        task = domain.new_task(
            domain.churn_task_id(warning["episode_id"]),
            warning["customer_id"],
            "churn_action",
            domain.churn_task_title(warning),
            warned_at + timedelta(hours=self.settings.desk_churn_task_hours),
            None,
            None,
            "churn-warning",
            self.clock.now(),
            self.remind_before,
            episode_id=warning["episode_id"],
        )
        await self._open_task(task, self.clock.now())

    async def task(self, task_id: str) -> dict[str, Any]:
        task = await self.store.task(task_id)
        if task is None:
            raise domain.DeskError(f"no task {task_id}", Kind.NOT_FOUND)
        return self.show_task(task)

    async def complete_task(
        self, task_id: str, body: TaskDone, by: str, key: IdempotencyKey | None
    ) -> Outcome:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            task = await self.store.task(task_id, session)
            if task is None:
                raise domain.DeskError(f"no task {task_id}", Kind.NOT_FOUND)
            now = self.clock.now()
            changes = domain.complete(task, body.outcome, by, now)
            if not await self.store.set_task(task_id, task["state"], changes, session):
                raise domain.DeskError("the task changed meanwhile; read it again", Kind.CONFLICT)
            done = {**task, **changes}
            event = task_event("completed", done, now, outcome=body.outcome, completed_by=by)
            return Outcome(200, self.show_task(done), [event])

        return await self.writes.run(work, key)

    async def tasks(
        self,
        assignee: str | None,
        team: str | None,
        customer_id: str | None,
        status: str | None,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        """Soonest due first; `status` as task_status tells it, read from the times so a list
        between the watcher's rounds is already right."""
        now_s = self.clock.now().timestamp()
        query: dict[str, Any] = {
            k: v for k, v in (("assignee", assignee), ("team", team), ("customer_id", customer_id)) if v
        }
        if status == "done":
            query["state"] = "done"
        elif status is not None:
            query["state"] = {"$in": list(domain.OPEN_STATES)}
            if status == "overdue":
                query["due_s"] = {"$lte": now_s}
            elif status == "due":
                query["due_s"] = {"$gt": now_s}
                query["remind_s"] = {"$lte": now_s}
            else:
                query["remind_s"] = {"$gt": now_s}
        rows, next_cursor = await self.store.task_page(query, limit, cursor)
        return {"items": [self.show_task(t) for t in rows], "next_cursor": next_cursor}

    async def run_watcher(self, stop: asyncio.Event) -> None:
        """Reminders when a task's time nears, and overdue when it passed: each once, with its
        event and an email to whoever has the task (send_notices)."""
        while not stop.is_set():
            try:
                await self.watch_once()
                await self.send_notices()
            except Exception:  # the database away: the next round looks again
                log.exception("task watcher round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.desk_watch_seconds)

    async def watch_once(self, batch: int = 200) -> int:
        moved = 0
        now = self.clock.now()
        steps = (
            ("open", "remind_s", "due", "reminded"),
            ("open", "due_s", "overdue", "overdue"),
            ("due", "due_s", "overdue", "overdue"),
        )
        for state, field, to_state, verb in steps:
            for task in await self.store.tasks_reaching(state, field, now.timestamp(), batch):
                if await self._move(task, state, to_state, verb, now):
                    moved += 1
                    TASKS_WATCHED.labels(to_state).inc()
        return moved

    async def _move(self, task: dict, state: str, to_state: str, verb: str, now: Any) -> bool:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            # the email owed is flagged with the move, so it is sent once whatever restarts
            changes = {"state": to_state, f"{verb}_at": now, domain.pending_notice(domain.NOTICE_OF[verb]): 1}
            if not await self.store.set_task(task["_id"], state, changes, session):
                return Outcome(200, False)
            return Outcome(200, True, [task_event(verb, task, now)])

        return bool((await self.writes.run(work)).body)

    async def send_notices(self, batch: int = 200) -> int:
        """Email each flagged reminder and overdue notice to the assignee (or the team's level-1
        supervisor) through the engagement service, once per task and notice: the flag goes
        only when the notice went or never can, and engagement answers a retried
        Idempotency-Key with its first answer. Staff or engagement away: it stays flagged for
        the next round (logged, counted)."""
        sent = 0
        for notice in domain.NOTICES:
            for task in await self.store.tasks_owing(notice, batch):
                outcome = await self._notify(task, notice)
                TASK_NOTICES.labels(notice, outcome).inc()
                if outcome == "unavailable":
                    continue
                await self.store.settle_notice(task["_id"], notice)
                sent += outcome == "sent"
        return sent

    async def _notify(self, task: dict, notice: str) -> str:
        if task["state"] not in domain.OPEN_STATES or task.get("erased"):
            return "skipped"  # done meanwhile, or its customer erased: nothing to remind of
        if self.staff.own_authorization is None:
            log.warning(
                "task notice not sent: the desk has no key of its own (CRM_DESK_API_KEY)", task_id=task["_id"]
            )
            return "refused"
        try:
            user, why = await self.staff.to_tell(task)
        except Unavailable as exc:
            log.warning("task notice waits for the staff directory", task_id=task["_id"], error=str(exc))
            return "unavailable"
        if user is None:
            log.warning("task notice has nobody to go to", task_id=task["_id"], notice=notice, reason=why)
            return "nobody"
        subject, text = domain.task_notice(task, notice, user.get("locale"))
        answer = await self.peers.send(
            "engagement",
            "/notifications",
            self.staff.own_authorization,
            {"to": user["email"], "subject": subject, "text": text},
            idempotency_key=domain.notice_key(task["_id"], notice),
        )
        if answer.status == "unavailable":
            return "unavailable"  # logged by peers
        if not answer.ok:
            log.warning("task notice refused", task_id=task["_id"], notice=notice, error=answer.error)
            return "refused"
        return "sent"

    # --- the timeline and the case history ---

    async def record(self, events: list[dict[str, Any]]) -> None:
        """Events on their customers' timelines, and in their cases' histories when they are
        about a case; both once per event id."""
        customers = {e["data"]["customer_id"] for e in events}
        erased = await self.store.erased_among(customers)
        entries = [domain.timeline_entry(e, erased=e["data"]["customer_id"] in erased) for e in events]
        await self.store.add_entries(entries)
        # erased while these were being stored: scrub them like the rest
        personal = {e["customer_id"] for e in entries if e["personal"]}
        for customer_id in await self.store.erased_among(personal) if personal else set():
            await self.store.forget(customer_id, self.clock.now())
        records = [r for e in events if (r := domain.case_record(e)) is not None]
        if records:
            await self.store.add_case_records(records)

    def show_entry(self, entry: dict) -> dict[str, Any]:
        return {
            "event_id": entry["event_id"],
            "type": entry["type"],
            "source": entry["source"],
            "subject": entry["subject"],
            "at": _time(entry["at"]),
            "data": {**entry["summary"], **entry["personal"]},
            "erased": entry["erased"],
        }

    async def timeline(
        self, customer_id: str, types: list[str] | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        rows, next_cursor = await self.store.timeline_page(customer_id, types, limit, cursor)
        return {
            "customer_id": customer_id,
            "items": [self.show_entry(e) for e in rows],
            "next_cursor": next_cursor,
        }

    async def service_report(self, by: str, since: Any, until: Any) -> dict[str, Any]:
        """Cases opened in the period (at most MAX_PERIOD, like every summary over a period),
        each folded from its whole history."""
        now = self.clock.now()
        since, until = bounded_period(since, until, now)
        histories = await self.store.case_records(since.timestamp(), until.timestamp())
        cases = [domain.fold_case(case_id, records) for case_id, records in histories.items()]
        return {
            "from": to_rfc3339(since),
            "to": to_rfc3339(until),
            "as_of": to_rfc3339(now),
            **domain.service_report(cases, by, now),
        }

    async def forget(self, customer_id: str) -> None:
        await self.store.forget(customer_id, self.clock.now())
