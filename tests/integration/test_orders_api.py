"""The orders service over real HTTP, with the real broker and database."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from services.common.mongo import blocking_client
from services.stack.harness import Service, TopicReader, once, start_service, unique_id

ORDERS_TOPIC = "crm.orders.v1"


@pytest.fixture(scope="module")
def orders(stack) -> Service:
    service = start_service(stack, "orders")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def reader(stack) -> TopicReader:
    topic_reader = TopicReader(stack, ORDERS_TOPIC)
    yield topic_reader
    topic_reader.close()


def order_body(customer: str, **override) -> dict:
    body = {
        "customer_id": customer,
        "currency": "CNY",
        "channel": "app",
        "discount_cents": 500,
        "promised_delivery_date": "2099-01-01",
        "items": [
            {"sku": "SKU-1", "category": "shoes", "brand": "Acme", "qty": 2, "unit_price_cents": 4500},
            {"sku": "SKU-2", "category": "socks", "brand": "Acme", "qty": 1, "unit_price_cents": 1000},
        ],
    }
    body.update(override)
    return body


def of_customer(customer):
    return lambda e: e["subject"] == customer


def test_full_lifecycle_publishes_exactly_the_expected_events_in_order(orders, reader):
    customer = unique_id()
    placed = orders.post("/orders", json=order_body(customer))
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["amount_cents"] == 2 * 4500 + 1000 - 500
    oid = order["order_id"]
    assert orders.post(f"/orders/{oid}/pay", headers=once()).status_code == 200
    for action in ("ship", "deliver"):
        assert orders.post(f"/orders/{oid}/{action}").status_code == 200
    returned = orders.post(
        f"/orders/{oid}/return",
        json={"reason": "too small", "items": [{"sku": "SKU-1", "qty": 1}]},
        headers=once(),
    )
    assert returned.json()["status"] == "partially_returned"
    refunded = orders.post(f"/orders/{oid}/refund", headers=once())
    assert refunded.json()["refunded_cents"] == returned.json()["returned_cents"] > 0

    events = reader.collect(of_customer(customer), 6)
    assert [e["type"] for e in events] == [
        "crm.order.placed",
        "crm.order.paid",
        "crm.order.shipped",
        "crm.order.delivered",
        "crm.order.returned",
        "crm.order.refunded",
    ]
    assert len({e["id"] for e in events}) == 6
    assert events[1]["data"]["amount_cents"] == 9500
    assert events[3]["data"]["late"] is False
    assert events[5]["data"]["reason"] == "return"
    assert orders.get(f"/orders/{oid}").json()["status"] == "partially_returned"


def test_cancelling_a_paid_order_refunds_it(orders, reader):
    customer = unique_id()
    oid = orders.post("/orders", json=order_body(customer)).json()["order_id"]
    orders.post(f"/orders/{oid}/pay", headers=once())
    cancelled = orders.post(f"/orders/{oid}/cancel", json={"reason": "found it cheaper"}, headers=once())
    assert cancelled.json()["status"] == "cancelled"
    events = reader.collect(of_customer(customer), 4)
    assert [e["type"] for e in events][-2:] == ["crm.order.cancelled", "crm.order.refunded"]
    assert events[-1]["data"]["amount_cents"] == 9500


def test_retry_with_the_same_idempotency_key_returns_the_first_result(orders, reader):
    customer = unique_id()
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    first = orders.post("/orders", json=order_body(customer), headers=headers)
    again = orders.post("/orders", json=order_body(customer), headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["order_id"] == again.json()["order_id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    different = orders.post("/orders", json=order_body(customer, currency="EUR"), headers=headers)
    assert different.status_code == 422
    pay_key = {"Idempotency-Key": "pay-" + customer}
    oid = first.json()["order_id"]
    assert orders.post(f"/orders/{oid}/pay", headers=pay_key).status_code == 200
    assert orders.post(f"/orders/{oid}/pay", headers=pay_key).status_code == 200  # replay, not a 409
    events = reader.collect(of_customer(customer), 2)
    assert [e["type"] for e in events] == ["crm.order.placed", "crm.order.paid"]
    listed = orders.get("/orders", params={"customer_id": customer}).json()["items"]
    assert len(listed) == 1


def test_money_moves_need_an_idempotency_key(orders, reader):
    """Without the key a client's retry would pay, return or refund twice: refused up front."""
    customer = unique_id()
    oid = orders.post("/orders", json=order_body(customer)).json()["order_id"]
    for action in ("pay", "cancel", "return", "refund"):
        refused = orders.post(f"/orders/{oid}/{action}")
        assert refused.status_code == 400, (action, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "Idempotency-Key" in refused.json()["detail"]
    assert orders.get(f"/orders/{oid}").json()["status"] == "placed"  # nothing moved
    assert orders.post(f"/orders/{oid}/ship").status_code == 409  # other moves keep it optional
    spec = orders.get("/openapi.json", role=None).json()["paths"]
    for action in ("pay", "cancel", "return", "refund"):
        (header,) = [
            p for p in spec[f"/orders/{{order_id}}/{action}"]["post"]["parameters"] if p["in"] == "header"
        ]
        assert header["name"] == "Idempotency-Key" and header["required"] is True
    (ship_header,) = [p for p in spec["/orders/{order_id}/ship"]["post"]["parameters"] if p["in"] == "header"]
    assert ship_header["required"] is False


def test_illegal_transition_is_409_with_the_allowed_ones(orders):
    oid = orders.post("/orders", json=order_body(unique_id())).json()["order_id"]
    answer = orders.post(f"/orders/{oid}/deliver")
    assert answer.status_code == 409
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert body["allowed"] == ["pay", "cancel"] and body["current_status"] == "placed"
    assert "pay, cancel" in body["detail"]
    assert orders.post("/orders/o-missing/pay", headers=once()).status_code == 404


BAD_BODIES = [
    ({"bogus": 1}, "bogus"),
    ({"items": [{"sku": "A", "category": "c", "brand": "b", "qty": -1, "unit_price_cents": 1}]}, "qty"),
    (
        {"items": [{"sku": "A", "category": "c", "brand": "b", "qty": 10_000_000, "unit_price_cents": 1}]},
        "qty",
    ),
    (
        {"items": [{"sku": "A", "category": "c", "brand": "b", "qty": 1, "unit_price_cents": -5}]},
        "unit_price_cents",
    ),
    (
        {"items": [{"sku": "A", "category": "c", "brand": "b", "qty": 1, "unit_price_cents": 10**12}]},
        "unit_price_cents",
    ),
    ({"currency": "XYZ"}, "currency"),
    ({"currency": "usd"}, "currency"),
    ({"customer_id": "bad id!"}, "customer_id"),
    ({"order_id": "../etc/passwd"}, "order_id"),
    ({"discount_cents": 10**6}, "discount_cents"),
    ({"amount_cents": 1}, "amount_cents"),
    ({"items": []}, "items"),
    ({"placed_at": "2999-01-01T00:00:00Z"}, "placed_at"),
    ({"placed_at": "2026-01-01T00:00:00"}, "placed_at"),
]


@pytest.mark.parametrize(("override", "field"), BAD_BODIES, ids=[f for _, f in BAD_BODIES])
def test_bad_order_is_a_422_naming_the_field_and_nothing_is_stored(orders, reader, override, field):
    customer = unique_id()
    body = order_body(customer)
    body.update(override)
    answer = orders.post("/orders", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert field in answer.json()["detail"]
    assert orders.get("/orders", params={"customer_id": customer}).json()["items"] == []
    assert reader.collect(of_customer(customer), 1, timeout=0.5) == []


def test_transport_level_bad_input(orders):
    customer = unique_id()
    cases = [
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 422),
        (dict(content=orjson.dumps(order_body(customer)), headers={"content-type": "text/plain"}), 415),
        (dict(content=b"{" + b" " * 1_100_000 + b"}", headers={"content-type": "application/json"}), 413),
    ]
    for kwargs, status in cases:
        answer = orders.post("/orders", **kwargs)
        assert answer.status_code == status, answer.text
        assert answer.json()["status"] == status and answer.json()["detail"]
    assert orders.post("/orders", json=order_body(customer), role=None).status_code == 401
    assert (
        orders.post(
            "/orders", json=order_body(customer), role=None, headers={"Authorization": "Bearer nope"}
        ).status_code
        == 401
    )
    assert orders.post("/orders", json=order_body(customer), role="viewer").status_code == 403
    assert orders.get("/orders", params={"customer_id": customer}).json()["items"] == []


def test_list_is_newest_first_filtered_and_paginated(orders):
    customer = unique_id()
    ids = []
    for day in range(1, 8):
        answer = orders.post(
            "/orders", json=order_body(customer, placed_at=f"2026-0{day % 9 + 1}-01T10:00:00Z")
        )
        ids.append(answer.json()["order_id"])
    orders.post(f"/orders/{ids[0]}/pay", headers=once())
    seen, cursor = [], None
    while True:
        params = {"customer_id": customer, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = orders.get("/orders", params=params).json()
        seen += [o["order_id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    paid = orders.get("/orders", params={"customer_id": customer, "status": "paid"}).json()["items"]
    assert [o["order_id"] for o in paid] == [ids[0]]
    window = orders.get(
        "/orders",
        params={"customer_id": customer, "from": "2026-03-01T00:00:00Z", "to": "2026-05-01T00:00:00Z"},
    ).json()["items"]
    assert len(window) == 2
    assert orders.get("/orders", params={"cursor": "garbage"}).status_code == 400
    assert orders.get("/orders", params={"colour": "red"}).status_code == 400
    assert orders.get("/orders", params={"status": "teleported"}).status_code == 422


def test_history_import_reports_rejects_by_line_and_publishes_historical_times(orders, reader):
    customer = unique_id()
    good = {
        "order_id": f"h-{customer}",
        "customer_id": customer,
        "currency": "USD",
        "items": [{"sku": "cd", "category": "music", "brand": "x", "qty": 2, "unit_price_cents": 1000}],
        "placed_at": "1997-03-01T12:00:00Z",
        "paid_at": "1997-03-01T12:05:00Z",
        "delivered_at": "1997-03-02T12:00:00Z",
        "shipped_at": "1997-03-01T18:00:00Z",
    }
    lines = [
        orjson.dumps(good),
        b"{broken json",
        orjson.dumps({**good, "order_id": f"h2-{customer}", "currency": "ZZZ"}),
        b"",
        orjson.dumps(
            {**good, "order_id": f"h3-{customer}", "paid_at": None, "shipped_at": "1997-03-01T18:00:00Z"}
        ),
        orjson.dumps(good),
    ]
    answer = orders.post(
        "/orders/import", content=b"\n".join(lines), headers={"content-type": "application/x-ndjson"}
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["accepted"] == 1 and report["duplicates"] == 1 and report["rejected"] == 3
    assert [r["line"] for r in report["rejects"]] == [2, 3, 5]
    assert "currency" in report["rejects"][1]["error"] and "cannot ship" in report["rejects"][2]["error"]
    events = reader.collect(of_customer(customer), 4)
    assert [(e["type"], e["time"]) for e in events] == [
        ("crm.order.placed", "1997-03-01T12:00:00Z"),
        ("crm.order.paid", "1997-03-01T12:05:00Z"),
        ("crm.order.shipped", "1997-03-01T18:00:00Z"),
        ("crm.order.delivered", "1997-03-02T12:00:00Z"),
    ]
    again = orders.post("/orders/import", content=lines[0], headers={"content-type": "application/x-ndjson"})
    assert again.json()["duplicates"] == 1 and again.json()["accepted"] == 0
    assert (
        orders.post(
            "/orders/import", content=lines[0], role="agent", headers={"content-type": "application/x-ndjson"}
        ).status_code
        == 403
    )
    assert orders.post("/orders/import", json=good).status_code == 415


def test_metrics_count_requests_by_route_template_and_transitions(orders):
    oid = orders.post("/orders", json=order_body(unique_id())).json()["order_id"]
    orders.post(f"/orders/{oid}/pay", headers=once())
    orders.get("/no/such/path")
    text = orders.get("/metrics", role=None).text
    assert 'crm_http_requests_total{method="POST",route="/orders/{order_id}/pay",status="200"}' in text
    assert 'route="unmatched"' in text and oid not in text  # ids never become label values
    assert 'crm_orders_transitions_total{transition="paid"}' in text
    assert 'crm_orders_revenue_cents_total{currency="CNY"}' in text
    assert "crm_events_published_total" in text and "crm_outbox_pending_rows" in text


def test_the_embedded_database_is_detected_and_concurrent_transactions_all_commit(stack):
    """On nx-27017 two interleaved transactions corrupt each other; the handle knows the server
    and runs them one at a time, so every one of many concurrent writes lands."""
    import asyncio

    from services.common.mongo import EMBEDDED, Mongo

    async def write_many() -> tuple[Mongo, int]:
        mongo = await Mongo.open(stack.settings(db_prefix=f"t{uuid.uuid4().hex[:8]}_"), "orders")
        try:

            async def one(k: int) -> None:
                async def work(session) -> None:
                    await mongo.db.tx.insert_one({"_id": k}, session=session)
                    await mongo.db.tx.update_one({"_id": k}, {"$set": {"done": True}}, session=session)

                await mongo.transaction(work)

            await asyncio.gather(*(one(k) for k in range(20)))
            return mongo, await mongo.db.tx.count_documents({"done": True})
        finally:
            mongo.close()

    mongo, written = asyncio.run(write_many())
    assert mongo.capabilities == EMBEDDED
    assert written == 20


def test_monthly_sales_are_kept_with_every_order_change_not_read_from_every_order(stack, orders):
    """Sales by month come from rows kept with each payment, return and refund (a viewer's
    read never scans every order); orders stored before those rows existed are counted once
    when the service starts on their database."""
    database = blocking_client(stack.mongo_url)[orders.env["CRM_DB_PREFIX"] + "orders"]
    currency = "SEK"  # this test's own currency: other tests' sales stay out of its rows

    def sold(month: str, days: int = 1) -> str:
        placed = orders.post(
            "/orders", json=order_body(unique_id(), currency=currency, placed_at=f"{month}-0{days}T09:00:00Z")
        ).json()["order_id"]
        paid = orders.post(f"/orders/{placed}/pay", json={"at": f"{month}-0{days}T10:00:00Z"}, headers=once())
        assert paid.status_code == 200, paid.text
        return placed

    sold("2025-03")
    march = sold("2025-03", 2)
    april = sold("2025-04")
    for action in ("ship", "deliver"):
        orders.post(f"/orders/{april}/{action}", json={"at": "2025-04-03T10:00:00Z"})
    orders.post(
        f"/orders/{april}/return",
        json={"at": "2025-05-02T10:00:00Z", "reason": "too small", "items": [{"sku": "SKU-2", "qty": 1}]},
        headers=once(),
    )
    cancelled = orders.post(
        f"/orders/{march}/cancel",
        json={"at": "2025-03-05T10:00:00Z", "reason": "changed mind"},
        headers=once(),
    )
    assert cancelled.status_code == 200, cancelled.text  # paid, so refunded in full

    def ours(answer):
        return [r for r in answer.json()["items"] if r["currency"] == currency]

    expected = [
        {"month": "2025-03", "currency": currency, "net_sales_cents": 9500, "orders": 2},
        {
            "month": "2025-04",
            "currency": currency,
            "net_sales_cents": 8550,
            "orders": 1,
        },  # SKU-2 less its discount share,
    ]
    assert ours(orders.get("/sales/monthly", role="viewer")) == expected
    assert ours(orders.get("/sales/monthly", params={"from": "2025-04-01T00:00:00Z"})) == expected[1:]
    assert ours(orders.get("/sales/monthly", params={"to": "2025-04-01T00:00:00Z"})) == expected[:1]
    kept = {d["_id"]: d["net_sales_cents"] for d in database["monthly_sales"].find({"currency": currency})}
    assert kept == {f"2025-03 {currency}": 9_500, f"2025-04 {currency}": 8_550}

    # A database from before monthly sales were kept: its paid orders count once, at start.
    database["monthly_sales"].delete_many({})
    orders.restart()
    deadline = time.monotonic() + 20
    while ours(orders.get("/sales/monthly")) != expected:
        assert time.monotonic() < deadline, orders.get("/sales/monthly").text
        time.sleep(0.2)
    orders.restart()
    assert ours(orders.get("/sales/monthly")) == expected  # counted once, not again at each start
