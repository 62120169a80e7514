"""The signal outbox: signals are stored with their profile and published after its write.

Each stored signal carries the sequence number of the batch that made it. Instead of clearing
each profile's pending list once published (a second write per profile), the outbox records,
per partition, the batch sequence through which every signal is out (`published_through`, kept
in the database): stored signals at or below it are published, and the next fold of the
profile drops them. After a failed publish nothing moves until the backlog is swept
(`sweep`), so order is kept; consumers deduplicate on event id.

Published signals are kept for the retention window like every outbox's rows (outbox.Retention,
collection `signals_retained`) and sent again, oldest first, before any newer signal when the
broker comes back without them (the embedded broker keeps its logs in memory)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog

from services.common.kafka import EventProducer
from services.common.outbox import Retention

from .metrics import SIGNALS
from .store import ProfileStore

log = structlog.get_logger(__name__)
SWEEP_PAGE = 2000  # profiles read at a time by the backlog sweep


class SignalOutbox:
    def __init__(
        self, store: ProfileStore, producer: Callable[[], Awaitable[EventProducer]], retention: Retention
    ) -> None:
        self.store = store
        self.producer = producer
        self.retention = retention  # published signals, kept in `signals_retained`
        self.published_through: dict[int, int] = {}  # partition -> batch sequence
        # Signals may be stored unpublished (a failed publish, or a crash of this or a previous
        # owner of the partitions): batches store theirs without publishing until a sweep ran.
        self.backlog = True

    def waiting(self, doc: dict[str, Any], partition: int) -> list[dict[str, Any]]:
        """The signals stored with a profile whose batch is past its partition's published mark.
        Read from a worker thread while the loop may raise the mark: a stale mark only keeps a
        published signal in the profile a while longer (publishing skips it by its sequence)."""
        through = self.published_through.get(partition, 0)
        entries = [
            # a bare text is the earlier form: a signal of the batch that wrote the profile
            raw if isinstance(raw, dict) else {"seq": doc["pending_seq"], "event": raw}
            for raw in doc.get("pending") or []
        ]
        return [entry for entry in entries if entry["seq"] > through]

    async def publish(self, docs: list[dict[str, Any]], seq: int) -> bool:
        """Publish the signals stored with these profiles (all at or below batch `seq`) that
        no earlier batch published, then mark their partitions published through `seq`. On
        failure they stay stored and the backlog sweep (on the review timer) sends them."""
        records = [entry["event"].encode() for d in docs for entry in self.waiting(d, d["partition"])]
        if records:
            try:
                await self.retention.restore(self.producer)  # what the broker lost goes first
                producer = await self.producer()
                replacements = producer.replacements
                await asyncio.to_thread(producer.publish_encoded, records)
            except Exception:
                log.warning("signals not published yet; kept with their profiles", count=len(records))
                self.backlog = True
                self.retention.suspect()
                return False
            if producer.replacements != replacements:  # the broker forgot the producer: restarted?
                self.retention.suspect()
            await self.retention.keep(records)
            for raw in records:
                SIGNALS.labels(orjson.loads(raw)["type"]).inc()
        through = {d["partition"]: seq for d in docs}
        await self.store.mark_published(through)
        for partition, batch in through.items():
            self.published_through[partition] = max(self.published_through.get(partition, 0), batch)
        return True

    async def reload(self) -> int:
        """Read the published marks back from the database; returns the highest batch sequence."""
        self.published_through = await self.store.published_marks()
        return max(self.published_through.values(), default=0)

    async def sweep(self, partitions: list[int]) -> None:
        """Signals stored but not known to be published, oldest batch first. Run with no batch
        writing meanwhile (BatchPipeline.writes_paused)."""
        while True:
            batches = await self.store.pending_batches(self.published_through, partitions, SWEEP_PAGE)
            if not batches:
                self.backlog = False
                await self.retention.restore_when_idle(self.producer)
                await self.retention.prune()
                return
            for seq, docs in batches:
                if not await self.publish(docs, seq):
                    return
