"""Nothing lost, nothing doubled: the shared delivery layer against the real embedded broker
and database when they restart, stall or refuse."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid

import orjson
import pytest
from bson import Binary, ObjectId
from prometheus_client import REGISTRY
from pymongo.errors import AutoReconnect

from services.common import outbox
from services.common.contracts import MAX_EVENT_BYTES, build_event, encode
from services.common.errors import Kind, RuleBroken
from services.common.handlers import Handlers
from services.common.kafka import EventConsumer, EventProducer, ensure_topics
from services.common.mongo import Mongo, ensure_indexes
from services.common.settings import Settings
from services.scoring import store as scoring_store
from services.scoring.signal_outbox import SignalOutbox
from services.stack.harness import TopicReader, start_service, start_stack, unique_id
from tests.conftest import NOW
from tests.integration.test_platform import paid_event


def test_a_producer_goes_on_publishing_after_the_broker_restarts_empty(tmp_path):
    stack = start_stack(tmp_path)
    settings = stack.settings(topic_prefix=f"r{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings)
    producer = EventProducer(settings, "restart-test")
    try:
        customer = unique_id()
        producer.publish([paid_event(customer)])
        stack.broker.stop()
        stack.start_broker()
        ensure_topics(settings)
        # The broker no longer knows the producer: it is replaced, not left failing for good,
        # both for a dead letter sent without waiting and for events published.
        producer.send_raw(settings.topic_prefix + "crm.deadletter.v1", b"k", b"raw")
        producer.flush()
        after = [paid_event(customer) for _ in range(3)]
        for event in after:
            producer.publish([event])
        assert producer.replacements == 1
        reader = TopicReader(stack, settings.topic_prefix + "crm.orders.v1")
        seen = reader.collect(lambda e: e["subject"] == customer, 3, timeout=60)
        reader.close()
        assert sorted(e["id"] for e in seen) == sorted(e["id"] for e in after)
        deadletters = TopicReader(stack, settings.topic_prefix + "crm.deadletter.v1")
        assert [r.value for r in deadletters.records()] == [b"raw"]
        deadletters.close()
    finally:
        producer.close()
        stack.stop()


def order_body(customer: str) -> dict:
    return {
        "customer_id": customer,
        "currency": "EUR",
        "items": [{"sku": "A", "category": "c", "brand": "b", "qty": 1, "unit_price_cents": 700}],
    }


def test_a_write_the_stalled_database_cannot_take_answers_503_with_retry_after_in_time(tmp_path):
    stack = start_stack(tmp_path)
    orders = start_service(stack, "orders", CRM_DB_TIMEOUT_SECONDS="3")
    group = os.getpgid(stack.mongo.pid)
    try:
        assert orders.post("/orders", json=order_body(unique_id())).status_code == 201
        os.killpg(group, signal.SIGSTOP)  # the database holds its connections open and answers nothing
        try:
            started = time.monotonic()
            answer = orders.post("/orders", json=order_body(unique_id()), timeout=60)
            took = time.monotonic() - started
        finally:
            os.killpg(group, signal.SIGCONT)
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert int(answer.headers["Retry-After"]) >= 1
        assert took < 3 + 2, f"answered after {took:.1f}s"
        deadline = time.monotonic() + 30
        while (status := orders.post("/orders", json=order_body(unique_id())).status_code) != 201:
            assert status == 503 and time.monotonic() < deadline, status
            time.sleep(0.5)
    finally:
        orders.stop()
        stack.stop()


async def test_two_relays_with_a_short_lease_publish_every_row_once_and_take_over_in_time(stack):
    settings = stack.settings(
        topic_prefix=f"l{uuid.uuid4().hex[:6]}.",
        db_prefix=f"t{uuid.uuid4().hex[:8]}_",
        outbox_lease_seconds=2.0,
        outbox_batch=1,  # many small pages: the drain outlasts the lease several times
        outbox_poll_seconds=0.1,
    )
    ensure_topics(settings)
    customer = unique_id()
    events = [paid_event(customer) for _ in range(500)]
    handles = [await Mongo.open(settings, "orders") for _ in range(2)]  # two processes' handles
    await ensure_indexes(handles[0].db, outbox.INDEXES)
    relays = [outbox.Outbox(mongo, settings, "orders") for mongo in handles]
    rows = handles[0].db[outbox.OUTBOX]

    async def store(session) -> None:
        for event in events:
            await relays[0].add(session, [event])  # a row each

    await handles[0].transaction(store)
    stops = [asyncio.Event(), asyncio.Event()]
    running = [asyncio.create_task(relay.run(stop)) for relay, stop in zip(relays, stops, strict=True)]

    async def until(condition, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not await condition():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    try:
        assert await until(lambda: _fewer_rows_than(rows, 300), 60)
        # The relay holding the lease stops between pages (a process shutting down); the
        # other takes over once the lease expires, and no row goes out twice meanwhile.
        lease = await handles[0].db[outbox.LEASES].find_one({"_id": "relay"})
        holder = next(k for k, relay in enumerate(relays) if relay._holder == lease["holder"])
        stops[holder].set()
        await running[holder]
        assert await until(lambda: _fewer_rows_than(rows, 1), 60), "no relay took over"
    finally:
        await _stop(stops, running, handles)
    seen = await _published(stack, settings, customer, 500)
    assert len(seen) == 500
    assert sorted(e["id"] for e in seen) == sorted(e["id"] for e in events)  # none twice


async def _stop(stops: list[asyncio.Event], running: list[asyncio.Task], handles: list[Mongo]) -> None:
    for stop in stops:
        stop.set()
    await asyncio.gather(*running)
    for mongo in handles:
        mongo.close()


async def _published(stack, settings, customer: str, count: int) -> list[dict]:
    """The customer's events on the orders topic, once `count` came and two quiet seconds
    passed (so one published twice would be seen)."""
    reader = TopicReader(stack, settings.topic_prefix + "crm.orders.v1")
    try:
        return await asyncio.to_thread(reader.collect, lambda e: e["subject"] == customer, count, 60, 2)
    finally:
        reader.close()


async def _fewer_rows_than(rows, count: int) -> bool:
    return await rows.count_documents({}) < count


async def test_a_relay_takes_over_a_lease_its_stopped_holder_had_renewed(stack):
    settings = stack.settings(
        topic_prefix=f"l{uuid.uuid4().hex[:6]}.",
        db_prefix=f"t{uuid.uuid4().hex[:8]}_",
        outbox_lease_seconds=1.0,
        outbox_poll_seconds=0.1,
    )
    ensure_topics(settings)
    handles = [await Mongo.open(settings, "orders") for _ in range(2)]
    await ensure_indexes(handles[0].db, outbox.INDEXES)
    first, second = (outbox.Outbox(mongo, settings, "orders") for mongo in handles)
    stops = [asyncio.Event(), asyncio.Event()]
    running = [asyncio.create_task(first.run(stops[0]))]
    try:
        await asyncio.sleep(2.5)  # the first relay takes the lease and renews it several times
        running.append(asyncio.create_task(second.run(stops[1])))
        stops[0].set()
        await running[0]
        customer = unique_id()
        event = paid_event(customer)

        async def store(session) -> None:
            await first.add(session, [event])

        await handles[0].transaction(store)
        rows = handles[0].db[outbox.OUTBOX]
        deadline = time.monotonic() + 15
        while await rows.count_documents({}) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await rows.count_documents({}) == 0, "the lease never expired"
    finally:
        await _stop(stops, running, handles)
    seen = await _published(stack, settings, customer, 1)
    assert [e["id"] for e in seen] == [event["id"]]


async def test_a_record_the_broker_refuses_is_parked_and_the_rows_after_it_are_published(stack):
    settings = stack.settings(
        topic_prefix=f"p{uuid.uuid4().hex[:6]}.",
        db_prefix=f"t{uuid.uuid4().hex[:8]}_",
        outbox_poll_seconds=0.1,
    )
    ensure_topics(settings)
    mongo = await Mongo.open(settings, "orders")
    await ensure_indexes(mongo.db, outbox.INDEXES)
    relay = outbox.Outbox(mongo, settings, "orders")
    customer = unique_id()
    before, huge, after = paid_event(customer), paid_event(customer), [paid_event(customer) for _ in range(3)]
    huge["padding"] = "x" * 2_000_000  # a row an earlier version stored: larger than any request
    rows = [[before], [huge, after[0]], after[1:]]
    # Stored as an earlier version would have, without today's size bound.
    await mongo.db[outbox.OUTBOX].insert_many(
        [{"_id": ObjectId(), "records": [Binary(encode(e)) for e in row], "created_at": NOW} for row in rows]
    )
    parked_before = _sample("crm_outbox_parked_total")
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        seen = await _published(stack, settings, customer, 4)
        assert sorted(e["id"] for e in seen) == sorted(e["id"] for e in [before, *after])
        deadline = time.monotonic() + 10
        while await mongo.db[outbox.OUTBOX].count_documents({}) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await mongo.db[outbox.OUTBOX].count_documents({}) == 0
        parked = await mongo.db[outbox.PARKED].find({}).to_list(None)
        assert [(p["event_id"], p["type"], bytes(p["record"]) == encode(huge)) for p in parked] == [
            (huge["id"], "crm.order.paid", True)
        ]
        assert "MessageSizeTooLarge" in parked[0]["reason"]
        assert _sample("crm_outbox_parked_total") == parked_before + 1
    finally:
        stop.set()
        await running
        mongo.close()


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_a_write_whose_event_would_be_too_large_is_refused_with_413(stack):
    settings = stack.settings(db_prefix=f"t{uuid.uuid4().hex[:8]}_")
    mongo = await Mongo.open(settings, "orders")
    await ensure_indexes(mongo.db, outbox.INDEXES)
    relay = outbox.Outbox(mongo, settings, "orders")
    customer = unique_id()
    attributes = {"note": "x" * (MAX_EVENT_BYTES // 2), "more": "y" * (MAX_EVENT_BYTES // 2)}
    event = build_event(
        "crm.interaction.recorded",
        {
            "interaction_id": unique_id("i"),
            "customer_id": customer,
            "kind": "message",
            "occurred_at": "2026-11-22T07:00:00Z",
            "attributes": attributes,  # valid, and 1 MB of it
        },
        source="/services/profiles",
    )

    async def store(session) -> None:
        await relay.add(session, [paid_event(unique_id()), event])

    try:
        with pytest.raises(RuleBroken) as refused:
            await mongo.transaction(store)
        assert refused.value.kind == Kind.TOO_LARGE and "at most 1000000 bytes" in refused.value.detail
        assert await mongo.db[outbox.OUTBOX].count_documents({}) == 0  # nothing of the write stored
    finally:
        mongo.close()


async def test_a_poison_event_is_dead_lettered_after_its_attempts_and_the_stream_goes_on(stack):
    settings = stack.settings(topic_prefix=f"c{uuid.uuid4().hex[:6]}.", consumer_max_attempts=3)
    ensure_topics(settings)
    customer = unique_id()
    before, poison, flaky, after = (paid_event(customer) for _ in range(4))
    producer = EventProducer(settings, "test")
    producer.publish([before, poison, flaky, after])
    handlers: Handlers[dict] = Handlers()
    seen: dict[str, int] = {}
    stop = asyncio.Event()

    @handlers.on("crm.order.paid")
    async def paid(calls: dict, event: dict) -> None:
        calls[event["id"]] = calls.get(event["id"], 0) + 1
        if event["id"] == poison["id"]:
            raise KeyError("amount_cents")  # a handler bug: every attempt fails the same way
        if event["id"] == flaky["id"] and calls[event["id"]] <= 5:
            raise AutoReconnect("connection closed")  # the database away: waited for, not counted
        if event["id"] == after["id"]:
            stop.set()

    consumer = EventConsumer(settings, "poison-test", handlers.topics, producer)
    try:
        await asyncio.wait_for(consumer.run(handlers.one_by_one(seen), stop), 60)
    finally:
        consumer.close()
    assert seen[poison["id"]] == 1 + 3  # once in the batch, then its three attempts
    assert seen[flaky["id"]] == 6 and seen[after["id"]] >= 1
    dead = TopicReader(stack, settings.topic_prefix + "crm.deadletter.v1").records()
    assert [orjson.loads(r.value)["id"] for r in dead] == [poison["id"]]
    reason = dict(dead[0].headers)["crm.dlq.reason"].decode()
    assert reason == "failed 3 times: KeyError('amount_cents')"
    # Committed past all of it: the group starts after the last event.
    again = EventConsumer(settings, "poison-test", handlers.topics, producer)
    try:
        left = await asyncio.to_thread(again._consumer.poll, 6000)
        assert not [r for batch in left.values() for r in batch]
    finally:
        again.close()
        producer.close()


async def test_a_consumer_that_stays_up_through_a_broker_restart_takes_the_events_after_it(tmp_path):
    """The embedded broker comes back empty: the consumer's position is past the new log's
    end, and the events published after the restart must still reach it."""
    stack = await asyncio.to_thread(start_stack, tmp_path)
    settings = stack.settings(topic_prefix=f"e{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings)
    customer = unique_id()  # one key: one partition
    before = [paid_event(customer) for _ in range(10)]
    after = [paid_event(customer) for _ in range(2)]  # the new log ends below the old position
    handlers: Handlers[dict] = Handlers()
    seen: dict[str, int] = {}
    stop = asyncio.Event()

    @handlers.on("crm.order.paid")
    async def paid(calls: dict, event: dict) -> None:
        calls[event["id"]] = calls.get(event["id"], 0) + 1
        if all(e["id"] in calls for e in after):
            stop.set()

    producer = EventProducer(settings, "test")
    consumer = EventConsumer(settings, "restart-test", handlers.topics, producer)
    running = asyncio.create_task(consumer.run(handlers.one_by_one(seen), stop))
    try:
        producer.publish(before)
        deadline = time.monotonic() + 60  # the group's first join included
        while not all(e["id"] in seen for e in before):
            assert time.monotonic() < deadline and not running.done()
            await asyncio.sleep(0.2)
        await asyncio.to_thread(stack.broker.stop)
        await asyncio.to_thread(stack.start_broker)
        await asyncio.to_thread(ensure_topics, settings)
        await asyncio.to_thread(producer.publish, after)
        await asyncio.wait_for(running, 60)
        assert all(seen[e["id"]] == 1 for e in after)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 10)
        consumer.close()
        producer.close()
        stack.stop()


def segment_changed(customer: str, to_segment: str) -> dict:
    return build_event(
        "crm.profile.segment_changed",
        {
            "customer_id": customer,
            "from_segment": "New",
            "to_segment": to_segment,
            "rfm_code": "555",
            "changed_at": "2026-11-22T07:00:00Z",
        },
        source="/services/scoring",
    )


async def _until(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def _relay_of(stack, service: str) -> tuple[Settings, Mongo, outbox.Outbox]:
    """A service's relay on topics and a database of its own, polling often."""
    settings = stack.settings(
        topic_prefix=f"k{uuid.uuid4().hex[:6]}.",
        db_prefix=f"t{uuid.uuid4().hex[:8]}_",
        outbox_poll_seconds=0.2,
    )
    await asyncio.to_thread(ensure_topics, settings)
    mongo = await Mongo.open(settings, service)
    await ensure_indexes(mongo.db, outbox.INDEXES)
    return settings, mongo, outbox.Outbox(mongo, settings, service)


