"""The batch pipeline: a batch is staged (folded and built in memory) and then written, in
staging order, while the next batch is staged; its signals go out after its write.

Staging is the CPU half (the fold runs in a worker thread), the write the I/O half: one
unordered bulk write per batch. Two locks keep this safe: the staging lock (the agent and
the timers never interleave on a profile) and the write lock (writes land in the order batches
were staged). Customers staged but not yet written are kept in memory, so the next batch folds
onto them without reading the database."""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from services.common.clock import SystemClock, parse_rfc3339

from . import facts as F
from . import metrics
from . import scores as S
from .cache import ProfileCache
from .domain import ScoringClock, partition_of
from .events import signal_events
from .profile import REVIEW_EVERY, build
from .signal_outbox import SignalOutbox
from .store import ProfileStore, decode_facts, encode_facts

log = structlog.get_logger(__name__)
# The profile's fields the models compute (the rest are counts, sums and times of the facts).
# The database refuses a NaN or an infinity (it is not JSON), and a refused batch is folded
# again one event at a time: one bad value would dead-letter healthy events.
MODEL_FIELDS = (
    ("value", "p_alive"),
    ("value", "expected_purchases_90d"),
    ("churn", "risk"),
    ("rfm", "recency_days"),
    ("purchases", "mean_gap_days"),
    ("purchases", "first_gap_days"),
)
NEXT_READ_WAIT = 0.1  # seconds a write waits for the next batch's read (see _let_next_batch_read)


@dataclass
class Staged:
    """A batch folded and built, waiting for its write."""

    docs: list[dict[str, Any]]
    folded: dict[str, F.Facts]
    events: list[dict[str, Any]]
    generation: int  # the cache's generation when staged
    seq: int  # orders batches; signals are published and marked by it


