"""The whole CDNOW history (69,659 purchases) through the orders import, and out on Kafka."""

from __future__ import annotations

import uuid

import httpx
import orjson

from services.common.cdnow import purchases
from services.common.kafka import ensure_topics
from services.stack.harness import TopicReader, start_service
from services.stack.replay import replay_cdnow


def test_cdnow_history_is_imported_whole_and_published_once(stack):
    prefix = f"cdnow{uuid.uuid4().hex[:6]}."  # its own topics: 139k events would slow every other reader
    ensure_topics(stack.settings(topic_prefix=prefix))
    # A 10,000-line chunk is one write: on a loaded machine it may take longer than the
    # default 10 s a request waits for the database (answered 503); this test is about
    # completeness, not latency.
    orders = start_service(stack, "orders", CRM_TOPIC_PREFIX=prefix, CRM_DB_TIMEOUT_SECONDS="120")
    try:
        expected = list(purchases())
        with httpx.Client(timeout=600) as client:
            totals = replay_cdnow(orders.url, stack.keys["admin"], None, client=client)
        assert totals == {
            "lines": 69_659,
            "accepted": 69_659,
            "duplicates": 0,
            "rejected": 0,
            "events": 2 * 69_659,
        }

        one = orders.get("/orders/cdnow-00001-19970101-1").json()
        assert (one["status"], one["amount_cents"], one["currency"]) == ("paid", 1177, "USD")
        assert one["items"][0]["qty"] == 1

        reader = TopicReader(stack, prefix + "crm.orders.v1")
        paid = reader.collect(lambda e: e["type"] == "crm.order.paid", 69_659, timeout=240, settle=2)
        reader.close()
        assert len(paid) == 69_659
        assert len({e["data"]["order_id"] for e in paid}) == 69_659
        assert sum(e["data"]["amount_cents"] for e in paid) == sum(p.cents for p in expected) == 250_031_563
        assert min(e["time"] for e in paid) == "1997-01-01T12:00:00Z"
        assert max(e["time"] for e in paid) == "1998-06-30T12:00:00Z"

        until = httpx.get(
            f"{orders.url}/orders",
            params={"to": "1997-01-02T00:00:00Z", "limit": 500},
            headers=stack.headers("viewer"),
        ).json()
        assert len(until["items"]) == sum(1 for p in expected if p.day.isoformat() == "1997-01-01")
        assert orjson.loads(orjson.dumps(until["items"][0]))["placed_at"].startswith("1997-01-01")
    finally:
        orders.stop()