async def test_events_the_broker_lost_in_a_crash_are_published_again_in_order(tmp_path):
    """The embedded broker (memory storage) is killed after the relay published and before
    anything read the events: it comes back empty. The relay, with nothing new to publish,
    notices and sends every retained event again in its order, then what is written after."""
    stack = await asyncio.to_thread(start_stack, tmp_path)
    settings, mongo, relay = await _relay_of(stack, "orders")
    rows = mongo.db[outbox.OUTBOX]
    customer = unique_id()
    before = [paid_event(customer) for _ in range(30)]
    after = [paid_event(customer) for _ in range(3)]

    async def write(events: list[dict]) -> None:
        for event in events:  # a write each: a row each
            await mongo.transaction(lambda session, event=event: relay.add(session, [event]))
        relay.wake()

    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        await write(before)
        await _until(lambda: _fewer_rows_than(rows, 1), 30)
        kept = [
            raw
            async for doc in mongo.db[outbox.PUBLISHED].find({})
            for raw in bytes(doc["lines"]).split(b"\n")
        ]
        assert len(kept) == len(before)
        await asyncio.to_thread(stack.broker.kill)
        await asyncio.to_thread(stack.start_broker)
        await asyncio.to_thread(ensure_topics, settings)
        seen = await _published(stack, settings, customer, len(before))
        assert [e["id"] for e in seen] == [e["id"] for e in before]
        await write(after)
        seen = await _published(stack, settings, customer, len(before) + len(after))
        assert [e["id"] for e in seen] == [e["id"] for e in before + after]
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
        mongo.close()
        await asyncio.to_thread(stack.stop)


