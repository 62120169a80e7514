"""Kafka adapters (kafka-python): the event producer, topic administration, the consumer
helper with manual commits, and the dead-letter path.

kafka-python is synchronous; async code calls these from a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import (
    InvalidProducerEpochError,
    InvalidRecordError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumberError,
    ProducerFencedError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
    UnknownProducerIdError,
)
from kafka.structs import OffsetAndMetadata
from pymongo.errors import ConnectionFailure, PyMongoError

from . import metrics, topics
from .clock import SystemClock, to_rfc3339
from .contracts import EventValidationError, decode, encode, registry
from .mongo import async_client
from .settings import Settings

log = structlog.get_logger(__name__)


class PublishError(RuntimeError):
    """The broker did not acknowledge every event (all of them may be retried)."""


def bootstrap_list(settings: Settings) -> list[str]:
    return [h.strip() for h in settings.kafka_bootstrap.split(",") if h.strip()]


def broker_reachable(settings: Settings, timeout: float = 1.0) -> bool:
    """A TCP connect to any bootstrap broker: cheap enough for every /readyz."""
    for hostport in bootstrap_list(settings):
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
                return True
        except OSError:
            continue
    return False


@dataclass(frozen=True)
class Outgoing:
    """One record to send: where, its key and bytes, its headers, and the event's type (for
    metrics) and id (for logs)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    event_type: str = "raw"
    event_id: str = ""


# The broker no longer knows the producer's id (it restarted empty, or expired the id): an
# idempotent producer cannot go on from there; kafka-python then fails InitProducerId for good.
PRODUCER_STATE_ERRORS = (
    UnknownProducerIdError,
    OutOfOrderSequenceNumberError,
    InvalidProducerEpochError,
    ProducerFencedError,
)


# The broker will never take this record as it is: retrying cannot help (the outbox parks it).
RECORD_REFUSED_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError)


def _noting_a_forgotten_id(producer: KafkaProducer) -> KafkaProducer:
    """Mark the producer when the broker answers that it does not know its id. kafka-python
    takes that, for a partition it has no acknowledged offset on, as the id having aged out
    and sends the batch again, which a broker that restarted empty refuses the same way until
    the delivery timeout; elsewhere it ends in a fatal state. Either way only a new producer
    (a new id) gets through, so `_broken` tells its owner to replace it."""
    state = getattr(producer, "_transaction_manager", None)
    if state is not None and hasattr(state, "reset_sequence_for_partition"):
        reset = state.reset_sequence_for_partition

        def reset_and_note(tp: TopicPartition) -> None:
            producer.crm_id_forgotten = True  # type: ignore[attr-defined]
            reset(tp)

        state.reset_sequence_for_partition = reset_and_note
    return producer


def _broken(producer: KafkaProducer) -> bool:
    """A producer that will never send again: the broker forgot its id, its idempotence state
    is fatal (kafka-python keeps it so until closed) or its sender thread died."""
    state = getattr(producer, "_transaction_manager", None)
    sender = getattr(producer, "_sender", None)
    return bool(
        getattr(producer, "crm_id_forgotten", False)
        or (state is not None and state.has_fatal_error())
        or (sender is not None and not sender.is_alive())
    )


def _acknowledged(producer: KafkaProducer, future: Any, deadline: float) -> Exception | None:
    """Wait for one send: None once acknowledged, else why not. Stops waiting as soon as the
    producer is broken: its pending sends would only expire at the delivery timeout."""
    while True:
        try:
            future.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
            return None
        except KafkaTimeoutError as exc:
            if future.is_done:
                # The wait timed out as the sender thread completed the record: kafka-python
                # marks a record done before it wakes the waiters (after every record of the
                # batch), so the record's own outcome decides. Taking the timeout for a failure
                # sent an acknowledged event again (issue 18: one 'reopened' twice, one id).
                return None if future.succeeded() else future.exception
            if time.monotonic() >= deadline or _broken(producer):
                return exc
        except Exception as exc:  # noqa: BLE001 - every failure means "not acknowledged"
            return exc


