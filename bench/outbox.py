"""Outbox relay throughput with published rows kept for the retention window (moved to
`outbox_published`, and the broker's topic ids looked at once a second) against dropping them
(`CRM_OUTBOX_RETENTION_SECONDS=0`), on the embedded stack, in the same run. Each row holds one
event (a write of the API usually makes one); rounds alternate so drift hits both alike."""

from __future__ import annotations

import asyncio
import time
import uuid

from bson import Binary, ObjectId

from services.common import outbox
from services.common.contracts import build_event, encode_bounded
from services.common.kafka import ensure_topics
from services.common.mongo import Mongo, ensure_indexes

from .report import Row, show
from .stack import start_bench_stack

ROWS = 8_000
ROUNDS = 3


def _rows(count: int) -> list[dict]:
    now = time.time()
    return [
        {
            "_id": ObjectId(),
            "records": [
                Binary(
                    encode_bounded(
                        build_event(
                            "crm.order.paid",
                            {
                                "order_id": f"o-{k}",
                                "customer_id": f"c-{k % 500}",
                                "amount_cents": 1000 + k,
                                "currency": "CNY",
                                "paid_at": "2026-11-22T07:00:00Z",
                            },
                            source="/services/orders",
                        )
                    )
                )
            ],
            "created_at": now,
        }
        for k in range(count)
    ]


async def _drain_rate(stack, retention_seconds: float) -> float:
    """Rows a second one relay publishes from a full outbox until it is empty."""
    settings = stack.settings(
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
        db_prefix=f"b{uuid.uuid4().hex[:8]}_",
        outbox_retention_seconds=retention_seconds,
        outbox_poll_seconds=0.05,
    )
    await asyncio.to_thread(ensure_topics, settings)
    mongo = await Mongo.open(settings, "orders")
    await ensure_indexes(mongo.db, outbox.INDEXES)
    relay = outbox.Outbox(mongo, settings, "orders")
    await mongo.db[outbox.OUTBOX].insert_many(_rows(ROWS))
    stop = asyncio.Event()
    started = time.perf_counter()
    running = asyncio.create_task(relay.run(stop))
    try:
        while await mongo.db[outbox.OUTBOX].count_documents({}):
            await asyncio.sleep(0.2)  # the embedded server answers one request at a time
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        await running
        mongo.close()
    return ROWS / elapsed


async def _measure(stack) -> tuple[float, float]:
    kept, dropped = [], []
    for _ in range(ROUNDS):
        dropped.append(await _drain_rate(stack, 0.0))
        kept.append(await _drain_rate(stack, 3600.0))
    return max(kept), max(dropped)


def main() -> None:
    stack = start_bench_stack()
    try:
        kept, dropped = asyncio.run(_measure(stack))
        show(
            f"Outbox relay, {ROWS:,} rows of one event, embedded broker",
            [
                Row(
                    "outbox",
                    "relay keeping published rows 1 h (broker-restart recovery)",
                    kept,
                    "rows/s",
                    "relay dropping them (retention 0)",
                    dropped,
                )
            ],
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
