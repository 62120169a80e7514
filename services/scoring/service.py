"""The scorer's use cases: fold a batch of events into profiles with one read and one
unordered bulk write, re-score silent customers, refresh the population, publish signals."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog
from kafka.partitioner import murmur2
from prometheus_client import Counter, Gauge, Histogram

from services.common.clock import Clock, SystemClock, parse_rfc3339
from services.common.contracts import encode, events_from_facts, registry
from services.common.kafka import EventProducer, deadletter_headers, split_valid
from services.common.settings import Settings

from . import facts as F
from . import population as population_math
from . import scores as S
from .profile import REVIEW_EVERY, build
from .scores import Population
from .store import ProfileStore, decode_facts, encode_facts

log = structlog.get_logger(__name__)
SOURCE = "/services/scoring"
WHEN = {
    "crm.profile.segment_changed": "changed_at",
    "crm.profile.lifecycle_changed": "changed_at",
    "crm.profile.churn_warning": "warned_at",
    "crm.profile.churn_recovered": "recovered_at",
    "crm.profile.care_due": None,
}

PROCESSED = Counter("crm_scoring_events_processed_total", "Events folded into profiles.", ["type"])
BATCH = Histogram(
    "crm_scoring_batch_size", "Events per folded batch.", buckets=(1, 10, 50, 100, 250, 500, 1000, 2500)
)
FRESHNESS = Histogram(
    "crm_scoring_freshness_seconds",
    "Event time to profile written, for live events.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
PROFILE_WRITES = Counter(
    "crm_scoring_profile_writes_total", "Profiles written; events processed over this is the fold's gain."
)
SIGNALS = Counter("crm_scoring_signals_total", "Outbound signals published.", ["type"])
PROFILES = Gauge(
    "crm_profiles", "Profiles by segment, lifecycle stage and ABC class.", ["dimension", "value"]
)
POPULATION_SECONDS = Gauge("crm_population_job_duration_seconds", "Duration of the last population refresh.")
POPULATION_SIZE = Gauge(
    "crm_population_customers", "Customers with a purchase in the last population refresh."
)
POPULATION_LAST_SUCCESS = Gauge(
    "crm_population_job_last_success_timestamp_seconds",
    "Unix time of the last successful population refresh.",
)
POPULATION_FAILURES = Counter("crm_population_job_failures_total", "Population refreshes that failed.")
# The fold allocates a dozen small dicts per customer while the profile cache keeps hundreds of
# thousands of facts alive. At CPython's default (a young collection every 700 allocations,
# escalating to full ones that walk the whole cache) the cycle collector took a fifth of the
# fold's time (`make bench`, fold alone). Facts and profiles hold no reference cycles, so
# reference counting frees them; the collector only needs to run less often.
GC_THRESHOLD = (10_000, 10, 10)
SWEEP_PAGE = 2000  # profiles read at a time by the backlog sweep
NEXT_READ_WAIT = 0.1  # seconds a write waits for the next batch's read (see _next_read)
LIVE_WINDOW = 300.0  # events older than this are history (a replay), not live freshness
HISTORY_LAG = timedelta(days=1)  # a stream this far behind the wall clock is a replay


def partition_of(customer_id: str, partitions: int) -> int:
    """Kafka's default partitioner: the partition that carries this customer's events."""
    return (murmur2(customer_id.encode()) & 0x7FFFFFFF) % partitions


def collect_less_often() -> tuple[int, int, int]:
    """Apply GC_THRESHOLD to this process; returns the previous thresholds."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    return before


