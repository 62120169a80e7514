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


class Answered(Exception):  # noqa: N818 - not an error: the key's stored answer, found in the transaction
    def __init__(self, outcome: Outcome) -> None:
        super().__init__("answered from the Idempotency-Key")
        self.outcome = outcome


Work = Callable[[AsyncIOMotorClientSession], Awaitable[Outcome]]


class Writes:
    def __init__(self, mongo: Mongo, outbox: Outbox, ttl_hours: int = 48) -> None:
        self.mongo = mongo
        self.outbox = outbox
        self.ttl = timedelta(hours=ttl_hours)
        self.idempotency = mongo.db[IDEMPOTENCY]
        self._clock = SystemClock()

    async def run(self, work: Work, key: IdempotencyKey | None = None) -> Outcome:
        """With a key, the key is read again inside the transaction and its answer written in
        it: a retry that overlapped the original (the client timed out and asked again) meets
        the original's answer once that committed, never the work's own conflict (the order
        already paid): the transaction's snapshot holds both the work's effect and the key's
        answer or neither. A refusal with no answer stored is the work's own and stands."""
        if key is not None:
            stored = await self._replay(key)
            if stored is not None:
                return stored

        async def transaction(session: AsyncIOMotorClientSession) -> Outcome:
            if key is not None:
                stored = await self._replay(key, session)
                if stored is not None:
                    raise Answered(stored)  # nothing to write: abort rather than commit a read
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
        except Answered as answered:
            return answered.outcome
        except (DuplicateKeyError, Problem) as refused:
            if key is None or (isinstance(refused, Problem) and refused.status != 409):
                raise
            # The same key raced in concurrently: answer what it answered once it committed.
            stored = await self._replay(key)
            if stored is not None:
                return stored
            raise
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

    async def _replay(
        self, key: IdempotencyKey, session: AsyncIOMotorClientSession | None = None
    ) -> Outcome | None:
        found = await self.idempotency.find_one({"_id": key.id}, session=session)
        if found is None:
            return None
        if found["request_hash"] != key.request_hash:
            raise Problem(422, "this Idempotency-Key was used for a different request; use a new key")
        return Outcome(found["status"], found["body"], replayed=True)
