"""Right to erasure, the part every service shares: follow `crm.customer.erased` on
crm.customers.v1 and let the service remove or anonymise what it holds about the person.

Each service passes its own `forget(customer_id)`; this module adds what all of them hold
alike: stored `Idempotency-Key` answers, whose bodies can carry personal data, and the
published events its outbox keeps for the retention window (outbox.Retention). Forgetting is
a scrub, so running it twice changes nothing: redelivery needs no bookkeeping.

The scorer does not follow erasure here: it folds every event of a customer, in order, into
facts, and its rule for `crm.customer.erased` is services/scoring/facts.py `erase`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from motor.motor_asyncio import AsyncIOMotorClientSession, AsyncIOMotorDatabase
from prometheus_client import Counter

from .handlers import Handlers
from .kafka import consume
from .outbox import ERASED, PUBLISHED, forget_published
from .settings import Settings
from .writes import IDEMPOTENCY

log = structlog.get_logger(__name__)
ERASURES = Counter("crm_erasures_total", "Customers whose personal data this process erased.")
SCRUBBED = "[erased]"  # what replaces free text that may describe the person

Forget = Callable[[str], Awaitable[None]]


async def forget_answers(
    db: AsyncIOMotorDatabase, customer_id: str, session: AsyncIOMotorClientSession | None = None
) -> None:
    """Stored write answers about this customer (registration echoes, complaint bodies, ...)."""
    await db[IDEMPOTENCY].delete_many({"body.customer_id": customer_id}, session=session)


@dataclass(frozen=True)
class Forgetting:
    """What one service forgets: its own holdings (`forget`, None when its documents hold
    nothing personal) and the stored answers in its database."""

    db: AsyncIOMotorDatabase
    forget: Forget | None


FOLLOWED: Handlers[Forgetting] = Handlers()


@FOLLOWED.on(ERASED)
async def erased(forgetting: Forgetting, event: dict[str, Any]) -> None:
    customer_id = event["data"]["customer_id"]
    if forgetting.forget is not None:
        await forgetting.forget(customer_id)
    await forget_answers(forgetting.db, customer_id)
    await forget_published(forgetting.db[PUBLISHED], customer_id)
    ERASURES.inc()
    log.info("customer erased", customer_id=customer_id, event_id=event["id"])


async def follow_erasures(
    settings: Settings,
    service: str,
    db: AsyncIOMotorDatabase,
    forget: Forget | None,
    stop: asyncio.Event,
) -> None:
    """A consumer group member of its own (`crm-<service>-erasure`), so erasure never waits
    behind a service's other work; offsets are committed after the scrub. Every service that
    holds data about customers runs this, the same way (profiles, where erasure starts,
    forgets in the request that publishes it)."""
    handle = FOLLOWED.one_by_one(Forgetting(db, forget))
    await consume(settings, f"crm-{service}-erasure", FOLLOWED.topics, handle, stop)