class Scorer:
    def __init__(self, store: ProfileStore, settings: Settings, clock: Clock | None = None) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock or SystemClock()
        self.population = Population()
        self.watermark: datetime | None = None  # latest event time seen, the clock of a replay
        self.replaying = False  # the last batch arrived long after its events happened
        self._lock = asyncio.Lock()  # the agent and the timers never interleave on a profile
        self._producer: EventProducer | None = None
        self.cache = ProfileCache(settings.scoring_cache_profiles)
        self._write_lock = asyncio.Lock()  # writes land in the order batches were staged
        # Resolved when the signals of the last batch written are out (or left to the backlog
        # sweep): each batch publishes after the one written before it (see _commit).
        self._published: asyncio.Future | None = None
        self._read_done = asyncio.Event()  # set when a batch has read its stored profiles
        # Staged but not yet written, by customer: the batch that staged it last, and what the next
        # fold builds on (facts, profile). A fold updates the facts in place, so two batches in
        # flight for one customer share them; the batch number tells whose profile is newest.
        self._unwritten: dict[str, tuple[int, tuple[F.Facts, dict[str, Any]]]] = {}
        # Signals are stored with their profile (outbox), each with the number of the batch that
        # made it, and published after the write. Instead of clearing each profile's pending
        # list afterwards (a second write per profile), the batch's number is recorded per
        # partition once they are out: stored signals of a batch at or below the mark are
        # published, and the next fold of the profile drops them. After a failed publish no mark
        # moves until the backlog is swept (publish_pending), so order is kept.
        self.marks: dict[int, int] = {}
        self._seq = 0
        self._backlog = True  # until the first sweep has looked for leftovers of a crash

    def now(self) -> datetime:
        """One clock for every score: the wall clock live, the latest event time during a replay
        of history (so replaying 1997 gives the profiles a shop had in 1997). `auto` tells them
        apart by how late events arrive, not by how long ago the last one came: a quiet shop's
        clock keeps running, so its silent customers still slide into decline."""
        mark = self.watermark
        if mark is not None and (
            self.settings.scoring_clock == "event"
            or (self.settings.scoring_clock == "auto" and self.replaying)
        ):
            return mark
        return self.clock.now()

    async def producer(self) -> EventProducer:
        if self._producer is None:
            self._producer = await asyncio.to_thread(EventProducer, self.settings, "scoring")
        return self._producer

    async def handle_records(self, records: list[Any], consumer: str) -> None:
        """Raw records from the broker: invalid ones to the dead-letter topic, the rest folded
        and written. Never raises: the caller acknowledges the batch when this returns."""
        await (await self.take(records, consumer))

    async def take(self, records: list[Any], consumer: str) -> Awaitable[None]:
        """Stage a batch (validate, fold, build the profiles) and return its write, which
        finishes the batch: acknowledge the batch when that completes. The next batch can be
        staged while this one is written (writes stay in order); neither step raises."""
        producer = await self.producer()
        deadletter = self.settings.topic_prefix + "crm.deadletter.v1"
        valid = await asyncio.to_thread(split_valid, records, producer, deadletter, consumer)
        try:
            staged = await self._stage([d.event for d in valid])
        except Exception:
            # An event the fold cannot take (the database is not involved in staging). Let the
            # writes in flight land, forget what this batch folded in memory, then go one by one.
            log.exception("folding a batch failed; folding its events one by one", size=len(valid))
            await self._settle()
            self._forget({d.event["subject"] for d in valid})
            return self._fold_singly(valid, records, producer, deadletter, consumer)
        return self._finish(staged, valid, records, producer, deadletter, consumer)

    async def _finish(
        self,
        staged: Staged,
        valid: list[Any],
        records: list[Any],
        producer: EventProducer,
        deadletter: str,
        consumer: str,
    ) -> None:
        delay = 0.5
        while True:
            try:
                await self._commit(staged)
                break
            except Exception:
                log.exception("writing a batch failed", size=len(staged.docs))
                if not await self.store_reachable():
                    await asyncio.sleep(delay)  # the database is away: wait for it, lose nothing
                    delay = min(delay * 2, 10.0)
                    continue
                # The database is fine but refuses something: start over from it, one by one.
                await self._settle()
                self._forget(set(staged.folded))
                await self._fold_singly(valid, records, producer, deadletter, consumer)
                break
        await asyncio.to_thread(producer.flush)

    async def store_reachable(self) -> bool:
        try:
            await self.store.profiles.database.command("ping")
            return True
        except Exception:  # noqa: BLE001
            return False

    async def _fold_singly(
        self, valid: list[Any], records: list[Any], producer: EventProducer, deadletter: str, consumer: str
    ) -> None:
        originals = {(r.topic, r.partition, r.offset): r for r in records}  # the bytes as they came
        for delivered in valid:
            delay = 0.5
            while True:
                try:
                    await self.fold([delivered.event])
                    break
                except Exception as exc:  # noqa: BLE001
                    self._forget({delivered.event["subject"]})  # it may have half-folded in memory
                    if not await self.store_reachable():
                        await asyncio.sleep(delay)  # not this record's fault: wait and try it again
                        delay = min(delay * 2, 10.0)
                        continue
                    log.exception("event could not be folded; dead-lettered", event_id=delivered.event["id"])
                    message = originals[(delivered.topic, delivered.partition, delivered.offset)]
                    producer.send_raw(
                        deadletter,
                        message.key,
                        message.value,
                        deadletter_headers(
                            f"fold failed: {exc!r}",
                            message.topic,
                            message.partition,
                            message.offset,
                            consumer,
                        ),
                    )
                    break
        await asyncio.to_thread(producer.flush)

    async def fold(self, events: list[dict[str, Any]], rescore: list[str] | None = None) -> int:
        """Fold events (and re-score `rescore` customers) and write them, one bulk write."""
        staged = await self._stage(events, rescore)
        await self._commit(staged, next_batch=False)
        return len(staged.docs)

    async def _stage(self, events: list[dict[str, Any]], rescore: list[str] | None = None) -> Staged:
        """The CPU half: facts folded and profiles built, kept in memory until written."""
        by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            by_customer[event["subject"]].append(event)
        for customer_id in rescore or []:
            by_customer.setdefault(customer_id, [])
        async with self._lock:
            if events:
                latest = max(parse_rfc3339(e["time"]) for e in events)
                self.watermark = max(self.watermark or latest, latest)
                self.replaying = self.clock.now() - latest > HISTORY_LAG
            now = self.now()
            generation = self.cache.generation
            seq = self._seq = max(self._seq + 1, time.time_ns() // 1000)  # rises across restarts
            stored = await self._previous(list(by_customer))
            self._read_done.set()
            # In a worker thread: the event loop stays free to start the previous batch's write
            # (queued behind this batch's read) and finish its bookkeeping meanwhile, so the
            # database writes while this batch is scored instead of idling through it.
            folded, docs = await asyncio.to_thread(self._score, by_customer, stored, now, seq)
            staged = Staged(docs, folded, events, generation, seq)
            for doc in docs:  # what the next batch folds onto, before this one is written
                self._unwritten[doc["_id"]] = (seq, (folded[doc["_id"]], ProfileCache.slim(doc)))
            self._read_done.clear()  # this batch's write waits for the next batch's read
            return staged

    def _score(
        self,
        by_customer: dict[str, list[dict[str, Any]]],
        stored: dict[str, tuple[F.Facts, dict[str, Any]]],
        now: datetime,
        seq: int,
    ) -> tuple[dict[str, F.Facts], list[dict[str, Any]]]:
        """The CPU part of staging, run in a worker thread: facts folded, the batch's model
        values, the documents. It reads `self.marks`, which the loop may raise meanwhile; a
        stale mark only keeps a published signal in the profile a while longer (publishing
        skips it by its batch number)."""
        folded = F.fold(by_customer, {cid: facts for cid, (facts, _) in stored.items()}, now)
        summaries = [S.summarize(facts, now) for facts in folded.values()]
        model_values = S.values(summaries, now, self.population)  # the whole batch at once
        docs = [
            self._document(
                cid,
                folded[cid],
                by_customer[cid],
                stored.get(cid, (None, None))[1],
                now,
                (summary, value),
                seq,
            )
            for cid, summary, value in zip(folded, summaries, model_values, strict=True)
        ]
        return folded, docs

    async def _commit(self, staged: Staged, next_batch: bool = True) -> None:
        """The I/O half, in staging order: one unordered bulk write, then the signals. The
        write lock is held for the write alone, so the next batch's write goes out while this
        one's signals are published; signals still go out in write order (a chain of futures,
        not a second lock held across the write lock, which kept the database idle until the
        previous batch's publish ended). `next_batch`: a batch of a stream, whose next batch
        may read first (_next_read)."""
        async with self._write_lock:
            if next_batch:
                await self._next_read()
            await self.store.write(staged.docs)
            self._written(staged)  # before anything else can stage or write
            previous, self._published = self._published, asyncio.get_running_loop().create_future()
            published = self._published
        done = False
        try:
            if previous is not None:
                await asyncio.shield(previous)
            if not self._backlog:
                await self._publish([d for d in staged.docs if d["pending"]], staged.seq)
            done = True
        finally:
            if not done:  # interrupted: marks stay put until the sweep sends what is stored
                self._backlog = True
            published.set_result(None)

    def _written(self, staged: Staged) -> None:
        """A batch's profiles are stored: what the next folds build on, and the metrics."""
        PROFILE_WRITES.inc(len(staged.docs))
        for doc in staged.docs:
            cid = doc["_id"]
            if self._unwritten.get(cid, (staged.seq,))[0] != staged.seq:
                continue  # a later batch folded this customer again: its write updates the cache
            self._unwritten.pop(cid, None)
            if staged.generation == self.cache.generation:  # no rebalance while it was staged
                self.cache.put(cid, staged.folded[cid], doc)
        written = time.time()
        for event in staged.events:
            PROCESSED.labels(event["type"]).inc()
            lag = written - parse_rfc3339(event["time"]).timestamp()
            if 0 <= lag < LIVE_WINDOW:
                FRESHNESS.observe(lag)
        if staged.events:
            BATCH.observe(len(staged.events))

    async def _next_read(self) -> None:
        """Let the next batch read its stored profiles before this batch's write goes out. The
        database serves one request at a time (the embedded one entirely; a real one per
        document lock), so a read queued behind a bulk write waits for all of it, and the next
        batch would be scored with the database idle. Read first, and the next batch is scored
        (in a worker thread) while this one is written. When no batch follows soon, write."""
        try:
            await asyncio.wait_for(self._read_done.wait(), NEXT_READ_WAIT)
        except TimeoutError:
            pass

    async def _settle(self) -> None:
        """Wait for the writes and publishes in flight to land."""
        async with self._write_lock:
            await self._signals_out()

    async def _signals_out(self) -> None:
        """Wait until the signals of every batch written so far are published (or left to
        the backlog sweep). Call with the write lock held, so that no batch writes meanwhile."""
        if self._published is not None:
            await asyncio.shield(self._published)

    def _forget(self, customer_ids: set[str]) -> None:
        """In-memory state of these customers may be ahead of the database: read it again."""
        for cid in customer_ids:
            self._unwritten.pop(cid, None)
        self.cache.drop(list(customer_ids))

    async def _previous(self, customer_ids: list[str]) -> dict[str, tuple[F.Facts, dict[str, Any]]]:
        """Facts and the previous profile of each customer: from the cache, the misses from
        the database in one read."""
        found = {}
        for cid in customer_ids:
            staged = self._unwritten.get(cid)
            hit = staged[1] if staged is not None else self.cache.get(cid)
            if hit is not None:
                found[cid] = hit
        missing = [cid for cid in customer_ids if cid not in found]
        if missing:
            for cid, doc in (await self.store.load(missing)).items():
                found[cid] = (decode_facts(doc["facts"]), doc)
        return found

    def _document(
        self,
        customer_id: str,
        facts: F.Facts,
        events: list[dict[str, Any]],
        previous: dict[str, Any] | None,
        now: datetime,
        scored: tuple[S.Purchases, S.Value | None],
        seq: int,
    ) -> dict[str, Any]:
        profile, signals = build(facts, now, self.population, previous, scored)
        schemas = registry()
        fresh = []
        for event in events_from_facts(
            signals, {"customer_id": customer_id}, source=SOURCE, when=WHEN, default_time=now
        ):
            schemas.validate(event)  # a signal that breaks its contract is a bug here, not downstream
            fresh.append(encode(event).decode())  # text: see store
        partition = partition_of(customer_id, self.settings.topic_partitions)
        previous = previous or {}
        pending = self._unpublished(previous, partition) + [{"seq": seq, "event": e} for e in fresh]
        event_times = [parse_rfc3339(e["time"]) for e in events]
        return {
            "_id": customer_id,
            **profile,
            "facts": encode_facts(facts),
            "pending": pending,
            "pending_seq": seq if pending else 0,
            "partition": partition,
            # Seconds, not a date: nx-27017 compares dates in Python over every matching
            # document (2.3 s at 30,000 profiles, the database held); numbers go through the index.
            "next_review_ts": (now + REVIEW_EVERY).timestamp(),
            "updated_at": SystemClock().now(),
            "scored_at": now,
            "event_time": max(
                [
                    *event_times,
                    *([previous["event_time"]] if previous.get("event_time") else []),
                ],
                default=None,
            ),
        }

    def _unpublished(self, doc: dict[str, Any], partition: int) -> list[dict[str, Any]]:
        """The signals stored with a profile whose batch is above its partition's mark."""
        mark = self.marks.get(partition, 0)
        entries = [
            # a bare text is the earlier form: a signal of the batch that wrote the profile
            raw if isinstance(raw, dict) else {"seq": doc["pending_seq"], "event": raw}
            for raw in doc.get("pending") or []
        ]
        return [entry for entry in entries if entry["seq"] > mark]

    async def _publish(self, docs: list[dict[str, Any]], seq: int) -> bool:
        """Publish the signals stored with these profiles (all at or below batch `seq`) that
        no earlier batch published, then move the partitions' marks. On failure they stay
        stored and the backlog sweep (publish_pending, on the review timer) sends them;
        consumers deduplicate on event id."""
        records = [entry["event"].encode() for d in docs for entry in self._unpublished(d, d["partition"])]
        if records:
            try:
                producer = await self.producer()
                await asyncio.to_thread(producer.publish_encoded, records)
            except Exception:
                log.warning("signals not published yet; kept with their profiles", count=len(records))
                self._backlog = True
                return False
            for raw in records:
                SIGNALS.labels(orjson.loads(raw)["type"]).inc()
        marks = {d["partition"]: seq for d in docs}
        await self.store.mark_published(marks)
        for partition, mark in marks.items():
            self.marks[partition] = max(self.marks.get(partition, 0), mark)
        return True

    async def publish_pending(self, partitions: list[int]) -> None:
        """The backlog sweep: signals stored but not known to be published, oldest batch first."""
        async with self._write_lock:
            await self._signals_out()
            self.marks = await self.store.published_marks()
            self._seq = max([self._seq, *self.marks.values()])
            while True:
                batches = await self.store.pending_batches(self.marks, partitions, SWEEP_PAGE)
                if not batches:
                    self._backlog = False
                    return
                for seq, docs in batches:
                    if not await self._publish(docs, seq):
                        return

    async def review(self, partitions: list[int]) -> int:
        """Re-score customers whose scores can change with time alone (recency, lifecycle,
        churn, birthdays), on this worker's partitions."""
        due = await self.store.due(self.now(), partitions)
        changed = 0
        for start in range(0, len(due), 500):
            changed += await self.fold([], rescore=due[start : start + 500])
        await self.publish_pending(partitions)
        return changed

    async def rescore_all(self, partitions: list[int]) -> int:
        """Every profile on these partitions scored again (after a population refresh)."""
        ids = await self.store.ids(partitions)
        for start in range(0, len(ids), 500):
            await self.fold([], rescore=ids[start : start + 500])
        await self.publish_pending(partitions)
        return len(ids)

    async def refresh_population(self) -> Population:
        """Off the hot path: read what it needs, fit in a worker thread, keep the result."""
        started = time.perf_counter()
        try:
            rows = await self.store.population_rows()
            fitted = await asyncio.to_thread(population_math.compute, rows, self.now(), self.population)
            seconds = time.perf_counter() - started
            await self.store.save_population(fitted, seconds)
            self.population = fitted
            POPULATION_SECONDS.set(seconds)
            POPULATION_SIZE.set(fitted.customers)
            POPULATION_LAST_SUCCESS.set_to_current_time()
        except Exception:
            POPULATION_FAILURES.inc()
            log.exception("population refresh failed; keeping the previous parameters")
        return self.population

    async def load_population(self) -> None:
        stored = await self.store.load_population()
        if stored is not None:
            self.population = stored


@dataclass
class Staged:
    """A batch folded and built, waiting for its write."""

    docs: list[dict[str, Any]]
    folded: dict[str, F.Facts]
    events: list[dict[str, Any]]
    generation: int
    seq: int  # orders batches; signals are published and marked by it


class ProfileCache:
    """What the last write of each recently folded customer left: its facts and the parts of
    the profile the next fold compares against, so a batch reads the database only for
    customers it has not seen lately.

    Sound because this worker is the only writer of the profiles on its partitions: the
    cache is emptied whenever partitions move (a rebalance), an entry is stored only after its
    write succeeded and no rebalance happened meanwhile, and a failed write drops the entries
    it touched. Bounded (least recently used go first)."""

    KEPT = ("rfm", "lifecycle", "churn", "care", "pending", "pending_seq", "event_time")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.generation = 0
        self._entries: OrderedDict[str, tuple[F.Facts, dict[str, Any]]] = OrderedDict()

    def get(self, customer_id: str) -> tuple[F.Facts, dict[str, Any]] | None:
        entry = self._entries.get(customer_id)
        if entry is not None:
            self._entries.move_to_end(customer_id)
        return entry

    @classmethod
    def slim(cls, doc: dict[str, Any]) -> dict[str, Any]:
        return {k: doc.get(k) for k in cls.KEPT}

    def put(self, customer_id: str, facts: F.Facts, doc: dict[str, Any]) -> None:
        if self.capacity <= 0:
            return
        self._entries[customer_id] = (facts, self.slim(doc))
        self._entries.move_to_end(customer_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def drop(self, customer_ids: list[str]) -> None:
        for cid in customer_ids:
            self._entries.pop(cid, None)

    def clear(self) -> None:
        """Partitions moved: another worker may write these profiles now."""
        self._entries.clear()
        self.generation += 1

    def __len__(self) -> int:
        return len(self._entries)
