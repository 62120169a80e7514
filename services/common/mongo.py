"""The one place a MongoDB client is created, the one place the embedded database's gaps
are described (`DatabaseCapabilities`), plus transactions and index bootstrap.

motor is the driver the platform was specified with; upstream deprecated it for PyMongo's
own async API (`pymongo.AsyncMongoClient`). Only calls both share are used, and the client
is built here alone (services, tests and benchmarks call `connect`, `async_client` or
`blocking_client`), so the move is a change to this file.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pymongo
import structlog
from bson.binary import UUID_SUBTYPE, Binary
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorClientSession, AsyncIOMotorDatabase
from pymongo import ASCENDING, IndexModel, MongoClient
from pymongo.errors import ExecutionTimeout, PyMongoError

from .settings import Settings

T = TypeVar("T")
log = structlog.get_logger(__name__)


def connect(settings: Settings) -> AsyncIOMotorClient:
    return async_client(settings.mongo_url)


def async_client(url: str) -> AsyncIOMotorClient:
    """The services' client (motor), also for tests and benchmarks that write directly."""
    return AsyncIOMotorClient(
        url,
        serverSelectionTimeoutMS=5000,
        # Also the heartbeat's socket timeout. A server that answers one request at a time (the
        # embedded nx-27017) can take seconds behind a long scan; a heartbeat timing out clears
        # the pool and cancels every operation in flight, so allow it 10 s. A server that is
        # really down refuses the connection at once and is noticed just as fast.
        connectTimeoutMS=10_000,
        # No operation waits forever on a half-open connection. Well above the longest
        # legitimate one: on the embedded server a 1,000-profile bulk write takes 1.3-1.7 s and
        # the population pipeline 2.2 s over 30,000 profiles (about 8 s at the benchmark's
        # 100,000), and a request may queue behind it. Transactions have a tighter deadline of
        # their own (`Mongo.transaction`).
        socketTimeoutMS=60_000,
        tz_aware=True,
        uuidRepresentation="standard",
    )


def blocking_client(url: str, **options: Any) -> MongoClient:
    """A synchronous client (PyMongo) for command-line checks, tests and benchmarks that read
    outside an event loop; `options` are PyMongo's (e.g. serverSelectionTimeoutMS)."""
    return MongoClient(url, **options)


