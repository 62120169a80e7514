"""A customer's timeline page with 2,000 entries across services, under concurrent load, beside
`/healthz` of the same desk process as the same-run baseline; and how fast the desk's consumer
puts a customer's events on the timeline through the real broker.

The timelines are generated as the consumer stores them (services/desk/domain.py
`timeline_entry` of each event) and written directly into `crm_desk.timeline`: orders with
their payments and deliveries, complaints, surveys, interactions, messages, loyalty entries,
notes and tasks. Sizes: BENCH_TIMELINE_CUSTOMERS (customers, 2,000 entries each),
BENCH_TIMELINE_EVENTS (events published for the consumer's rate), BENCH_REQUESTS."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from pymongo import InsertOne

from services.common.clock import to_rfc3339
from services.common.contracts import build_event
from services.common.kafka import EventProducer
from services.common.mongo import blocking_client
from services.desk import domain
from services.desk import store as S
from services.stack.harness import start_service, until

from .profiles_http import load
from .report import Row, percentile, show
from .stack import start_bench_stack

CUSTOMERS = int(os.environ.get("BENCH_TIMELINE_CUSTOMERS", 50))
ENTRIES = 2000
EVENTS = int(os.environ.get("BENCH_TIMELINE_EVENTS", 2000))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", 2000))
PAGE = 50
NOW = datetime.now(UTC).replace(microsecond=0)


def story_event(customer: str, n: int, at: datetime, rng: random.Random) -> dict:
    """The n-th event of a customer's story, of the kind the services publish."""
    stamp = to_rfc3339(at)
    kind = n % 8
    if kind == 0:
        data = {"order_id": f"o-{customer}-{n}", "items": [{"sku": "S-1", "category": "shoes", "brand": "Acme",
                "qty": 1, "unit_price_cents": 9900}], "amount_cents": 9900, "discount_cents": 0, "currency": "CNY",
                "channel": "app", "promised_delivery_date": None, "placed_at": stamp}  # fmt: skip
        return _event("crm.order.placed", customer, data, at)
    if kind == 1:
        data = {
            "order_id": f"o-{customer}-{n - 1}",
            "amount_cents": 9900,
            "currency": "CNY",
            "paid_at": stamp,
        }
        return _event("crm.order.paid", customer, data, at)
    if kind == 2:
        data = {"entry_id": f"le-{customer}-{n}", "points": 99, "reason": "purchase", "order_id": None,
                "expires_at": stamp, "balance": 99 * n, "earned_at": stamp}  # fmt: skip
        return _event("crm.loyalty.points_earned", customer, data, at)
    if kind == 3:
        data = {"interaction_id": f"i-{customer}-{n}", "kind": "message", "channel": "chat", "occurred_at": stamp,
                "attributes": {"text": "Where is my parcel?"}}  # fmt: skip
        return _event("crm.interaction.recorded", customer, data, at)
    if kind == 4:
        data = {"message_id": f"m-{customer}-{n}", "campaign_id": "cmp-churn-email", "channel": "email",
                "purpose": "marketing", "sent_at": stamp}  # fmt: skip
        return _event("crm.message.sent", customer, data, at)
    if kind == 5:
        data = {"complaint_id": f"cp-{customer}-{n}", "category": "logistics", "severity": "medium",
                "channel": "phone", "order_id": None, "opened_at": stamp, "first_response_due": stamp,
                "resolution_due": stamp, "vip": rng.random() < 0.1}  # fmt: skip
        return _event("crm.complaint.opened", customer, data, at)
    if kind == 6:
        data = {"survey_id": f"s-{customer}-{n}", "complaint_id": None, "kind": "general",
                "scores": {"overall": rng.randint(1, 5)}, "recommend": rng.randint(0, 10), "submitted_at": stamp}  # fmt: skip
        return _event("crm.survey.submitted", customer, data, at)
    data = {"note_id": f"n-{customer}-{n}", "text": "Prefers calls after 18:00", "pinned": False,
            "author": "li.wei", "added_at": stamp}  # fmt: skip
    return _event("crm.note.added", customer, data, at)


def _event(event_type: str, customer: str, data: dict, at: datetime) -> dict:
    return build_event(
        event_type, {"customer_id": customer, **data}, source="/bench", time=at, validate=False
    )


def load_timelines(mongo_url: str, db_name: str) -> float:
    db = blocking_client(mongo_url)[db_name]
    rng = random.Random(5)
    started = time.perf_counter()
    batch = []
    for k in range(CUSTOMERS):
        customer = f"c-{k:07d}"
        for n in range(ENTRIES):
            at = NOW - timedelta(days=3 * 365) + timedelta(minutes=797 * n + rng.randint(0, 600))
            batch.append(InsertOne(S.as_stored(domain.timeline_entry(story_event(customer, n, at, rng)))))
            if len(batch) == 5000:
                db[S.TIMELINE].bulk_write(batch, ordered=False)
                batch = []
    if batch:
        db[S.TIMELINE].bulk_write(batch, ordered=False)
    return time.perf_counter() - started


