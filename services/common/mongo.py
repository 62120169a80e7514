"""The one place a MongoDB client is created, plus transactions and index bootstrap.

motor is the driver the platform was specified with; upstream deprecated it for PyMongo's
own async API (`pymongo.AsyncMongoClient`). Only calls both share are used, and the client
is built here alone, so the move is a change to `connect()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorClientSession, AsyncIOMotorDatabase
from pymongo import ASCENDING, IndexModel

from .settings import Settings

T = TypeVar("T")


def connect(settings: Settings) -> AsyncIOMotorClient:
    return AsyncIOMotorClient(
        settings.mongo_url,
        serverSelectionTimeoutMS=5000,
        # Also the heartbeat's socket timeout. A server that answers one request at a time (the
        # embedded nx-27017) can take seconds behind a long scan; a heartbeat timing out clears
        # the pool and cancels every operation in flight, so allow it 10 s. A server that is
        # really down refuses the connection at once and is noticed just as fast.
        connectTimeoutMS=10_000,
        tz_aware=True,
        uuidRepresentation="standard",
    )


@dataclass
class Mongo:
    """A service's database handle. Every multi-document write goes through `transaction`."""

    client: AsyncIOMotorClient
    db: AsyncIOMotorDatabase
    serialize_transactions: bool = False

    def __post_init__(self) -> None:
        self._tx_lock = asyncio.Lock()

    @classmethod
    async def open(cls, settings: Settings, service: str) -> Mongo:
        client = connect(settings)
        mongo = cls(client, client[settings.db_name(service)])
        # Embedded-stack gap: nx-27017 runs every session's transaction as a savepoint on one
        # SQLite connection, so two interleaved transactions corrupt each other ("no such
        # savepoint"). There, a process runs its transactions one at a time; a real replica
        # set runs them concurrently.
        try:
            info = await client.admin.command("buildInfo")
            mongo.serialize_transactions = info.get("process") == "nx_27017"
        except Exception:  # noqa: BLE001 - unreachable now; readyz reports it, writes retry
            mongo.serialize_transactions = True
        return mongo

    async def transaction(self, work: Callable[[AsyncIOMotorClientSession], Awaitable[T]]) -> T:
        """Run `work(session)` in one transaction, retried on transient errors."""
        if self.serialize_transactions:
            async with self._tx_lock:
                return await self._run(work)
        return await self._run(work)

    async def _run(self, work: Callable[[AsyncIOMotorClientSession], Awaitable[T]]) -> T:
        async with await self.client.start_session() as session:
            return await session.with_transaction(work)

    async def ping(self, timeout: float = 1.0) -> bool:
        try:
            await asyncio.wait_for(self.client.admin.command("ping"), timeout)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False

    def close(self) -> None:
        self.client.close()


async def ensure_indexes(db: AsyncIOMotorDatabase, spec: dict[str, Iterable[IndexModel]]) -> None:
    """Create collections and their indexes. Creating the collection first matters on the
    embedded server, where counting or aggregating a collection that does not exist yet
    fails instead of answering zero."""
    existing = set(await db.list_collection_names())
    for name, indexes in spec.items():
        if name not in existing:
            try:
                await db.create_collection(name)
            except Exception as exc:  # created by a concurrent starter
                if "already exists" not in str(exc):
                    raise
        models = list(indexes)
        if models:
            await db[name].create_indexes(models)


def index(*keys: str | tuple[str, int], **options: Any) -> IndexModel:
    """index("customer_id", ("created_at", -1), unique=True)"""
    pairs = [(k, ASCENDING) if isinstance(k, str) else k for k in keys]
    # Embedded-stack gap: nx-27017 fails every insert ("JSON path error near '_id'") into a
    # collection with a compound index that names _id. Sorts may still end on _id as a tie
    # breaker; the index just stops one field earlier.
    if len(pairs) > 1 and any(name == "_id" for name, _ in pairs):
        raise ValueError("keep _id out of compound indexes (see the comment in services/common/mongo.py)")
    return IndexModel(pairs, **options)


def projection(*fields: str) -> dict[str, int]:
    """A projection of the top-level fields that hold `fields` (dotted paths allowed).

    Embedded-stack gap: nx-27017 answers a dotted projection such as {"value.abc_class": 1}
    with a flat key "value.abc_class" instead of the nested document real MongoDB returns,
    so projections name whole top-level fields and callers read the nested value."""
    return {name.split(".", 1)[0]: 1 for name in fields}


def between(start: Any | None, end: Any | None) -> dict[str, Any] | None:
    """A half-open range condition [start, end), or None when neither bound is given."""
    if start is None and end is None:
        return None
    return {**({"$gte": start} if start is not None else {}), **({"$lt": end} if end is not None else {})}
