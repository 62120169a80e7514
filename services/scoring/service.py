"""The scorer's use cases: fold a batch of events into profiles with one read and one
unordered bulk write, re-score silent customers, refresh the population, publish signals."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
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
LIVE_WINDOW = 300.0  # events older than this are history (a replay), not live freshness
HISTORY_LAG = timedelta(days=1)  # a stream this far behind the wall clock is a replay


def partition_of(customer_id: str, partitions: int) -> int:
    """Kafka's default partitioner: the partition that carries this customer's events."""
    return (murmur2(customer_id.encode()) & 0x7FFFFFFF) % partitions


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
        """Raw records from the broker: invalid ones to the dead-letter topic, the rest folded.
        Never raises: the caller acknowledges the batch when this returns, so nothing may be
        left unwritten or unaccounted for."""
        producer = await self.producer()
        deadletter = self.settings.topic_prefix + "crm.deadletter.v1"
        valid = await asyncio.to_thread(split_valid, records, producer, deadletter, consumer)
        delay = 0.5
        while True:
            try:
                await self.fold([d.event for d in valid])
                break
            except Exception:
                log.exception("folding a batch failed", size=len(valid))
                if await self.store_reachable():
                    # The database is fine, so an event is: fold one by one, dead-letter the culprits.
                    await self._fold_singly(valid, records, producer, deadletter, consumer)
                    break
                await asyncio.sleep(delay)  # the database is away: wait for it, lose nothing
                delay = min(delay * 2, 10.0)
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
            try:
                await self.fold([delivered.event])
            except Exception as exc:  # noqa: BLE001 - this record, not the stream, is at fault
                log.exception("event could not be folded; dead-lettered", event_id=delivered.event["id"])
                message = originals[(delivered.topic, delivered.partition, delivered.offset)]
                producer.send_raw(
                    deadletter,
                    message.key,
                    message.value,
                    deadletter_headers(
                        f"fold failed: {exc!r}", message.topic, message.partition, message.offset, consumer
                    ),
                )

    async def fold(self, events: list[dict[str, Any]], rescore: list[str] | None = None) -> int:
        """Fold events (and re-score `rescore` customers) with one read and one bulk write."""
        by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            by_customer[event["subject"]].append(event)
        for customer_id in rescore or []:
            by_customer.setdefault(customer_id, [])
        if not by_customer:
            return 0
        async with self._lock:
            if events:
                latest = max(parse_rfc3339(e["time"]) for e in events)
                self.watermark = max(self.watermark or latest, latest)
                self.replaying = self.clock.now() - latest > HISTORY_LAG
            now = self.now()
            stored = await self.store.load(list(by_customer))
            folded = {}
            for customer_id, customer_events in by_customer.items():
                previous = stored.get(customer_id)
                facts = decode_facts(previous["facts"]) if previous else F.empty(customer_id)
                for event in customer_events:
                    F.apply(facts, event)
                folded[customer_id] = F.prune(facts, now)
            summaries = [S.summarize(facts, now) for facts in folded.values()]
            model_values = S.values(summaries, now, self.population)  # the whole batch at once
            docs = [
                self._document(cid, folded[cid], by_customer[cid], stored.get(cid), now, (summary, value))
                for cid, summary, value in zip(folded, summaries, model_values, strict=True)
            ]
            await self.store.write(docs)
            written = time.time()
            for event in events:
                PROCESSED.labels(event["type"]).inc()
                lag = written - parse_rfc3339(event["time"]).timestamp()
                if 0 <= lag < LIVE_WINDOW:
                    FRESHNESS.observe(lag)
            if events:
                BATCH.observe(len(events))
            await self._publish([d for d in docs if d["pending"]])
        return len(docs)

    def _document(
        self,
        customer_id: str,
        facts: F.Facts,
        events: list[dict[str, Any]],
        previous: dict[str, Any] | None,
        now: datetime,
        scored: tuple[S.Purchases, S.Value | None],
    ) -> dict[str, Any]:
        profile, signals = build(facts, now, self.population, previous, scored)
        schemas = registry()
        fresh = []
        for event in events_from_facts(
            signals, {"customer_id": customer_id}, source=SOURCE, when=WHEN, default_time=now
        ):
            schemas.validate(event)  # a signal that breaks its contract is a bug here, not downstream
            fresh.append(encode(event).decode())  # text: see store
        pending = list((previous or {}).get("pending", [])) + fresh
        event_times = [parse_rfc3339(e["time"]) for e in events]
        return {
            "_id": customer_id,
            **profile,
            "facts": encode_facts(facts),
            "pending": pending,
            "has_pending": bool(pending),
            "partition": partition_of(customer_id, self.settings.topic_partitions),
            "next_review": now + REVIEW_EVERY,
            "updated_at": SystemClock().now(),
            "scored_at": now,
            "event_time": max(
                [
                    *event_times,
                    *([previous["event_time"]] if previous and previous.get("event_time") else []),
                ],
                default=None,
            ),
        }

    async def _publish(self, docs: list[dict[str, Any]]) -> None:
        """Signals stored with their profile are published, then cleared; a crash in between
        publishes them again later (consumers deduplicate on the event id)."""
        if not docs:
            return
        records = [raw.encode() for d in docs for raw in d["pending"]]
        try:
            producer = await self.producer()
            await asyncio.to_thread(producer.publish_encoded, records)
        except Exception:  # the broker is away: they stay pending, the review timer retries
            log.warning("signals not published yet; kept with their profiles", count=len(records))
            return
        await self.store.clear_pending([d["_id"] for d in docs])
        for raw in records:
            SIGNALS.labels(orjson.loads(raw)["type"]).inc()

    async def publish_pending(self) -> None:
        async with self._lock:
            await self._publish(await self.store.with_pending())

    async def review(self, partitions: list[int]) -> int:
        """Re-score customers whose scores can change with time alone (recency, lifecycle,
        churn, birthdays), on this worker's partitions."""
        due = await self.store.due(self.now(), partitions)
        changed = 0
        for start in range(0, len(due), 500):
            changed += await self.fold([], rescore=due[start : start + 500])
        await self.publish_pending()
        return changed

    async def rescore_all(self, partitions: list[int]) -> int:
        """Every profile on these partitions scored again (after a population refresh)."""
        ids = await self.store.ids(partitions)
        for start in range(0, len(ids), 500):
            await self.fold([], rescore=ids[start : start + 500])
        await self.publish_pending()
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