@dataclass(frozen=True)
class DatabaseCapabilities:
    """What the MongoDB-protocol server behind a handle serves the way a real MongoDB does.

    Detected once from `buildInfo` when a handle opens (`Mongo.capabilities`). A real MongoDB
    serves all of it; the embedded nx-27017 (the wire protocol over SQLite) misses each field
    set False in `EMBEDDED`. Every workaround for a gap is here by name: where the workaround is
    also right on a real server the code keeps it everywhere and its use site cites the field;
    where it only costs on a real server the code consults the handle's capabilities.
    docs/architecture.md ("The embedded stack and production") lists the same gaps.
    """

    server: str
    # nx-27017 runs every session's transaction as a savepoint on one SQLite connection, so two
    # interleaved transactions corrupt each other ("no such savepoint"). Consulted by
    # `Mongo.transaction`: without it a process runs its transactions one at a time.
    concurrent_transactions: bool = True
    # nx-27017 answers `$or` and `$and` by reading every document in Python under its database
    # lock (2 s at 30,000 profiles, every other request waiting); plain conditions are SQL over
    # an index. So reads that would be one `$or` are several plain ones, which a real server
    # also serves through its indexes: pagination's runs after a cursor
    # (services/common/pagination.py `after`), the scorer's backlog sweep, one query a
    # partition (services/scoring/store.py `pending_batches`).
    indexed_or: bool = True
    # nx-27017 compares `_id` ranges in Python, so a page's run among ties of the sort value
    # still scans (a second page over 30,000 profiles 0.9 s, the first 0.03 s). Nothing works
    # around it: sorts end on `_id` to be total, as they must on any server.
    indexed_id_ranges: bool = True
    # nx-27017 compares dates in Python over every matching document (2.3 s at 30,000 profiles,
    # the database held); numbers go through the index. The scorer keeps its review time as
    # epoch seconds (`next_review_ts`, written in services/scoring/pipeline.py, read by
    # services/scoring/store.py `due`), as right on a real server.
    # Period reads (complaints' `opened_ts`, surveys' `submitted_ts`, segment moves' `at_ts`)
    # select on epoch seconds too (`epoch_seconds`).
    indexed_date_ranges: bool = True
    # nx-27017 projects a find in Python over whole documents under its lock (3.5 s for 30,000
    # profiles with their facts); the same read as an aggregation pipeline is served in SQL
    # (1 s). The population job reads its rows as a pipeline (services/scoring/store.py
    # `population_rows`), as cheap on a real server. A sorted page of large documents is the
    # same: a desk timeline page of 50 among 2,000 entries 80 ms as a find, 20 ms as a
    # pipeline (services/common/pagination.py `page(pipeline=True)`).
    find_projection_in_sql: bool = True
    # nx-27017 answers a dotted projection such as {"value.abc_class": 1} with a flat key
    # "value.abc_class" instead of the nested document. `projection` names whole top-level
    # fields and callers read the nested value, which every server answers alike.
    nested_projection: bool = True
    # nx-27017 fails every insert ("JSON path error near '_id'") into a collection with a
    # compound index that names `_id`. `index` refuses such an index on every server; sorts may
    # still end on `_id` as a tie breaker, the index just stops one field earlier.
    compound_index_with_id: bool = True
    # nx-27017 stores a binary value on insert but fails a replace or update that carries one
    # ("Object of type bytes is not JSON serializable"). The scorer stores facts and the
    # signals waiting in a profile as JSON text (services/scoring/store.py `encode_facts`);
    # outbox rows, only ever inserted, hold binary records (services/common/outbox.py).
    binary_in_updates: bool = True
    # nx-27017 stores a date set by an update of an existing document (or by
    # find_one_and_update) as text ("2026-11-30 12:27:09.530000"), which no date condition
    # matches again; only an insert or an upsert's insert keeps it a date. A date a condition
    # reads after updates is kept as epoch seconds: the outbox lease's `expires_ts`
    # (services/common/outbox.py).
    dates_in_updates: bool = True
    # nx-27017 fails counting or aggregating a collection that does not exist yet instead of
    # answering zero. `ensure_indexes` creates every collection a service names at start.
    empty_missing_collection: bool = True
    # nx-27017 never ends a transaction whose client is gone: no transaction lifetime, and a
    # closed connection drops only its cursors and change streams (nx_27017/server.py
    # handle_client `finally`), not its sessions. The abandoned transaction is SQLite's
    # `BEGIN IMMEDIATE` on the database's one connection (neosqlite/client_session.py
    # start_transaction), so its writes are visible to every client and everything written to
    # that database afterwards joins it (autocommit writes, other transactions as savepoints)
    # and is lost when the server stops. `endSessions` with the dead session's id rolls it back
    # (nx_27017/handler.py endSessions -> neosqlite ClientSession.end_session). So a handle
    # journals the ids of its sessions (`SessionJournal`) and, opening, ends those of the
    # processes that are gone (`Mongo.open`): the launcher's restart of a killed service ends
    # its transaction. What other processes wrote to that database between the kill and the
    # restart is rolled back with it, and a service that is not restarted leaves it open.
    ends_abandoned_transactions: bool = True
    # Known from the founding contract and kept out of the code rather than worked around:
    # `$ne` against an array field always matches (use `$nin`); `$not`, `{field: None}`,
    # `$sortByCount`, `$bucketAuto`, array-index paths (`a.0`), update pipelines, Decimal128 and
    # collation are missing or wrong; `$setOnInsert` in find_one_and_update with upsert is
    # ignored (update_one with upsert, then read). Its wire protocol answers one request at a
    # time: `async_client` allows a heartbeat 10 s behind a long scan.

    @classmethod
    def of(cls, build_info: dict[str, Any] | None) -> DatabaseCapabilities:
        """From `buildInfo`; None (the server did not answer) assumes the embedded server's
        gaps, whose workarounds are safe on any server."""
        if build_info is None:
            return replace(EMBEDDED, server="unknown")
        if build_info.get("process") == "nx_27017":
            return EMBEDDED
        return DatabaseCapabilities(server=f"mongodb {build_info.get('version', '?')}")


EMBEDDED = DatabaseCapabilities(
    server="nx-27017",
    concurrent_transactions=False,
    indexed_or=False,
    indexed_id_ranges=False,
    indexed_date_ranges=False,
    find_projection_in_sql=False,
    nested_projection=False,
    compound_index_with_id=False,
    binary_in_updates=False,
    dates_in_updates=False,
    empty_missing_collection=False,
    ends_abandoned_transactions=False,
)