def insert_rate(mongo_url: str, db_name: str) -> float:
    """The baseline: the same entries inserted one at a time straight into the same database."""
    collection = blocking_client(mongo_url)[db_name]["bench_inserts"]
    rng = random.Random(9)
    entries = [
        S.as_stored(domain.timeline_entry(story_event("c-insert", n, NOW - timedelta(minutes=n), rng)))
        for n in range(EVENTS)
    ]
    started = time.perf_counter()
    for entry in entries:
        collection.insert_one(entry)
    return EVENTS / (time.perf_counter() - started)


def consumer_rate(stack, desk) -> float:
    """Events per second from the broker onto the timeline (one customer, in order)."""
    customer = f"c-rate-{uuid.uuid4().hex[:8]}"
    rng = random.Random(9)
    events = [story_event(customer, n, NOW - timedelta(minutes=EVENTS - n), rng) for n in range(EVENTS)]
    producer = EventProducer(stack.settings(), "bench-desk")
    started = time.perf_counter()
    try:
        producer.publish(events)
    finally:
        producer.close()
    until(
        lambda: desk.get(f"/customers/{customer}/timeline", role="viewer", params={"limit": 1}).json(),
        lambda page: page["items"] and page["items"][0]["event_id"] == events[-1]["id"],
        timeout=3600,
    )
    db = blocking_client(stack.mongo_url)[desk.env["CRM_DB_PREFIX"] + "desk"]
    until(
        lambda: db[S.TIMELINE].count_documents({"customer_id": customer}), lambda n: n == EVENTS, timeout=3600
    )
    return EVENTS / (time.perf_counter() - started)


def main() -> None:
    stack = start_bench_stack()
    desk = None
    try:
        db_prefix = "bench_"
        seconds = load_timelines(stack.mongo_url, db_prefix + "desk")
        print(f"{CUSTOMERS:,} timelines of {ENTRIES:,} entries written in {seconds:.1f} s")
        desk = start_service(stack, "desk", db_prefix=db_prefix)
        headers = stack.headers("viewer")
        rng = random.Random(3)
        customers = [f"c-{rng.randrange(CUSTOMERS):07d}" for _ in range(REQUESTS)]
        # a page deep in one timeline: the cursor after its first 1,000 entries
        cursor = None
        for _ in range(2):
            deep = desk.get(
                f"/customers/{customers[0]}/timeline", role="viewer", params={"limit": 500, "cursor": cursor}
            ).json()
            assert len(deep["items"]) == 500, deep
            cursor = deep["next_cursor"]
        _, base = asyncio.run(load(desk.url, ["/healthz"] * REQUESTS, headers))
        first = [f"/customers/{c}/timeline?limit={PAGE}" for c in customers]
        _, first_lat = asyncio.run(load(desk.url, first, headers))
        deeper = [f"/customers/{customers[0]}/timeline?limit={PAGE}&cursor={cursor}"] * REQUESTS
        _, deep_lat = asyncio.run(load(desk.url, deeper, headers))
        typed = [f"/customers/{c}/timeline?limit={PAGE}&type=crm.complaint.opened" for c in customers]
        _, typed_lat = asyncio.run(load(desk.url, typed, headers))
        rate = consumer_rate(stack, desk)
        inserts = insert_rate(stack.mongo_url, db_prefix + "desk")
        rows: list[Row] = []
        for name, lat in (
            ("first page", first_lat),
            ("page after 1,000", deep_lat),
            ("complaints only", typed_lat),
        ):
            rows += [
                Row("desk_http", f"timeline {name} p50", percentile(lat, 50) * 1000, "ms", "/healthz",
                    percentile(base, 50) * 1000, higher_is_better=False),
                Row("desk_http", f"timeline {name} p99", percentile(lat, 99) * 1000, "ms", "/healthz",
                    percentile(base, 99) * 1000, higher_is_better=False),
            ]  # fmt: skip
        rows.append(
            Row("desk_http", "consumer onto the timeline", rate, "events/s", "one insert each", inserts)
        )
        show(
            f"Desk timeline: {CUSTOMERS:,} customers x {ENTRIES:,} entries, pages of {PAGE}, 16 concurrent",
            rows,
        )
    finally:
        if desk is not None:
            desk.stop()
        stack.stop()


if __name__ == "__main__":
    main()
