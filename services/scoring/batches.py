"""The scorer's hot path in whole batches, with faust still in charge.

What this works around: faust's `Consumer._drain_messages` hands every fetched record to the
topic conductor one at a time, awaiting `wait_first(callback(message), suspend_flow.wait())`
for each (two tasks and an `asyncio.wait` per message), and the agent's stream then wraps,
tracks and acknowledges each one again. Whatever the iteration style (`take`,
`take_events`, `noack`), that caps a do-nothing agent at a few thousand events per second
here and keeps a core busy, the core the scoring itself needs.

`BatchConsumer` replaces only that loop, and only for the topics registered with
`batch_topics()`: each fetch (faust's own `getmany` on its own aiokafka consumer, with its
flow control, paused partitions and rebalance checks) goes to an agent as one `Batch` through
an in-memory channel. When the agent has written the batch it resolves `Batch.done`; only
then are the batch's offsets marked acknowledged in faust's own bookkeeping, so faust commits
them on its usual schedule and before a rebalance, never earlier. A batch fetched under a
consumer generation that has since changed (a rebalance) is not acknowledged: its partitions
may belong to another worker now, which reads them from the last commit (the fold is
idempotent). Group membership, assignment, commits, timers, web views and the agent stay
faust's.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import faust
import structlog
from aiokafka import TopicPartition
from faust.transport.drivers.aiokafka import Consumer

from services.common.kafka import EMPTIED_LOG_CHECK_SECONDS, log_restarted_empty

log = structlog.get_logger(__name__)

# Batches handed over but not yet acknowledged: one publishing its signals, one being written,
# one staged, and one more fetched so that its read reaches the database before the write in
# progress ends (pipeline.BatchPipeline._let_next_batch_read). At three, the fourth batch
# waited for the first one's publish, which queues behind the next write, and the database idled between writes
# (the scorer part of `make bench` on 300,000 events: 3,956 events/s at three, 4,120 at four,
# no gain at five or six). A slow agent still holds the fetcher back instead of piling records up in memory.
IN_FLIGHT = 4


@dataclass
class Batch:
    records: list[Any]  # aiokafka ConsumerRecords: .topic .partition .offset .key .value
    generation: int
    handed_over_at: float = field(default_factory=time.monotonic)
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def settle(self, work: asyncio.Future) -> None:
        """Done callback of the batch's work: acknowledge it, or not when the work failed."""
        if work.cancelled():
            self.done.cancel()
        elif work.exception() is not None:
            self.done.set_exception(work.exception())
        else:
            self.done.set_result(None)


