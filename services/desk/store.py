"""The desk's MongoDB: notes, tasks, the timeline (one entry per event, kept as long as the shop
keeps data: no TTL), the case history the service reports fold, and who was erased."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClientSession, AsyncIOMotorDatabase
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError

from services.common.erasure import SCRUBBED
from services.common.mongo import between, index
from services.common.pagination import Sort, page

from .domain import NOTICES, pending_notice

NOTES = "notes"
TASKS = "tasks"
TIMELINE = "timeline"
CASE_EVENTS = "case_events"
CASES = "cases"
ERASED = "erased_customers"
DUPLICATE_KEY = 11000

INDEXES = {
    NOTES: [index("customer_id", ("pinned", -1), ("added_at", -1))],
    TASKS: [
        index("state", "remind_s"),
        index("state", "due_s"),
        index("assignee", "state", "due_s"),
        index("team", "state", "due_s"),
        index("customer_id", "due_s"),
        *(index(pending_notice(notice)) for notice in NOTICES),
    ],
    # newest first within a customer; event_id breaks ties (keep _id out of compound indexes)
    TIMELINE: [index("customer_id", ("at_s", -1), ("event_id", -1))],
    CASE_EVENTS: [index("case_id"), index("customer_id")],
    CASES: [index("opened_s")],
    ERASED: [],
}
# Times an update sets are kept as epoch seconds: a date set by an update is text on the
# embedded server (mongo.DatabaseCapabilities.dates_in_updates); flags as 0/1 for the same reason.
UPDATED_TIMES = ("changed_at", "reminded_at", "overdue_at", "completed_at")


def as_stored(doc: dict) -> dict:
    out = dict(doc)
    for name in UPDATED_TIMES:
        if isinstance(out.get(name), datetime):
            out[name] = out[name].timestamp()
    for name in ("pinned", "erased"):
        if name in out:
            out[name] = int(bool(out[name]))
    return out


def _read(doc: dict | None) -> dict | None:
    if doc is None:
        return None
    for name in UPDATED_TIMES:
        if isinstance(doc.get(name), int | float):
            doc[name] = datetime.fromtimestamp(doc[name], UTC)
    for name in ("pinned", "erased"):
        if name in doc:
            doc[name] = bool(doc[name])
    return doc


TIMELINE_SORT: Sort = [("at_s", -1), ("event_id", -1)]
TASK_SORT: Sort = [("due_s", 1), ("task_id", 1)]


async def _insert_new(collection: Any, docs: list[dict]) -> None:
    """Insert what is not there yet: a document whose _id is stored already is skipped."""
    unique = list({d["_id"]: d for d in docs}.values())
    if not unique:
        return
    try:
        await collection.insert_many(unique, ordered=False)
    except BulkWriteError as exc:
        if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
            raise


class DeskStore:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self.db = db
        self.notes = db[NOTES]
        self.tasks = db[TASKS]
        self.timeline = db[TIMELINE]
        self.case_events = db[CASE_EVENTS]
        self.cases = db[CASES]
        self.erased = db[ERASED]

    # --- notes ---

    async def insert_note(self, note: dict, session: AsyncIOMotorClientSession) -> None:
        await self.notes.insert_one(as_stored(note), session=session)

    async def note(self, note_id: str, session: AsyncIOMotorClientSession | None = None) -> dict | None:
        return _read(await self.notes.find_one({"_id": note_id}, session=session))

    async def set_note(self, note_id: str, changes: dict, session: AsyncIOMotorClientSession) -> dict | None:
        return _read(
            await self.notes.find_one_and_update(
                {"_id": note_id},
                {"$set": as_stored(changes)},
                session=session,
                return_document=ReturnDocument.AFTER,
            )
        )

    async def notes_of(self, customer_id: str, limit: int) -> list[dict]:
        """Pinned first, then newest first."""
        cursor = self.notes.find({"customer_id": customer_id}).sort([("pinned", -1), ("added_at", -1)])
        return [_read(n) for n in await cursor.limit(limit).to_list(None)]

    # --- tasks ---

    async def insert_task(self, task: dict, session: AsyncIOMotorClientSession) -> bool:
        """False when a task with this id exists (a churn warning delivered again)."""
        if await self.tasks.find_one({"_id": task["_id"]}, {"_id": 1}, session=session):
            return False
        await self.tasks.insert_one(as_stored({**task, "task_id": task["_id"]}), session=session)
        return True

    async def task(self, task_id: str, session: AsyncIOMotorClientSession | None = None) -> dict | None:
        return _read(await self.tasks.find_one({"_id": task_id}, session=session))

    async def set_task(
        self, task_id: str, expected_state: str, changes: dict, session: AsyncIOMotorClientSession
    ) -> bool:
        """Only from the state it was read in: a watcher and an agent racing change it once."""
        result = await self.tasks.update_one(
            {"_id": task_id, "state": expected_state}, {"$set": as_stored(changes)}, session=session
        )
        return result.modified_count == 1

    async def tasks_reaching(self, state: str, field: str, now_s: float, limit: int) -> list[dict]:
        """Tasks in `state` whose `field` time has come: the watcher's next round."""
        found = await self.tasks.find({"state": state, field: {"$lte": now_s}}).limit(limit).to_list(None)
        return [_read(t) for t in found]

    async def tasks_owing(self, notice: str, limit: int) -> list[dict]:
        """Tasks whose `notice` email is still to go (flagged by the watcher's move)."""
        found = await self.tasks.find({pending_notice(notice): 1}).limit(limit).to_list(None)
        return [_read(t) for t in found]

    async def settle_notice(self, task_id: str, notice: str) -> None:
        """The notice went (or can never go): the flag is cleared so no round sends it again."""
        await self.tasks.update_one({"_id": task_id}, {"$set": {pending_notice(notice): 0}})

    async def task_page(
        self, query: dict[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[dict], str | None]:
        rows, next_cursor = await page(self.tasks, query, TASK_SORT, limit, cursor)
        return [_read(t) for t in rows], next_cursor

    # --- the timeline ---

    async def add_entries(self, entries: list[dict]) -> None:
        """Once per event id: a redelivered event adds nothing."""
        await _insert_new(self.timeline, [as_stored(e) for e in entries])

    async def timeline_page(
        self, customer_id: str, kinds: list[str] | None, limit: int, cursor: str | None
    ) -> tuple[list[dict], str | None]:
        query: dict[str, Any] = {"customer_id": customer_id}
        if kinds:
            query["type"] = {"$in": kinds}
        rows, next_cursor = await page(self.timeline, query, TIMELINE_SORT, limit, cursor, pipeline=True)
        return [_read(e) for e in rows], next_cursor

    # --- cases ---

    async def add_case_records(self, records: list[dict]) -> None:
        await _insert_new(self.case_events, records)
        opened = [
            UpdateOne({"_id": r["case_id"]}, {"$set": {"opened_s": r["at_s"]}}, upsert=True)
            for r in records
            if r["verb"] == "opened"
        ]
        if opened:
            await self.cases.bulk_write(opened, ordered=False)

    async def case_records(self, since_s: float | None, until_s: float | None) -> dict[str, list[dict]]:
        """The whole history of every case opened in the period, by case."""
        condition = between(since_s, until_s)
        query = {"opened_s": condition} if condition else {}
        ids = [c["_id"] async for c in self.cases.find(query, {"_id": 1})]
        by_case: dict[str, list[dict]] = {case_id: [] for case_id in ids}
        for start in range(0, len(ids), 500):
            async for record in self.case_events.find({"case_id": {"$in": ids[start : start + 500]}}):
                by_case[record["case_id"]].append(record)
        return by_case

    # --- erasure ---

    async def erased_among(self, customer_ids: set[str]) -> set[str]:
        found = self.erased.find({"_id": {"$in": sorted(customer_ids)}}, {"_id": 1})
        return {doc["_id"] async for doc in found}

    async def forget(self, customer_id: str, at: datetime) -> None:
        """Notes' and tasks' texts, and every timeline entry's personal content, go; what
        happened and when stays. Remembered, so an event that arrives later is stored scrubbed."""
        await self.erased.update_one({"_id": customer_id}, {"$setOnInsert": {"erased_at": at}}, upsert=True)
        await self.notes.update_many(
            {"customer_id": customer_id}, {"$set": {"text": SCRUBBED, "author": SCRUBBED, "erased": 1}}
        )
        await self.tasks.update_many(
            {"customer_id": customer_id},
            {"$set": {"title": SCRUBBED, "erased": 1}, "$unset": {"outcome": ""}},
        )
        await self.timeline.update_many({"customer_id": customer_id}, {"$set": {"personal": {}, "erased": 1}})
