"""The service layer's one way to change state: a MongoDB transaction that stores the
entity, its events (outbox) and, for an `Idempotency-Key`, the response, all or nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClientSession
from pymongo.errors import DuplicateKeyError

from .auth import Principal
from .clock import SystemClock
from .errors import ConcurrentChange
from .mongo import Mongo, index
from .outbox import Outbox
from .problems import Problem

IDEMPOTENCY = "idempotency"
INDEXES = {IDEMPOTENCY: [index("expires_at", expireAfterSeconds=0)]}


@dataclass
class Outcome:
    """What a write answers (status and JSON body) and the events it caused."""

    status: int
    body: Any
    events: list[dict[str, Any]] = field(default_factory=list)
    replayed: bool = False


@dataclass(frozen=True)
class IdempotencyKey:
    id: str
    request_hash: str

    @classmethod
    def from_request(
        cls, key: str | None, principal: Principal, operation: str, payload: bytes
    ) -> IdempotencyKey | None:
        if key is None:
            return None
        if not (1 <= len(key) <= 200) or not key.isprintable():
            raise Problem(400, "Idempotency-Key must be 1 to 200 printable characters")
        # Scoped by caller and operation: the same key from another caller is another request.
        scope = hashlib.sha256(f"{principal.label}\x00{operation}\x00{key}".encode()).hexdigest()
        return cls(scope, hashlib.sha256(payload).hexdigest())


Work = Callable[[AsyncIOMotorClientSession], Awaitable[Outcome]]


class Writes:
    def __init__(self, mongo: Mongo, outbox: Outbox, ttl_hours: int = 48) -> None:
        self.mongo = mongo
        self.outbox = outbox
        self.ttl = timedelta(hours=ttl_hours)
        self.idempotency = mongo.db[IDEMPOTENCY]
        self._clock = SystemClock()

    async def run(self, work: Work, key: IdempotencyKey | None = None) -> Outcome:
        if key is not None:
            stored = await self._replay(key)
            if stored is not None:
                return stored

        async def transaction(session: AsyncIOMotorClientSession) -> Outcome:
            outcome = await work(session)
            await self.outbox.add(session, outcome.events)
            if key is not None:
                now = self._clock.now()
                await self.idempotency.insert_one(
                    {
                        "_id": key.id,
                        "request_hash": key.request_hash,
                        "status": outcome.status,
                        "body": outcome.body,
                        "created_at": now,
                        "expires_at": now + self.ttl,
                    },
                    session=session,
                )
            return outcome

        try:
            outcome = await self._with_retries(transaction)
        except DuplicateKeyError:
            # The same key raced in concurrently and won: answer what it answered.
            stored = await self._replay(key) if key is not None else None
            if stored is None:
                raise
            return stored
        if outcome.events:
            self.outbox.wake()
        return outcome

    async def _with_retries(self, transaction: Work, attempts: int = 5) -> Outcome:
        """Optimistic concurrency: a write that lost the race reads again and retries."""
        for attempt in range(attempts):
            try:
                return await self.mongo.transaction(transaction)
            except ConcurrentChange:
                await asyncio.sleep(0.01 * (attempt + 1))
        raise Problem(409, "the same record is being changed concurrently; retry")

    async def _replay(self, key: IdempotencyKey) -> Outcome | None:
        found = await self.idempotency.find_one({"_id": key.id})
        if found is None:
            return None
        if found["request_hash"] != key.request_hash:
            raise Problem(422, "this Idempotency-Key was used for a different request; use a new key")
        return Outcome(found["status"], found["body"], replayed=True)