class BatchPipeline:
    def __init__(
        self,
        store: ProfileStore,
        cache: ProfileCache,
        outbox: SignalOutbox,
        clock: ScoringClock,
        partitions: int,
    ) -> None:
        self.store = store
        self.cache = cache
        self.outbox = outbox
        self.clock = clock
        self.partitions = partitions  # of the input topics: which partition a customer is on
        self._staging_lock = asyncio.Lock()  # the agent and the timers never interleave on a profile
        self._write_lock = asyncio.Lock()  # writes land in the order batches were staged
        # Resolved when the signals of the last batch written are out (or left to the backlog
        # sweep): each batch publishes after the one written before it (see write).
        self._published: asyncio.Future | None = None
        self._read_done = asyncio.Event()  # set when a batch has read its stored profiles
        # Staged but not yet written, by customer: the batch that staged it last, and what the next
        # fold builds on (facts, profile). A fold updates the facts in place, so two batches in
        # flight for one customer share them; the batch number tells whose profile is newest.
        self._unwritten: dict[str, tuple[int, tuple[F.Facts, dict[str, Any]]]] = {}
        self._seq = 0

    def sequence_at_least(self, seq: int) -> None:
        """Batch sequence numbers continue above `seq` (the marks a previous owner stored)."""
        self._seq = max(self._seq, seq)

    async def stage(
        self, events: list[dict[str, Any]], rescore: list[str] | None, population: S.Population
    ) -> Staged:
        """Fold events (and re-score `rescore` customers) and build their profiles, kept in
        memory until written."""
        by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            by_customer[event["subject"]].append(event)
        for customer_id in rescore or []:
            by_customer.setdefault(customer_id, [])
        async with self._staging_lock:
            if events:
                self.clock.saw(max(parse_rfc3339(e["time"]) for e in events))
            now = self.clock.now()
            generation = self.cache.generation
            stored = await self._stored(list(by_customer))
            self._read_done.set()
            # Rises across restarts (a clock), and past every batch that wrote these profiles
            # (another worker's, before the partitions moved here): the write fence (store.write).
            seq = self._seq = max(
                self._seq + 1,
                time.time_ns() // 1000,
                *((doc.get("write_seq") or 0) + 1 for _, doc in stored.values()),
            )
            # In a worker thread: the event loop stays free to start the previous batch's write
            # (queued behind this batch's read) and finish its bookkeeping meanwhile, so the
            # database writes while this batch is scored instead of idling through it.
            folded, docs = await asyncio.to_thread(self._score, by_customer, stored, now, seq, population)
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
        population: S.Population,
    ) -> tuple[dict[str, F.Facts], list[dict[str, Any]]]:
        """The CPU part of staging, run in a worker thread: facts folded, the batch's model
        values, the documents."""
        folded = F.fold(by_customer, {cid: facts for cid, (facts, _) in stored.items()}, now)
        summaries = [S.summarize(facts, now) for facts in folded.values()]
        scored = S.scored(summaries, S.values(summaries, now, population), population)  # the batch at once
        docs = [
            self._profile_document(
                cid,
                folded[cid],
                by_customer[cid],
                stored.get(cid, (None, None))[1],
                now,
                model,
                seq,
                population,
            )
            for cid, model in zip(folded, scored, strict=True)
        ]
        return folded, docs

    async def write(self, staged: Staged, next_batch: bool = True) -> None:
        """The I/O half, in staging order: one unordered bulk write, then the signals. The
        write lock is held for the write alone, so the next batch's write goes out while this
        one's signals are published; signals still go out in write order (a chain of futures,
        not a second lock held across the write lock, which kept the database idle until the
        previous batch's publish ended). `next_batch`: a batch of a stream, whose next batch
        may read first (_let_next_batch_read)."""
        async with self._write_lock:
            if next_batch:
                await self._let_next_batch_read()
            stale = await self._store(staged)
            self._written(staged, stale)  # before anything else can stage or write
            previous, self._published = self._published, asyncio.get_running_loop().create_future()
            published = self._published
        done = False
        try:
            if previous is not None:
                await asyncio.shield(previous)
            if not self.outbox.backlog:
                await self.outbox.publish(
                    [d for d in staged.docs if d["pending"] and d["_id"] not in stale], staged.seq
                )
            done = True
        finally:
            if not done:  # interrupted: marks stay put until the sweep sends what is stored
                self.outbox.backlog = True
            published.set_result(None)

    async def _store(self, staged: Staged) -> set[str]:
        """The batch's write, retried while the database is away, inside the write lock: no
        later batch writes before this one has landed. Returns the profiles a later batch
        (another worker's) had written already. A database that answers and still refuses
        the batch raises: the caller folds its events one at a time."""
        delay = 0.5
        while True:
            try:
                return await self.store.write(staged.docs)
            except Exception:
                if await self.store.reachable():
                    raise
                log.warning("database away; the batch's write waits for it", size=len(staged.docs))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _written(self, staged: Staged, stale: set[str]) -> None:
        """A batch's profiles are stored: what the next folds build on, and the metrics."""
        for doc in staged.docs:
            cid = doc["_id"]
            if self._unwritten.get(cid, (staged.seq,))[0] != staged.seq:
                continue  # a later batch folded this customer again: its write updates the cache
            self._unwritten.pop(cid, None)
            if cid in stale:
                self.cache.drop([cid])  # another worker wrote it: read it again
            elif staged.generation == self.cache.generation:  # no rebalance while it was staged
                self.cache.put(cid, staged.folded[cid], doc)
        metrics.batch_written(staged.events, len(staged.docs))

    async def _let_next_batch_read(self) -> None:
        """Let the next batch read its stored profiles before this batch's write goes out. The
        database serves one request at a time (the embedded one entirely; a real one per
        document lock), so a read queued behind a bulk write waits for all of it, and the next
        batch would be scored with the database idle. Read first, and the next batch is scored
        (in a worker thread) while this one is written. When no batch follows soon, write."""
        try:
            await asyncio.wait_for(self._read_done.wait(), NEXT_READ_WAIT)
        except TimeoutError:
            pass

    @asynccontextmanager
    async def writes_paused(self) -> AsyncIterator[None]:
        """No batch writes inside, and the writes and signal publishes in flight have landed
        (or left their signals to the backlog sweep)."""
        async with self._write_lock:
            if self._published is not None:
                await asyncio.shield(self._published)
            yield

    async def wait_for_writes_in_flight(self) -> None:
        async with self.writes_paused():
            pass

    def forget(self, customer_ids: set[str]) -> None:
        """In-memory state of these customers may be ahead of the database: read it again."""
        for cid in customer_ids:
            self._unwritten.pop(cid, None)
        self.cache.drop(list(customer_ids))

    async def _stored(self, customer_ids: list[str]) -> dict[str, tuple[F.Facts, dict[str, Any]]]:
        """Facts and the previous profile of each customer: staged but unwritten, cached, and
        the rest from the database in one read."""
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

    def _profile_document(
        self,
        customer_id: str,
        facts: F.Facts,
        events: list[dict[str, Any]],
        previous: dict[str, Any] | None,
        now: datetime,
        scored: S.Scored,
        seq: int,
        population: S.Population,
    ) -> dict[str, Any]:
        """The stored profile: built from the facts, with the signals still to publish."""
        profile, signals = build(facts, now, population, previous, scored)
        only_finite(customer_id, profile)
        fresh = signal_events(customer_id, signals, now)
        partition = partition_of(customer_id, self.partitions)
        previous = previous or {}
        pending = self.outbox.waiting(previous, partition) + [{"seq": seq, "event": e} for e in fresh]
        event_times = [parse_rfc3339(e["time"]) for e in events]
        return {
            "_id": customer_id,
            **profile,
            "facts": encode_facts(facts),
            "pending": pending,
            "pending_seq": seq if pending else 0,
            "write_seq": seq,  # the batch that wrote it: only a later batch replaces it
            "partition": partition,
            # Seconds, not a date (`DatabaseCapabilities.indexed_date_ranges` in
            # services/common/mongo.py): numbers go through the index on every server.
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


def only_finite(customer_id: str, profile: dict[str, Any]) -> None:
    """A non-finite model value is a bug (the models keep them out, scores.values): logged
    with its field, counted, and stored as null so the profile and its batch still land."""
    for section, name in MODEL_FIELDS:
        fields = profile.get(section)
        value = fields.get(name) if fields else None
        if isinstance(value, float) and not math.isfinite(value):
            path = f"{section}.{name}"
            log.error(
                "non-finite model value stored as null", customer_id=customer_id, field=path, value=value
            )
            metrics.NON_FINITE.labels(path).inc()
            fields[name] = None
