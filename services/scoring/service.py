"""The scorer's use cases: fold a batch of events from the broker into profiles, review
silent customers, score every profile again, refresh the population, publish the signals left
pending. The parts they use: the batch pipeline (pipeline.py), the signal outbox
(signal_outbox.py), the profile cache (cache.py) and the rules (domain.py and the modules it
names)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

import structlog
from bson import ObjectId

from services.common import topics
from services.common.clock import Clock, SystemClock
from services.common.kafka import EventProducer, deadletter_headers, split_valid
from services.common.outbox import Retention
from services.common.settings import Settings

from . import metrics
from . import population as population_math
from .cache import ProfileCache
from .domain import ScoringClock
from .pipeline import BatchPipeline, Staged
from .scores import Population
from .signal_outbox import SignalOutbox
from .store import RETAINED, ProfileStore

log = structlog.get_logger(__name__)
RESCORE_CHUNK = 500  # customers re-scored per staged batch by the review and a full re-score
# A worker holds the population job for this share of an interval, so the next run goes to
# whichever worker's timer fires first after it: about one run per interval across workers.
POPULATION_LEASE_SHARE = 0.9


class Scorer:
    def __init__(self, store: ProfileStore, settings: Settings, clock: Clock | None = None) -> None:
        self.store = store
        self.settings = settings
        self.clock = ScoringClock(settings.scoring_clock, clock or SystemClock())
        self.population = Population()
        self.cache = ProfileCache(settings.scoring_cache_profiles)
        self.outbox = SignalOutbox(store, self.producer, Retention(store.db, RETAINED, settings))
        self.pipeline = BatchPipeline(store, self.cache, self.outbox, self.clock, settings.topic_partitions)
        self._producer: EventProducer | None = None
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{ObjectId()}"  # this worker, for leases

    def now(self) -> datetime:
        return self.clock.now()

    async def producer(self) -> EventProducer:
        if self._producer is None:
            self._producer = await asyncio.to_thread(EventProducer, self.settings, "scoring")
        return self._producer

    async def stage_batch(self, records: list[Any], consumer: str) -> Awaitable[None]:
        """Raw records from the broker: invalid ones go to the dead-letter topic, the rest are
        staged (folded and built). Returns the batch's write: acknowledge the batch when that
        completes. The next batch can be staged while this one is written (writes stay in
        order). Never raises: a batch left unstaged is never acknowledged and fetching stops
        behind it, so whatever fails (the dead-letter topic, the database away) is retried
        until it passes; /readyz reports the stall meanwhile."""
        delay = 0.5
        while True:
            try:
                return await self._stage_batch(records, consumer)
            except Exception:
                metrics.BATCH_RETRIES.inc()
                log.exception("staging a batch failed; trying it again", size=len(records), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _stage_batch(self, records: list[Any], consumer: str) -> Awaitable[None]:
        producer = await self.producer()
        deadletter = topics.physical(topics.DEADLETTER, self.settings)
        valid = await asyncio.to_thread(split_valid, records, producer, deadletter, consumer)
        try:
            staged = await self.pipeline.stage([d.event for d in valid], None, self.population)
        except Exception:
            if not await self.store.reachable():
                raise  # the database is away: stage the batch again later
            # An event the fold cannot take. Let the writes in flight land, forget what this
            # batch folded in memory, then go one by one.
            log.exception("folding a batch failed; folding its events one by one", size=len(valid))
            await self.pipeline.wait_for_writes_in_flight()
            self.pipeline.forget({d.event["subject"] for d in valid})
            return self._fold_one_by_one(valid, records, producer, deadletter, consumer)
        return self.write_staged(staged, valid, records, producer, deadletter, consumer)

    async def write_staged(
        self,
        staged: Staged,
        valid: list[Any],
        records: list[Any],
        producer: EventProducer,
        deadletter: str,
        consumer: str,
    ) -> None:
        """Write a staged batch (the pipeline waits for a database that is away, in order).
        When the database refuses the batch, start over from it one event at a time."""
        try:
            await self.pipeline.write(staged)
        except Exception:
            log.exception("writing a batch failed", size=len(staged.docs))
            await self.pipeline.wait_for_writes_in_flight()
            self.pipeline.forget(set(staged.folded))
            await self._fold_one_by_one(valid, records, producer, deadletter, consumer)
        await flushed(producer)

    async def _fold_one_by_one(
        self, valid: list[Any], records: list[Any], producer: EventProducer, deadletter: str, consumer: str
    ) -> None:
        """Each event folded and written alone; one the database still refuses is dead-lettered."""
        originals = {(r.topic, r.partition, r.offset): r for r in records}  # the bytes as they came
        for delivered in valid:
            delay = 0.5
            while True:
                try:
                    await self.fold([delivered.event])
                    break
                except Exception as exc:  # noqa: BLE001
                    self.pipeline.forget({delivered.event["subject"]})  # it may have half-folded in memory
                    if not await self.store.reachable():
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
        await flushed(producer)

    async def fold(self, events: list[dict[str, Any]], rescore: list[str] | None = None) -> int:
        """Fold events (and re-score `rescore` customers) and write them, one bulk write."""
        staged = await self.pipeline.stage(events, rescore, self.population)
        await self.pipeline.write(staged, next_batch=False)
        return len(staged.docs)

    async def publish_pending(self, partitions: list[int]) -> None:
        """The backlog sweep: signals stored but not known to be published, oldest batch first."""
        async with self.pipeline.writes_paused():
            self.pipeline.sequence_at_least(await self.outbox.reload())
            await self.outbox.sweep(partitions)

    async def review(self, partitions: list[int]) -> int:
        """Re-score customers whose scores can change with time alone (recency, lifecycle,
        churn, birthdays), on this worker's partitions."""
        due = await self.store.due(self.now(), partitions)
        changed = 0
        for start in range(0, len(due), RESCORE_CHUNK):
            changed += await self.fold([], rescore=due[start : start + RESCORE_CHUNK])
        await self.publish_pending(partitions)
        return changed

    async def rescore_all(self, partitions: list[int]) -> int:
        """Every profile on these partitions scored again (after a population refresh)."""
        ids = await self.store.ids(partitions)
        for start in range(0, len(ids), RESCORE_CHUNK):
            await self.fold([], rescore=ids[start : start + RESCORE_CHUNK])
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
            metrics.POPULATION_SECONDS.set(seconds)
            metrics.POPULATION_SIZE.set(fitted.customers)
            metrics.POPULATION_LAST_SUCCESS.set_to_current_time()
        except Exception:
            metrics.POPULATION_FAILURES.inc()
            log.exception("population refresh failed; keeping the previous parameters")
        return self.population

    async def population_job(self, interval: float) -> bool:
        """The population job of one interval, run by one worker of the group: the one that
        claims its lease refits (and counts the profiles); the others load what it stored.
        Returns whether this worker ran it."""
        try:
            now = SystemClock().now().timestamp()
            claimed = await self.store.claim_population_refresh(
                self.holder, now, interval * POPULATION_LEASE_SHARE
            )
            if not claimed:
                await self.load_population()
                return False
        except Exception:  # noqa: BLE001 - the database away: the next interval tries again
            log.warning("population job skipped: the database did not answer", exc_info=True)
            return False
        await self.refresh_population()
        await self.count_profiles()
        return True

    async def load_population(self) -> None:
        stored = await self.store.load_population()
        if stored is not None:
            self.population = stored

    async def count_profiles(self) -> None:
        """The profiles gauge: how many profiles are in each segment, stage and ABC class."""
        for dimension, counts in (await self.store.counts()).items():
            for value, n in counts.items():
                metrics.PROFILES.labels(dimension, str(value)).set(n)


async def flushed(producer: EventProducer) -> None:
    """Every dead-lettered record acknowledged before the batch is: retried until it is."""
    delay = 0.5
    while True:
        try:
            return await asyncio.to_thread(producer.flush)
        except Exception:  # noqa: BLE001 - the broker away: the batch waits, /readyz reports it
            log.warning("dead-lettered records not acknowledged yet", retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