class SessionJournal:
    """The session ids a handle runs transactions under, one hex id a line in a file of its own
    whose name starts with its process id (`DatabaseCapabilities.ends_abandoned_transactions`).
    A line is written before its first transaction, so a SIGKILL cannot hide it; the driver's
    pool reuses sessions, so a file stays a few lines long. Files of processes that are gone
    name the sessions whose transactions may be left open."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / f"{os.getpid()}.{uuid.uuid4().hex[:8]}.ids"  # a handle's own
        self._known: set[str] = set()

    def left_behind(self) -> dict[Path, list[str]]:
        """Each journal of a process no longer running, with its session ids."""
        found = {}
        for path in self.folder.glob("*.ids"):
            pid = path.name.split(".", 1)[0]
            if pid.isdigit() and not _running(int(pid)):
                found[path] = path.read_text().split()
        return found

    def close(self) -> None:
        """The driver ended the sessions itself (a client's close sends `endSessions`)."""
        self.path.unlink(missing_ok=True)

    def note(self, session: AsyncIOMotorClientSession) -> None:
        session_id = session.session_id["id"].hex()
        if session_id not in self._known:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as journal:
                journal.write(session_id + "\n")
            self._known.add(session_id)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


FAILED_TRANSACTION_END_WAIT = 1.0  # seconds a caller waits for its failed transaction to be ended


@dataclass
class Mongo:
    """A service's database handle. Every multi-document write goes through `transaction`."""

    client: AsyncIOMotorClient
    db: AsyncIOMotorDatabase
    capabilities: DatabaseCapabilities = field(default_factory=lambda: EMBEDDED)
    # Seconds a transaction may take, waiting for its turn, retries and commit included
    # (settings.db_timeout_seconds); then it fails with a timeout (HTTP: 503 with Retry-After).
    timeout: float = 10.0
    journal: SessionJournal | None = None

    def __post_init__(self) -> None:
        self._tx_lock = asyncio.Lock()
        self._endings: set[asyncio.Task] = set()  # failed transactions being ended on the server

    @classmethod
    async def open(cls, settings: Settings, service: str) -> Mongo:
        client = connect(settings)
        try:
            info = await client.admin.command("buildInfo")
        except Exception:  # noqa: BLE001 - unreachable now; readyz reports it, writes retry
            info = None
        mongo = cls(
            client,
            client[settings.db_name(service)],
            DatabaseCapabilities.of(info),
            timeout=settings.db_timeout_seconds,
        )
        if not mongo.capabilities.ends_abandoned_transactions:
            mongo.journal = SessionJournal(settings.data_dir / "sessions")
            await mongo._end_abandoned()
        return mongo

    async def _end_abandoned(self) -> None:
        """Roll back the transactions that killed processes left open
        (`DatabaseCapabilities.ends_abandoned_transactions`), before this one writes. While the
        server is unreachable their journals stay for the next start."""
        assert self.journal is not None
        for path, session_ids in self.journal.left_behind().items():
            if session_ids:
                lsids = [{"id": Binary(bytes.fromhex(s), UUID_SUBTYPE)} for s in session_ids]
                try:
                    await self.client.admin.command("endSessions", lsids)
                except Exception:  # noqa: BLE001 - unreachable now; tried again at the next start
                    log.warning("abandoned_sessions_not_ended", journal=str(path))
                    continue
                log.info("abandoned_sessions_ended", journal=str(path), sessions=len(session_ids))
            path.unlink(missing_ok=True)

    async def transaction(self, work: Callable[[AsyncIOMotorClientSession], Awaitable[T]]) -> T:
        """Run `work(session)` in one transaction, retried on transient errors, all within
        `timeout` seconds: a stalled database fails it with a timeout (PyMongoError.timeout)
        instead of holding the caller."""
        deadline = time.monotonic() + self.timeout
        if self.capabilities.concurrent_transactions:
            return await self._run(work, deadline, None)
        try:
            async with asyncio.timeout(self.timeout):
                await self._tx_lock.acquire()
        except TimeoutError:
            raise ExecutionTimeout(f"no turn for a transaction within {self.timeout:g}s", 50) from None
        failed: list[Any] = []  # the session of a failed transaction, to end on the server
        try:
            return await self._run(work, deadline, failed)
        finally:
            if failed:
                # The turn is held until the server has ended it, so no later transaction joins
                # it. The caller waits for that only briefly: a responsive server ends it in a
                # round trip (and a write that follows cannot join it either), while a stalled one
                # must still get its 503 within about the timeout.
                ending = asyncio.get_running_loop().create_task(self._end_then_release(failed[0]))
                self._endings.add(ending)
                ending.add_done_callback(self._endings.discard)
                await asyncio.wait([ending], timeout=FAILED_TRANSACTION_END_WAIT)
            else:
                self._tx_lock.release()

    async def _run(
        self,
        work: Callable[[AsyncIOMotorClientSession], Awaitable[T]],
        deadline: float,
        failed: list[Any] | None,
    ) -> T:
        async with await self.client.start_session() as session:
            if self.journal is not None:
                self.journal.note(session)
            try:
                # Every operation's share of the deadline (CSOT), the wait for a turn included.
                with pymongo.timeout(max(deadline - time.monotonic(), 0.001)):
                    return await self._attempts(session, work, deadline)
            except BaseException:
                if not self.capabilities.ends_abandoned_transactions:
                    if failed is None:
                        await self._end_on_server(session.session_id)
                    else:
                        failed.append(session.session_id)
                raise

    async def _attempts(
        self,
        session: AsyncIOMotorClientSession,
        work: Callable[[AsyncIOMotorClientSession], Awaitable[T]],
        deadline: float,
    ) -> T:
        """motor's `with_transaction`, retrying until `deadline` instead of for two minutes."""
        while True:
            session.start_transaction()
            try:
                result = await work(session)
            except Exception as exc:
                if session.in_transaction:
                    await session.abort_transaction()
                if _transient(exc, "TransientTransactionError") and time.monotonic() < deadline:
                    continue
                raise
            if not session.in_transaction:  # the work ended the transaction itself
                return result
            while True:
                try:
                    await session.commit_transaction()
                    return result
                except PyMongoError as exc:
                    if time.monotonic() < deadline and _transient(exc, "UnknownTransactionCommitResult"):
                        continue
                    if time.monotonic() < deadline and _transient(exc, "TransientTransactionError"):
                        break
                    raise

    async def _end_then_release(self, session_id: Any) -> None:
        try:
            await self._end_on_server(session_id)
        finally:
            self._tx_lock.release()

    async def _end_on_server(self, session_id: Any) -> None:
        """End a failed transaction's session on the server, under a deadline of its own
        (`DatabaseCapabilities.ends_abandoned_transactions`). A transaction that timed out
        client-side (a slow batch, a stalled server) or was cancelled had its abort never sent,
        or sent after its deadline and dropped silently by the driver; nx-27017 would keep it
        open, every later write to the database would join it, acknowledged but uncommitted,
        and a crash of the server would lose them all (issue 18). Ending an already finished
        session is harmless."""
        try:
            with pymongo.timeout(self.timeout):
                await self.client.admin.command("endSessions", [session_id])
        except PyMongoError:
            # Unreachable now: the session stays in the journal and is ended at the next start.
            log.warning("failed_transaction_not_ended", session=session_id["id"].hex())

    async def ping(self, timeout: float = 1.0) -> bool:
        try:
            await asyncio.wait_for(self.client.admin.command("ping"), timeout)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False

    def close(self) -> None:
        self.client.close()
        if self.journal is not None:
            self.journal.close()


def _transient(error: BaseException, label: str) -> bool:
    return isinstance(error, PyMongoError) and error.has_error_label(label) and not error.timeout


async def ensure_indexes(db: AsyncIOMotorDatabase, spec: dict[str, Iterable[IndexModel]]) -> None:
    """Create collections and their indexes. The collection is created first, even without
    indexes (`DatabaseCapabilities.empty_missing_collection`)."""
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
    if len(pairs) > 1 and any(name == "_id" for name, _ in pairs):
        raise ValueError("keep _id out of compound indexes (DatabaseCapabilities.compound_index_with_id)")
    return IndexModel(pairs, **options)


def projection(*fields: str) -> dict[str, int]:
    """A projection of the top-level fields that hold `fields` (dotted paths allowed); callers
    read the nested value (`DatabaseCapabilities.nested_projection`)."""
    return {name.split(".", 1)[0]: 1 for name in fields}


def epoch_seconds(when: datetime) -> float:
    """A time as epoch seconds, kept beside a date that reads select by range: a range of
    numbers is served by an index on every server, one of dates is not on the embedded one
    (`DatabaseCapabilities.indexed_date_ranges`)."""
    return when.timestamp()


async def add_epoch_seconds(collection: Any, date_field: str, seconds_field: str) -> int:
    """Give documents stored before `seconds_field` was kept beside `date_field` their value
    (writes keep it from then on); run once at start. Documents changed."""
    changed = 0
    async for doc in collection.find({seconds_field: {"$exists": False}}, {date_field: 1}):
        when = doc.get(date_field)
        if isinstance(when, datetime):
            await collection.update_one({"_id": doc["_id"]}, {"$set": {seconds_field: epoch_seconds(when)}})
            changed += 1
    return changed


def between(start: Any | None, end: Any | None) -> dict[str, Any] | None:
    """A half-open range condition [start, end), or None when neither bound is given."""
    if start is None and end is None:
        return None
    return {**({"$gte": start} if start is not None else {}), **({"$lt": end} if end is not None else {})}
