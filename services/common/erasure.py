"""Right to erasure, the part every service shares: follow `crm.customer.erased` on
crm.customers.v1 and let the service remove or anonymise what it holds about the person.

Each service passes its own `forget(customer_id)`; this module adds what all of them hold
alike: stored `Idempotency-Key` answers, whose bodies can carry personal data. Forgetting is
a scrub, so running it twice changes nothing: redelivery needs no bookkeeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from motor.motor_asyncio import AsyncIOMotorClientSession, AsyncIOMotorDatabase
from prometheus_client import Counter

from . import topics
from .kafka import Delivered, EventConsumer, EventProducer
from .settings import Settings
from .writes import IDEMPOTENCY

log = structlog.get_logger(__name__)
ERASED = "crm.customer.erased"
ERASURES = Counter("crm_erasures_total", "Customers whose personal data this process erased.")
SCRUBBED = "[erased]"  # what replaces free text that may describe the person

Forget = Callable[[str], Awaitable[None]]


async def forget_answers(
    db: AsyncIOMotorDatabase, customer_id: str, session: AsyncIOMotorClientSession | None = None
) -> None:
    """Stored write answers about this customer (registration echoes, complaint bodies, ...)."""
    await db[IDEMPOTENCY].delete_many({"body.customer_id": customer_id}, session=session)


async def follow_erasures(
    settings: Settings,
    service: str,
    db: AsyncIOMotorDatabase,
    forget: Forget | None,
    stop: asyncio.Event,
) -> None:
    """A consumer group member of its own (`crm-<service>-erasure`), so erasure never waits
    behind a service's other work; offsets are committed after the scrub. `forget` is what
    the service itself holds about the person (None when its documents hold nothing personal)."""

    async def handle(batch: list[Delivered]) -> None:
        for delivered in batch:
            if delivered.event["type"] != ERASED:
                continue
            customer_id = delivered.event["data"]["customer_id"]
            if forget is not None:
                await forget(customer_id)
            await forget_answers(db, customer_id)
            ERASURES.inc()
            log.info("customer erased", customer_id=customer_id, event_id=delivered.event["id"])

    producer = await asyncio.to_thread(EventProducer, settings, f"{service}-erasure")
    consumer = await asyncio.to_thread(
        EventConsumer, settings, f"crm-{service}-erasure", (topics.CUSTOMERS,), producer
    )
    try:
        await consumer.run(handle, stop)
    finally:
        await asyncio.to_thread(consumer.close)
        await asyncio.to_thread(producer.close)