class EventProducer:
    """Publishes validated events, keyed by customer id so one customer's events stay in order.

    acks=all and idempotence: a retried send after a lost acknowledgement is not written twice.
    A producer the broker no longer accepts (it restarted empty and forgot the producer's id)
    is replaced here by a new one, and what it failed to send is sent again on it, so its users
    (outbox relays, the scorer's signals, dead-letter sends) recover without code of their own.
    """

    def __init__(self, settings: Settings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self.replacements = 0
        self._lock = threading.Lock()
        self._raw: list[tuple[Outgoing, KafkaProducer, Any]] = []  # send_raw's sends, looked at by flush
        self._producer: KafkaProducer | None = self._build()

    def _build(self) -> KafkaProducer:
        return _noting_a_forgotten_id(
            KafkaProducer(
                bootstrap_servers=bootstrap_list(self.settings),
                client_id=self.client_id,
                acks="all",
                enable_idempotence=True,
                retries=2**31 - 1,
                delivery_timeout_ms=30_000,
                request_timeout_ms=10_000,
                max_block_ms=10_000,
                linger_ms=5,
                batch_size=256 * 1024,
                max_request_size=1_048_576,  # Kafka's default; contracts.MAX_EVENT_BYTES fits
                compression_type=None,
                allow_auto_create_topics=False,
            )
        )

    def _current(self) -> KafkaProducer:
        """The producer to send with; a broken one is replaced first."""
        with self._lock:
            if self._producer is None or _broken(self._producer):
                self._replace_locked()
            return self._producer

    def _replace(self, broken: KafkaProducer) -> None:
        with self._lock:
            if self._producer is broken:  # another thread may have replaced it already
                self._replace_locked()

    def _replace_locked(self) -> None:
        old, self._producer = self._producer, None
        if old is not None:
            log.warning("replacing a producer the broker no longer accepts", client_id=self.client_id)
            with contextlib.suppress(Exception):
                old.close(timeout=0)
        self._producer = self._build()  # raises while the broker is away: the next send tries again
        self.replacements += 1

    def topic_of(self, event: dict[str, Any]) -> str:
        return topics.physical(topics.topic_for_type(event["type"]), self.settings)

    def publish(
        self, events: Sequence[dict[str, Any]], *, validate: bool = True, timeout: float = 30.0
    ) -> None:
        """Validate all, send all, wait for every acknowledgement. Raises EventValidationError
        (naming the field) before anything is sent, or PublishError after."""
        if validate:
            schemas = registry()
            for event in events:
                schemas.validate(event)
        items = [
            Outgoing(
                self.topic_of(e), e["subject"].encode(), encode(e), event_type=e["type"], event_id=e["id"]
            )
            for e in events
        ]
        self._require(items, timeout)

    def publish_encoded(self, records: Sequence[bytes], *, timeout: float = 60.0) -> None:
        """Publish events that were validated and encoded earlier; PublishError unless the
        broker acknowledged every one."""
        self._require([self.encoded(raw) for raw in records], timeout)

    def encoded(self, raw: bytes) -> Outgoing:
        """An event validated and encoded earlier (an outbox row's record), ready to send."""
        head = orjson.loads(raw)
        return Outgoing(
            self.topic_of(head), head["subject"].encode(), raw, event_type=head["type"], event_id=head["id"]
        )

    def deliver(self, items: Sequence[Outgoing], *, timeout: float = 60.0) -> list[Exception | None]:
        """Send every item and wait: for each, None once the broker acknowledged it, else why
        not. What a broken producer lost goes once more on its replacement, within `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            producer = self._current()
        except Exception as exc:  # noqa: BLE001 - no producer (the broker is away): nothing sent
            return [exc] * len(items)
        outcomes = self._attempt(producer, items, deadline)
        failed = [k for k, error in enumerate(outcomes) if error is not None]
        if failed and (
            _broken(producer) or any(isinstance(outcomes[k], PRODUCER_STATE_ERRORS) for k in failed)
        ):
            try:
                self._replace(producer)
                producer = self._current()
            except Exception as exc:  # noqa: BLE001 - the broker went away meanwhile
                return [exc if error is not None else None for error in outcomes]
            for k, error in zip(
                failed, self._attempt(producer, [items[k] for k in failed], deadline), strict=True
            ):
                outcomes[k] = error
        return outcomes

    def _attempt(
        self, producer: KafkaProducer, items: Sequence[Outgoing], deadline: float
    ) -> list[Exception | None]:
        sent: list[Any] = []
        for item in items:
            try:
                sent.append(
                    producer.send(item.topic, key=item.key, value=item.value, headers=list(item.headers))
                )
            except Exception as exc:  # noqa: BLE001 - refused before sending (too large, no metadata)
                sent.append(exc)
        outcomes: list[Exception | None] = []
        for item, future in zip(items, sent, strict=True):
            error = future if isinstance(future, Exception) else _acknowledged(producer, future, deadline)
            outcomes.append(error)
            if error is None:
                metrics.EVENTS_PUBLISHED.labels(item.topic, item.event_type).inc()
        return outcomes

    def _require(self, items: Sequence[Outgoing], timeout: float) -> None:
        failed = next((error for error in self.deliver(items, timeout=timeout) if error is not None), None)
        if failed is not None:
            raise PublishError(f"broker did not acknowledge: {failed!r}") from failed

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        """Send without waiting; `flush` sends again what a broken producer lost. Callers that
        must know it arrived use `deliver`."""
        item = Outgoing(topic, key, value, tuple(headers or ()))
        producer = self._current()
        future = producer.send(topic, key=key, value=value, headers=list(item.headers))
        with self._lock:
            self._raw.append((item, producer, future))
        return future

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for the raw sends so far; what a broken producer lost goes again on a new one
        (logged, not raised, when that fails too: `confirm` raises)."""
        failed = self._settle_raw(timeout)
        if failed:
            log.warning("raw sends not acknowledged", count=len(failed), error=repr(failed[0]))

    def confirm(self, timeout: float = 30.0) -> None:
        """`flush`, raising PublishError unless the broker acknowledged every raw send so far
        (a consumer commits past a dead letter only once it is stored)."""
        failed = self._settle_raw(timeout)
        if failed:
            raise PublishError(f"broker did not acknowledge: {failed[0]!r}") from failed[0]

    def _settle_raw(self, timeout: float) -> list[Exception]:
        deadline = time.monotonic() + timeout
        with self._lock:
            raw, self._raw = self._raw, []
        lost = [item for item, producer, future in raw if _acknowledged(producer, future, deadline)]
        if not lost:
            return []
        remaining = max(1.0, deadline - time.monotonic())
        return [error for error in self.deliver(lost, timeout=remaining) if error is not None]

    def close(self, timeout: float = 5.0) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):  # closing a producer whose broker is gone
                producer.close(timeout=timeout)


