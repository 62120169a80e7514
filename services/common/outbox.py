"""Transactional outbox: an event is stored in the same transaction as the write that caused
it, and a relay publishes it when the broker is reachable. No accepted write loses its event
because the broker is down; a relay crash between publish and delete republishes (at least
once), which consumers absorb by deduplicating on the event id.

A row holds one write's events (up to ROW_EVENTS), already encoded: fewer, smaller documents
to store (half the cost of a row per event on the embedded server) and nothing to re-encode
when publishing. Rows are inserted and deleted, never updated, so their records stay binary
(`DatabaseCapabilities.binary_in_updates` in services/common/mongo.py). The relay uses no
transaction: its lease is one atomic update, renewed page by page while it drains, and its
deletes are idempotent.

A published row is not dropped but moved to `outbox_published` for `outbox_retention_seconds`
(Retention): the embedded broker keeps its logs in memory, so a broker crash loses events it
had acknowledged; when the broker's topics turn out to be new ones (kafka.TopicIds), the relay
sends every retained row again, oldest first, before anything newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import orjson
import structlog
from bson import Binary, ObjectId
from motor.motor_asyncio import AsyncIOMotorClientSession
from pymongo.errors import BulkWriteError, DuplicateKeyError

from . import metrics
from .clock import SystemClock, as_utc
from .contracts import encode_bounded, registry
from .kafka import RECORD_REFUSED_ERRORS, EventProducer, PublishError, TopicIds, topics_recreated
from .mongo import Mongo, index
from .settings import Settings

log = structlog.get_logger(__name__)

OUTBOX = "outbox"
LEASES = "outbox_lease"
PARKED = "outbox_parked"  # events the broker refused for good, with the reason
PUBLISHED = "outbox_published"  # published rows, kept for the retention window (Retention)
INDEXES = {
    OUTBOX: [index("created_at")],
    LEASES: [],
    PARKED: [index("parked_at")],
    PUBLISHED: [index("expires_at")],
}
ROW_EVENTS = 100
# Bytes of records a row holds at most, far under MongoDB's 16 MB document limit (an event is
# at most contracts.MAX_EVENT_BYTES, so a row is at most about ROW_BYTES + 1 MB).
ROW_BYTES = 8 * 1_048_576
BACKLOG_REPORT_SECONDS = 5.0
ERASED = "crm.customer.erased"  # its relay forgets what it kept about the person (Retention.keep)


def rows_of(records: list[bytes]) -> list[list[bytes]]:
    """Records in rows of at most ROW_EVENTS records and about ROW_BYTES bytes, in order."""
    rows: list[list[bytes]] = []
    size = 0
    for raw in records:
        if not rows or len(rows[-1]) >= ROW_EVENTS or size + len(raw) > ROW_BYTES:
            rows.append([])
            size = 0
        rows[-1].append(raw)
        size += len(raw)
    return rows


def _retriable(error: Exception | None) -> bool:
    """Not acknowledged, but may be later (the broker away, slow, or its producer replaced)."""
    return error is not None and not isinstance(error, RECORD_REFUSED_ERRORS)


# How often (seconds) a publisher compares the broker's topic ids with those it published
# under, unless a failed publish or a replaced producer says to look before the next one.
TOPIC_CHECK_SECONDS = 1.0


class Retention:
    """Published rows kept for `outbox_retention_seconds`, sent again, oldest first, when the
    broker comes back without them (its topics have new ids: kafka.TopicIds). Shared by every
    service's outbox relay and the scorer's signals. The ids published under are kept beside the
    rows (`<collection>_topics`), so a publisher restarted with the broker still notices."""

    def __init__(self, db: Any, collection: str, settings: Settings) -> None:
        self.rows = db[collection]
        self.marks = db[f"{collection}_topics"]
        self.window = settings.outbox_retention_seconds
        self.window_delta = timedelta(seconds=self.window)
        self.batch = settings.outbox_batch
        self.topic_ids = TopicIds(settings)
        self._clock = SystemClock()
        self._next_check = 0.0
        self._published_under: dict[str, str] | None = None  # read from `marks` once, then kept

    @property
    def enabled(self) -> bool:
        return self.window > 0

    async def keep(self, records: Sequence[bytes]) -> None:
        """Keep published records, in the order they were published, for the window. A kept
        document holds up to a row's worth of records as one binary value, one JSON record a
        line (`contracts.encode` writes no newline): the embedded server's cost grows with a
        document's values, and one document a published row, each a list of records, halved
        the relay's throughput (bench/outbox.py)."""
        if not self.enabled or not records:
            return
        now = self._clock.now()
        docs, erased = [], []
        for packed in rows_of(list(records)):
            heads = [orjson.loads(raw) for raw in packed]
            erased += [head["subject"] for head in heads if head["type"] == ERASED]
            docs.append(
                {
                    "_id": ObjectId(),  # in publishing order: the order they go again in
                    "lines": Binary(b"\n".join(packed)),
                    # whose events (the subject is the customer), for erasure: not indexed, as
                    # an index would cost every insert and erasures are rare
                    "subjects": sorted({head["subject"] for head in heads}),
                    "published_at": now,
                    "expires_at": now + self.window_delta,
                }
            )
        await self.rows.insert_many(docs, ordered=True)
        # The relay that publishes an erasure (profiles) forgets what it kept about the person
        # once the erasure is out: every earlier event of theirs was published before it.
        for customer_id in erased:
            await forget_published(self.rows, customer_id)

    def suspect(self) -> None:
        """A publish failed or the producer was replaced (the broker may have restarted): look
        at the topic ids before the next publish."""
        self._next_check = 0.0

    async def restore(self, producer: Callable[[], Awaitable[EventProducer]]) -> int:
        """Before publishing anything new: when a topic's id is not the one the retained rows
        were published under, send them all again, oldest first (consumers are idempotent on
        the event id); returns how many events. Raises PublishError when the broker is away,
        or does not take them all (the next call starts over)."""
        if not self.enabled or time.monotonic() < self._next_check:
            return 0
        now = await asyncio.to_thread(self.topic_ids.current)
        if self._published_under is None:
            stored = await self.marks.find_one({"_id": "topics"})
            self._published_under = {t["topic"]: t["id"] for t in stored["ids"]} if stored else {}
        published_under = self._published_under
        recreated = topics_recreated(published_under, now)
        sent = 0
        if recreated:
            log.warning(
                "the broker came back without the events it had; publishing the retained ones again",
                collection=self.rows.name,
                topics=recreated,
            )
            sent = await self._send_again(await producer())
        known = {**published_under, **now}  # a topic missing for now keeps the id it had
        if known != published_under:
            ids = [{"topic": name, "id": topic_id} for name, topic_id in sorted(known.items())]
            await self.marks.update_one({"_id": "topics"}, {"$set": {"ids": ids}}, upsert=True)
            self._published_under = known
        self._next_check = time.monotonic() + TOPIC_CHECK_SECONDS
        return sent

    async def restore_when_idle(self, producer: Callable[[], Awaitable[EventProducer]]) -> None:
        """`restore` with nothing new waiting: a broker still away is no error (looked at
        again next time)."""
        try:
            await self.restore(producer)
        except Exception:  # noqa: BLE001 - the broker away or not set up again yet
            self.suspect()

    async def _send_again(self, producer: EventProducer) -> int:
        sent = 0
        after = None
        while True:
            query = {} if after is None else {"_id": {"$gt": after}}
            page = await self.rows.find(query).sort("_id", 1).limit(self.batch).to_list(None)
            if not page:
                return sent
            items = [producer.encoded(raw) for kept in page for raw in bytes(kept["lines"]).split(b"\n")]
            outcomes = await asyncio.to_thread(producer.deliver, items)
            failed = next((e for e in outcomes if _retriable(e)), None)
            if failed is not None:
                raise PublishError(f"broker did not acknowledge: {failed!r}") from failed
            metrics.OUTBOX_REPUBLISHED.inc(len(items))
            sent += len(items)
            after = page[-1]["_id"]

    async def prune(self) -> None:
        """Drop rows past the window."""
        if self.enabled:
            await self.rows.delete_many({"expires_at": {"$lt": self._clock.now()}})

    def close(self) -> None:
        self.topic_ids.close()