class BatchConsumer(Consumer):
    """faust's aiokafka consumer, draining batch topics in batches (see the module docstring)."""

    batch_channel: faust.ChannelT | None = None
    batch_topic_names: frozenset[str] = frozenset()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs inside faust
        if self.batch_channel is None:
            return await super()._drain_messages(fetcher)
        in_flight = self._in_flight = deque()
        next_check = time.monotonic() + EMPTIED_LOG_CHECK_SECONDS
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                records, active = await self._wait_next_records(1.0)
                if self.should_stop:
                    break
                fetched = [
                    record
                    for tp, batch in (records or {}).items()
                    if active is None or tp in active or tp in self._buffered_partitions
                    for record in batch
                ]
                per_message = [r for r in fetched if r.topic not in self.batch_topic_names]
                if per_message:  # topics not registered for batches keep faust's own path
                    raise RuntimeError(
                        f"records of unexpected topics: {sorted({r.topic for r in per_message})}"
                    )
                if fetched:
                    batch = Batch(fetched, self.app.consumer_generation_id)
                    await self.batch_channel.send(value=batch)
                    in_flight.append(batch)
                while in_flight and (in_flight[0].done.done() or len(in_flight) >= IN_FLIGHT):
                    await self._acknowledge(in_flight.popleft())
                if not fetched and in_flight:
                    await asyncio.wait([in_flight[0].done], timeout=0.2)
                elif not fetched and time.monotonic() >= next_check:
                    next_check = time.monotonic() + EMPTIED_LOG_CHECK_SECONDS
                    await self._rewind_emptied_logs()
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise

    def unacknowledged_for(self) -> float:
        """Seconds the oldest batch handed to the agent has waited for its write (0: none
        waits). Fetching stops while IN_FLIGHT batches wait, so a batch that never settles is
        a stalled consumer (/readyz)."""
        waiting = [b.handed_over_at for b in getattr(self, "_in_flight", ()) if not b.done.done()]
        return time.monotonic() - min(waiting) if waiting else 0.0

    async def wait_empty(self) -> None:
        """Before partitions are revoked, faust waits for the messages it tracks; batches are
        not tracked message by message, so wait for their writes too."""
        pending = [b.done for b in getattr(self, "_in_flight", ())]
        if pending:
            await asyncio.wait(pending, timeout=30)
        await super().wait_empty()

    async def _rewind_emptied_logs(self) -> None:
        """Read an emptied log again from its beginning (kafka.log_restarted_empty)."""
        for tp in self.assignment():
            try:
                position = await self.position(tp)
                log_end = self.highwater(tp)
            except Exception:  # noqa: BLE001 - not assigned any more, or no position yet
                continue
            if not log_restarted_empty(position, log_end):
                continue
            log.warning(
                "the broker's log restarted empty; reading it from the beginning",
                topic=tp.topic,
                partition=tp.partition,
                position=position,
                log_end=log_end,
            )
            self._forget_old_log(tp)
            partition = TopicPartition(tp.topic, tp.partition)  # aiokafka's type
            # Seek to the new log's first offset, not "to the beginning": that leaves the partition
            # without a position until the fetcher resolves it, and faust's livelock check asserts
            # one meanwhile (a full test run saw the worker crash on it after a broker restart).
            start = (await self._thread.earliest_offsets(partition))[partition]
            await self._thread.call_thread(self._thread.seek, partition, start)

    def _forget_old_log(self, tp: Any) -> None:
        """Drop what faust keeps of a partition's old log: its commit, read offset,
        acknowledgements and gaps would hold back every offset of the new one."""
        self._committed_offset[tp] = None
        self._read_offset[tp] = None
        self._acked[tp].clear()
        self._acked_index[tp].clear()
        self._gap.pop(tp, None)

    async def _acknowledge(self, batch: Batch) -> None:
        await batch.done  # raises if the agent failed: faust restarts the fetcher, nothing is acked
        if batch.generation != self.app.consumer_generation_id:
            return  # a rebalance happened meanwhile: the new owner reads from the last commit
        by_tp: dict[Any, list[int]] = {}
        for record in batch.records:
            by_tp.setdefault(self._new_topicpartition(record.topic, record.partition), []).append(
                record.offset
            )
        for tp, offsets in by_tp.items():
            committed = self._committed_offset[tp]
            if log_restarted_empty(committed, min(offsets)):
                # Within one generation faust reads on from its commit, never below it: records
                # under it come from a new log (the broker restarted empty), and the old commit
                # would hold back all of them.
                self._forget_old_log(tp)
                committed = None
            fresh = [
                o for o in offsets if (committed is None or o >= committed) and o not in self._acked_index[tp]
            ]
            read = self._read_offset[tp]
            if read is not None and fresh and min(fresh) > read + 1:
                await self._add_gap(tp, read + 1, min(fresh))  # offsets the broker skipped
            self._acked[tp].extend(fresh)
            self._acked_index[tp].update(fresh)
            self._n_acked += len(fresh)
            self._read_offset[tp] = max(offsets if read is None else [read, *offsets])
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()


def batch_topics(app: faust.App, topic: faust.TopicT, channel: faust.ChannelT) -> None:
    """Subscribe to `topic` and deliver its records to `channel` in batches."""
    app.topics.add(topic)  # subscribed like an agent's topic, drained by BatchConsumer
    app.transport.Consumer = type(
        "ScorerConsumer",
        (BatchConsumer,),
        {"batch_channel": channel, "batch_topic_names": frozenset(topic.topics)},
    )