def ensure_topics(
    settings: Settings, names: Iterable[str] = topics.ALL, timeout: float = 30.0
) -> dict[str, str]:
    """Create every topic with the configured partition count; report what already existed.
    Returns {physical topic: "created" | "exists" | "exists with N partitions (want M)"}."""
    admin = _admin(settings, timeout)
    try:
        wanted = [topics.physical(n, settings) for n in names]
        existing = set(admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        result = {}
        if missing:
            try:
                admin.create_topics(
                    [NewTopic(n, settings.topic_partitions, settings.topic_replication) for n in missing]
                )
            except TopicAlreadyExistsError:  # raced with another starter
                pass
            result.update({n: "created" for n in missing})
        present = [n for n in wanted if n in existing]
        if present:
            for described in admin.describe_topics(present):
                count = len(described["partitions"])
                result[described["name"]] = (
                    "exists"
                    if count == settings.topic_partitions
                    else f"exists with {count} partitions (want {settings.topic_partitions})"
                )
        return result
    finally:
        admin.close()


def _admin(settings: Settings, timeout: float) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return KafkaAdminClient(
                bootstrap_servers=bootstrap_list(settings), client_id="crm-admin", request_timeout_ms=10_000
            )
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def read_topic(settings: Settings, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every record of a topic (its name on the broker), from the beginning to the end, read
    without a consumer group: nothing is committed. The end is each partition's high-water mark
    as fetch answers report it (Tansu's ListOffsets answer for the latest offset is wrong)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_list(settings),
        client_id="crm-reader",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"no topic {topic} on {settings.kafka_bootstrap} (`crm topics` creates it)")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            for batch in consumer.poll(timeout_ms=200, max_records=5000).values():
                records.extend(batch)
            marks = {tp: consumer.highwater(tp) for tp in assigned}
            if all(m is not None and consumer.position(tp) >= m for tp, m in marks.items()):
                return sorted(records, key=lambda r: (r.partition, r.offset))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end within {timeout:.0f}s")
    finally:
        consumer.close(autocommit=False)


class TopicIds:
    """The id the broker gives each topic now (KIP-516), to tell which copy of its log it holds.

    Embedded stack: Tansu keeps its logs in memory only (the s3:// storage is its one durable
    choice), so a broker restart loses every event it had acknowledged, and the launcher creates
    the topics again with new ids. A publisher that keeps what it published (outbox.Retention)
    compares the ids with those it published under: a changed id means those events are gone,
    so it sends them again (consumers are idempotent on the event id). On a real cluster an id
    changes only when a topic is deleted and created again, when sending them again is right
    too. One admin client, kept between looks (a metadata request, about a millisecond)."""

    def __init__(self, settings: Settings, names: Iterable[str] = topics.ALL) -> None:
        self.settings = settings
        self.names = [topics.physical(n, settings) for n in names]
        self._admin: KafkaAdminClient | None = None

    def current(self) -> dict[str, str]:
        """{topic: id} for the topics the broker has (none yet when it is back empty, before
        the topics are created again; a topic a newer version adds, before `crm topics` ran);
        raises while the broker is away."""
        try:
            if self._admin is None:
                self._admin = _admin(self.settings, timeout=2.0)
            described = self._admin.describe_topics(self.names)
        except Exception:
            self.close()
            raise
        return {
            d["name"]: str(d["topic_id"]) for d in described if not d.get("error_code") and d.get("topic_id")
        }

    def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()


def topics_recreated(published_under: dict[str, str], now: dict[str, str]) -> list[str]:
    """The topics whose log is not the one events were published to (their id changed; a
    topic missing now says nothing yet)."""
    return sorted(name for name, topic_id in published_under.items() if now.get(name, topic_id) != topic_id)


# --- consuming ----------------------------------------------------------------------------


# How often (seconds) an idle consumer compares its positions with the log ends.
EMPTIED_LOG_CHECK_SECONDS = 2.0


def log_restarted_empty(position: int | None, log_end: int | None) -> bool:
    """Embedded stack: the broker (memory storage) restarted empty, so this partition's log
    starts again at 0 and ends below where the consumer had read to. Tansu answers a fetch past
    the end with no records rather than OFFSET_OUT_OF_RANGE, so the client's reset policy never
    runs and a consumer that stayed up would wait there for good; its owner seeks it to the
    beginning of the new log instead (consumers are idempotent on the event id). On a real
    cluster a position is never past the log end (the high-water mark of the last fetch), so
    this never fires there."""
    return position is not None and log_end is not None and position > log_end


@dataclass(frozen=True)
class Delivered:
    """A valid event and where it came from."""

    event: dict[str, Any]
    topic: str
    partition: int
    offset: int


DLQ_HEADER_PREFIX = "crm.dlq."


def deadletter_headers(
    reason: str, topic: str, partition: int, offset: int, consumer: str
) -> list[tuple[str, bytes]]:
    """Kafka Connect style: the original bytes stay the record value, the context rides in
    headers, so a fixed record can be replayed byte for byte."""
    return [
        (DLQ_HEADER_PREFIX + "reason", reason.encode()[:2000]),
        (DLQ_HEADER_PREFIX + "topic", topic.encode()),
        (DLQ_HEADER_PREFIX + "partition", str(partition).encode()),
        (DLQ_HEADER_PREFIX + "offset", str(offset).encode()),
        (DLQ_HEADER_PREFIX + "consumer", consumer.encode()),
        (DLQ_HEADER_PREFIX + "time", to_rfc3339(SystemClock().now()).encode()),
    ]


def reason_class(error: EventValidationError) -> str:
    """A bounded label for metrics: not_json, envelope, data or unknown_type (and refused, for
    valid events a rule refused, and failed, for those a handler failed on every attempt:
    EventConsumer)."""
    if error.reason.startswith("not JSON") or error.reason == "empty record":
        return "not_json"
    if error.reason.startswith("no schema") or (error.field == "dataschema"):
        return "unknown_type"
    return "data" if (error.field or "").startswith("data") else "envelope"


def split_valid(
    records: Iterable[Any], producer: EventProducer, deadletter_topic: str, consumer: str
) -> list[Delivered]:
    """Decode and validate records; send every invalid one to the dead-letter topic (the
    caller flushes before committing). Shared by every consumer, kafka-python or faust."""
    valid: list[Delivered] = []
    for record in records:
        try:
            event = decode(record.value)
        except EventValidationError as exc:
            producer.send_raw(
                deadletter_topic,
                record.key,
                record.value,
                deadletter_headers(str(exc), record.topic, record.partition, record.offset, consumer),
            )
            metrics.EVENTS_DEADLETTERED.labels(record.topic, reason_class(exc)).inc()
            log.warning(
                "dead-lettered",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=str(exc),
            )
            continue
        metrics.EVENTS_CONSUMED.labels(record.topic, event["type"]).inc()
        valid.append(Delivered(event, record.topic, record.partition, record.offset))
    return valid


@dataclass(frozen=True)
class Refused:
    """A valid event a rule of the consuming service refused (handlers.Handlers.dispatch)."""

    delivered: Delivered
    reason: str


# Handles a batch of valid events; returns the ones a rule refused (None: none).
BatchHandler = Callable[[list[Delivered]], Awaitable[list[Refused] | None]]
RETRY_DELAY = 1.0  # seconds before a failed batch is delivered again


class EventConsumer:
    """A consumer group member that commits offsets only after the batch's effects are stored.
    The same rules for every consumer:

    - a record that breaks its contract (not JSON, bad envelope or data, unknown type) goes to
      the dead-letter topic with the reason, and the batch goes on (split_valid);
    - an event a rule refuses goes there too, with the rule's reason: retrying cannot change a
      rule's answer, and dropping it would lose it;
    - while the database is away (a driver connection error or timeout, or it does not answer
      a ping) the batch is delivered again after RETRY_DELAY, as often as it takes;
    - any other failure is the handler's: the batch is tried again one event at a time, each
      up to `consumer_max_attempts` times, and an event that still fails goes to the
      dead-letter topic with the handler's error, so one poison event cannot stop the stream;
    - offsets are committed only once every dead letter of the batch is acknowledged.

    Effects must be idempotent on the event id: after a crash between storing and committing,
    the batch is delivered again.
    """

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        topic_names: Sequence[str],
        producer: EventProducer,
        max_records: int = 500,
    ) -> None:
        self.settings = settings
        self.group_id = settings.topic_prefix + group_id
        self.max_records = max_records
        self.producer = producer
        self.deadletter_topic = topics.physical(topics.DEADLETTER, settings)
        self._database: Any = None  # a client for pings, made when first needed
        self._consumer = KafkaConsumer(
            *[topics.physical(t, settings) for t in topic_names],
            bootstrap_servers=bootstrap_list(settings),
            group_id=self.group_id,
            client_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # 6 s sessions: the embedded broker's first join takes about half the session timeout
            # (docs/architecture.md, "The embedded stack and production").
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=300_000,
            allow_auto_create_topics=False,
        )

    async def run(self, handle: BatchHandler, stop: asyncio.Event, poll_timeout_ms: int = 500) -> None:
        next_check = time.monotonic() + EMPTIED_LOG_CHECK_SECONDS
        while not stop.is_set():
            polled = await asyncio.to_thread(self._consumer.poll, poll_timeout_ms, self.max_records)
            records = [r for batch in polled.values() for r in batch]
            if not records:
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + EMPTIED_LOG_CHECK_SECONDS
                    await asyncio.to_thread(self._rewind_emptied_logs)
                continue
            try:
                await self._process(handle, records, stop)
                if self.settings.failpoint == "consumer_before_commit":
                    os._exit(137)  # a crash after the effects are stored and before the commit
            except Exception:
                log.exception(
                    "batch not finished; it will be delivered again", group=self.group_id, size=len(records)
                )
                await asyncio.to_thread(self._rewind, polled)
                await asyncio.sleep(RETRY_DELAY)
                continue
            await asyncio.to_thread(self._commit, polled)

    async def _process(self, handle: BatchHandler, records: list[Any], stop: asyncio.Event) -> None:
        """Handle a batch; raises when it must be delivered again (the database away, or a dead
        letter the broker did not acknowledge)."""
        valid = split_valid(records, self.producer, self.deadletter_topic, self.group_id)
        try:
            refused = await handle(valid) or []
        except Exception as exc:
            if await self._database_away(exc):
                raise
            log.warning(
                "batch failed; its events are tried one at a time", group=self.group_id, error=repr(exc)
            )
            refused = await self._one_at_a_time(handle, valid, records, stop)
        self._deadletter_refused(refused, records)
        await asyncio.to_thread(self.producer.confirm)

    async def _one_at_a_time(
        self, handle: BatchHandler, valid: list[Delivered], records: list[Any], stop: asyncio.Event
    ) -> list[Refused]:
        """Find the poison event: each event up to `consumer_max_attempts` times, then to the
        dead-letter topic with the handler's error. While the database is away the event waits
        for it, uncounted (on shutdown the batch is left for the next owner)."""
        refused: list[Refused] = []
        for delivered in valid:
            attempt = 1
            while True:
                try:
                    refused.extend(await handle([delivered]) or [])
                    break
                except Exception as exc:
                    if await self._database_away(exc):
                        if stop.is_set():
                            raise
                        await asyncio.sleep(RETRY_DELAY)  # not this event's fault
                        continue
                    if attempt >= self.settings.consumer_max_attempts:
                        self._deadletter_failed(delivered, exc, attempt, records)
                        break
                    attempt += 1
                    await asyncio.sleep(RETRY_DELAY)
        return refused

    async def _database_away(self, error: Exception) -> bool:
        """The database, not the handler, is at fault: the driver says so, or a ping fails."""
        if isinstance(error, PyMongoError) and (error.timeout or isinstance(error, ConnectionFailure)):
            return True
        if self._database is None:
            self._database = async_client(self.settings.mongo_url)
        try:
            await asyncio.wait_for(self._database.admin.command("ping"), 2.0)
            return False
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return True

    def _deadletter_failed(
        self, delivered: Delivered, error: Exception, attempts: int, records: list[Any]
    ) -> None:
        log.error(
            "event failed every attempt; dead-lettered",
            group=self.group_id,
            event_id=delivered.event["id"],
            type=delivered.event["type"],
            attempts=attempts,
            error=repr(error),
        )
        self._deadletter(delivered, f"failed {attempts} times: {error!r}", "failed", records)

    def _deadletter_refused(self, refused: list[Refused], records: list[Any]) -> None:
        for refusal in refused:
            self._deadletter(refusal.delivered, f"refused: {refusal.reason}", "refused", records)

    def _deadletter(self, delivered: Delivered, reason: str, reason_label: str, records: list[Any]) -> None:
        record = next(  # the bytes as they came
            r
            for r in records
            if (r.topic, r.partition, r.offset) == (delivered.topic, delivered.partition, delivered.offset)
        )
        self.producer.send_raw(
            self.deadletter_topic,
            record.key,
            record.value,
            deadletter_headers(reason, delivered.topic, delivered.partition, delivered.offset, self.group_id),
        )
        metrics.EVENTS_DEADLETTERED.labels(delivered.topic, reason_label).inc()

    def _commit(self, polled: dict[TopicPartition, list[Any]]) -> None:
        """Commit past a stored batch. A commit the group refuses (a rebalance under way, the
        coordinator away after a broker restart) is not an error of the batch: its effects are
        stored and idempotent, so whoever owns the partition next reads it again and changes
        nothing, and the next commit of this member covers it."""
        offsets = {
            tp: OffsetAndMetadata(batch[-1].offset + 1, "", -1) for tp, batch in polled.items() if batch
        }
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:
            log.warning(
                "offset commit refused; the batch may be delivered again",
                group=self.group_id,
                error=repr(exc),
            )
            metrics.CONSUMER_COMMIT_FAILURES.labels(self.group_id).inc()
            return
        metrics.CONSUMER_COMMITS.labels(self.group_id).inc()
        metrics.CONSUMER_LAST_COMMIT.labels(self.group_id).set_to_current_time()

    def _rewind_emptied_logs(self) -> None:
        """Read an emptied log again from its beginning (log_restarted_empty)."""
        for tp in self._consumer.assignment():
            try:
                position = self._consumer.position(tp, timeout_ms=1000)
            except Exception:  # noqa: BLE001 - no position yet (rebalancing, broker away)
                continue
            if log_restarted_empty(position, self._consumer.highwater(tp)):
                log.warning(
                    "the broker's log restarted empty; reading it from the beginning",
                    group=self.group_id,
                    topic=tp.topic,
                    partition=tp.partition,
                    position=position,
                )
                self._consumer.seek_to_beginning(tp)

    def _rewind(self, polled: dict[TopicPartition, list[Any]]) -> None:
        for tp, batch in polled.items():
            if batch:
                self._consumer.seek(tp, batch[0].offset)

    def close(self) -> None:
        try:
            self._consumer.close(autocommit=False)
        except Exception:  # noqa: BLE001
            pass
        if self._database is not None:
            self._database.close()


async def consume(
    settings: Settings, group_id: str, topic_names: Sequence[str], handle: BatchHandler, stop: asyncio.Event
) -> None:
    """Run one consumer group member until `stop`: every service's consumers start this way."""
    producer = await asyncio.to_thread(EventProducer, settings, f"{group_id}-deadletter")
    consumer = await asyncio.to_thread(EventConsumer, settings, group_id, topic_names, producer)
    try:
        await consumer.run(handle, stop)
    finally:
        await asyncio.to_thread(consumer.close)
        await asyncio.to_thread(producer.close)