async def test_signals_the_broker_lost_in_a_crash_are_published_again_by_the_sweep(tmp_path):
    """The scorer's signals: published, then lost with the broker's memory; the backlog sweep
    (the review timer) sends them again although no signal waits."""
    stack = await asyncio.to_thread(start_stack, tmp_path)
    settings = stack.settings(topic_prefix=f"s{uuid.uuid4().hex[:6]}.", db_prefix=f"t{uuid.uuid4().hex[:8]}_")
    await asyncio.to_thread(ensure_topics, settings)
    mongo = await Mongo.open(settings, "profiles")
    await ensure_indexes(mongo.db, scoring_store.INDEXES)
    store = scoring_store.ProfileStore(mongo.db)
    producer = EventProducer(settings, "scoring-test")

    async def current() -> EventProducer:
        return producer

    signals = SignalOutbox(store, current, outbox.Retention(mongo.db, scoring_store.RETAINED, settings))
    customer = unique_id()
    events = [segment_changed(customer, segment) for segment in ("Promising", "Loyal", "Champions")]
    profile = {
        "partition": 0,
        "pending_seq": 1,
        "pending": [{"seq": 1, "event": encode(e).decode()} for e in events],
    }
    reader_topic = settings.topic_prefix + "crm.signals.v1"
    try:
        assert await signals.publish([profile], 1)
        await asyncio.to_thread(stack.broker.kill)
        await asyncio.to_thread(stack.start_broker)
        await asyncio.to_thread(ensure_topics, settings)
        seen: list[dict] = []
        deadline = time.monotonic() + 30
        while len(seen) < len(events):  # the review timer's sweeps
            assert time.monotonic() < deadline, seen
            await signals.sweep([0])
            reader = TopicReader(stack, reader_topic)
            try:
                seen = await asyncio.to_thread(reader.collect, lambda e: e["subject"] == customer, 3, 2, 1)
            finally:
                reader.close()
        assert [e["id"] for e in seen] == [e["id"] for e in events]
    finally:
        producer.close()
        mongo.close()
        await asyncio.to_thread(stack.stop)


async def test_an_erased_customers_kept_events_go_but_the_erasure_stays(stack):
    """Kept published events hold personal data: the relay that publishes an erasure keeps
    the erasure (to send again) and forgets the rest of the person's events; others' stay."""
    _, mongo, relay = await _relay_of(stack, "profiles")
    erased, kept = unique_id(), unique_id()
    erasure = build_event("crm.customer.erased", {"customer_id": erased}, source="/services/profiles")
    events = [paid_event(erased), paid_event(kept), paid_event(erased), erasure]
    await mongo.transaction(lambda session: relay.add(session, events))
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        relay.wake()
        await _until(lambda: _fewer_rows_than(mongo.db[outbox.OUTBOX], 1), 30)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
    try:
        lines = [
            orjson.loads(raw)
            async for doc in mongo.db[outbox.PUBLISHED].find({})
            for raw in bytes(doc["lines"]).split(b"\n")
        ]
        assert [e["id"] for e in lines] == [events[1]["id"], erasure["id"]]
    finally:
        mongo.close()