async def forget_published(kept: Any, customer_id: str) -> None:
    """Erasure: the customer's kept events go, but the erasure itself (nothing personal in it,
    and a consumer that had not read it must get it again). `kept`: a service's
    `outbox_published`. A document holding them is stored again without them: deleted, then
    inserted, as updates cannot carry binary values on the embedded server
    (`DatabaseCapabilities.binary_in_updates`)."""
    async for doc in kept.find({"subjects": customer_id}):
        heads = [(raw, orjson.loads(raw)) for raw in bytes(doc["lines"]).split(b"\n")]
        lines = [raw for raw, head in heads if head["subject"] != customer_id or head["type"] == ERASED]
        subjects = [s for s in doc["subjects"] if s != customer_id]  # not found again
        await kept.delete_one({"_id": doc["_id"]})
        if lines:
            await kept.insert_one({**doc, "lines": Binary(b"\n".join(lines)), "subjects": subjects})


class Outbox:
    def __init__(self, mongo: Mongo, settings: Settings, service: str) -> None:
        self.mongo = mongo
        self.settings = settings
        self.service = service
        self.collection = mongo.db[OUTBOX]
        self._wake = asyncio.Event()
        self._producer: EventProducer | None = None
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{ObjectId()}"
        self._clock = SystemClock()
        self._lease_until = None  # while well inside our lease, no need to renew it
        self._next_report = 0.0
        self.retention = Retention(mongo.db, PUBLISHED, settings)

    async def add(self, session: AsyncIOMotorClientSession, events: Sequence[dict[str, Any]]) -> None:
        """Store events inside the caller's transaction. Validates first: a contract breach
        is a bug in the service and must not reach the broker."""
        if not events:
            return
        schemas = registry()
        for event in events:
            schemas.validate(event)
        now = self._clock.now()
        rows = [
            {"_id": ObjectId(), "records": [Binary(raw) for raw in records], "created_at": now}
            for records in rows_of([encode_bounded(e) for e in events])
        ]
        await self.collection.insert_many(rows, session=session, ordered=True)

    def wake(self) -> None:
        """Tell the relay there is something to publish now (it also polls)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """The relay: one holder of the lease per database publishes, oldest first."""
        backoff = 0.5
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.outbox_poll_seconds)
            self._wake.clear()
            try:
                if not await self._hold_lease():
                    continue
                await self._drain(stop)
                backoff = 0.5
            except Exception as exc:  # noqa: BLE001 - the relay must outlive any fault, broker or database
                metrics.OUTBOX_RELAY_ERRORS.inc()
                log.warning("outbox relay could not publish; will retry", error=repr(exc), retry_in=backoff)
                await self._drop_producer()
                self.retention.suspect()  # the broker may be restarting
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
            if time.monotonic() >= self._next_report:  # a few queries: not on every wake
                self._next_report = time.monotonic() + BACKLOG_REPORT_SECONDS
                await self._report_backlog()
        await self._drop_producer()
        await asyncio.to_thread(self.retention.close)

    async def _drain(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = (
                await self.collection.find({}).sort("_id", 1).limit(self.settings.outbox_batch).to_list(None)
            )
            if not batch:  # what the broker lost is looked for when idle too
                await self.retention.restore_when_idle(self._producer_ready)
                return
            # Renewed before every page, so a long drain keeps the lease and each publish has
            # all of it; lost (we stalled past it), the new holder publishes from here.
            if not await self._hold_lease(renew=True):
                return
            await self.retention.restore(self._producer_ready)  # what the broker lost goes first
            await self._publish(batch)
            if len(batch) < self.settings.outbox_batch:
                return

    async def _publish(self, batch: list[dict[str, Any]]) -> None:
        """Publish a page, record by record: a row is done when the broker took each of its
        records or refused one for good (too large: parked with the reason, so it cannot
        hold back the rows after it). Raises PublishError, after removing the rows that are
        done, when some record may go through later (the broker away or slow)."""
        producer = await self._producer_ready()
        places = [(row, k, bytes(raw)) for row in batch for k, raw in enumerate(row["records"])]
        items = [producer.encoded(raw) for _, _, raw in places]
        replacements = producer.replacements
        outcomes = await asyncio.to_thread(producer.deliver, items)
        if producer.replacements != replacements:  # the broker forgot the producer: restarted?
            self.retention.suspect()
        retry = {row["_id"] for (row, _, _), error in zip(places, outcomes, strict=True) if _retriable(error)}
        parked = [
            {
                "_id": f"{row['_id']}:{k}",  # parking a record twice (a crash in between) keeps one
                "record": Binary(raw),
                "event_id": item.event_id,
                "type": item.event_type,
                "topic": item.topic,
                "bytes": len(raw),
                "reason": repr(error),
                "parked_at": self._clock.now(),
            }
            for (row, k, raw), item, error in zip(places, items, outcomes, strict=True)
            if error is not None and not _retriable(error) and row["_id"] not in retry
        ]
        if parked:
            try:
                await self.mongo.db[PARKED].insert_many(parked, ordered=False)
            except BulkWriteError as exc:  # fine when only already parked by an earlier attempt
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise
            metrics.OUTBOX_PARKED.inc(len(parked))
            for doc in parked:
                log.error(
                    "the broker refuses an outbox event for good; parked",
                    event_id=doc["event_id"],
                    type=doc["type"],
                    bytes=doc["bytes"],
                    reason=doc["reason"],
                )
        done = [row for row in batch if row["_id"] not in retry]
        # Not a transaction: a row kept and not deleted (a crash in between) is published and
        # kept again, harmless for consumers deduplicating on the event id, and two relays'
        # transactions would interleave on the embedded server
        # (`DatabaseCapabilities.concurrent_transactions`).
        if done:
            await self.retention.keep([bytes(raw) for row in done for raw in row["records"]])
            await self.collection.delete_many({"_id": {"$in": [row["_id"] for row in done]}})
        if retry:
            failed = next(e for e in outcomes if _retriable(e))
            raise PublishError(f"broker did not acknowledge: {failed!r}") from failed

    async def _producer_ready(self) -> EventProducer:
        if self._producer is None:
            self._producer = await asyncio.to_thread(EventProducer, self.settings, f"{self.service}-outbox")
        return self._producer

    async def _drop_producer(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await asyncio.to_thread(producer.close, 2.0)

    async def _hold_lease(self, renew: bool = False) -> bool:
        """Only one relay per database publishes, so replicas never race on the same events.
        One atomic update takes the lease when it is free or expired, or renews our own; no
        transaction (a refused upsert inside one would abort it and, on a replica set, retry
        it for two minutes). Between drains it is renewed once a third of it has passed."""
        lease = self.settings.outbox_lease_seconds
        if (
            not renew
            and self._lease_until is not None
            and time.monotonic() < self._lease_until - 2 * lease / 3
        ):
            return True
        asked = time.monotonic()
        now = self._clock.now().timestamp()  # epoch seconds (`DatabaseCapabilities.dates_in_updates`)
        try:
            await self.mongo.db[LEASES].update_one(
                # `$or` over the one lease document (`DatabaseCapabilities.indexed_or` is moot)
                {
                    "_id": "relay",
                    "$or": [
                        {"holder": self._holder},
                        {"expires_ts": {"$lt": now}},
                        {"expires_ts": {"$exists": False}},  # an earlier version's, never renewed
                    ],
                },
                {"$set": {"holder": self._holder, "expires_ts": now + lease}},
                upsert=True,
            )
        except DuplicateKeyError:  # another relay holds it: the upsert found no free lease
            self._lease_until = None
            return False
        self._lease_until = asked + lease  # counted from before asking: never longer than the database's
        return True

    async def _report_backlog(self) -> None:
        try:
            await self.retention.prune()
            oldest = await self.collection.find_one({}, sort=[("_id", 1)], projection={"created_at": 1})
            metrics.OUTBOX_PENDING.set(await self.collection.count_documents({}) if oldest else 0)
            age = (self._clock.now() - as_utc(oldest["created_at"])).total_seconds() if oldest else 0.0
            metrics.OUTBOX_OLDEST_AGE.set(max(0.0, age))
        except Exception:  # noqa: BLE001 - metrics must never stop the relay
            pass
