"""Nothing lost, nothing doubled: the shared delivery layer against the real embedded broker
and database when they restart, stall or refuse."""

from __future__ import annotations

import os
import signal
import time
import uuid

from services.common.kafka import EventProducer, ensure_topics
from services.stack.harness import TopicReader, start_service, start_stack, unique_id
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
        seen = reader.collect(lambda e: e["subject"] == customer, 3, timeout=30)
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
