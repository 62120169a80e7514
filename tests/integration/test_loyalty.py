"""The loyalty service consuming real order and customer events from the embedded broker,
with a clock the test moves."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from kafka import KafkaProducer

from services.common.clock import to_rfc3339
from services.common.contracts import build_event
from services.common.kafka import EventProducer, ensure_topics
from services.common.mongo import blocking_client
from services.stack.harness import Service, TopicReader, once, start_service, unique_id
from tests.conftest import NOW


@pytest.fixture(scope="module")
def loyalty(stack, prefix, clock_file) -> Service:
    service = start_service(
        stack,
        "loyalty",
        CRM_TOPIC_PREFIX=prefix,
        CRM_CLOCK_FILE=str(clock_file),
        CRM_LOYALTY_EXPIRY_SECONDS="0.2",
    )
    yield service
    service.stop()


def order_event(kind: str, customer: str, order: str, at: datetime, **data) -> dict:
    body = {"order_id": order, "customer_id": customer, **data}
    when = {"paid": "paid_at", "returned": "returned_at", "refunded": "refunded_at"}[kind]
    body[when] = to_rfc3339(at)
    return build_event(f"crm.order.{kind}", body, source="/services/orders", time=at)


def paid(customer, order, cents, at=NOW - timedelta(days=1)):
    return order_event("paid", customer, order, at, amount_cents=cents, currency="CNY")


def returned(customer, order, cents, at=NOW - timedelta(hours=2)):
    return order_event(
        "returned",
        customer,
        order,
        at,
        return_id=f"r-{order}",
        amount_cents=cents,
        currency="CNY",
        reason="too small",
        full=False,
        items=[{"sku": "S", "qty": 1, "amount_cents": cents}],
    )


def registered(customer, referred_by=None):
    return build_event(
        "crm.customer.registered",
        {
            "customer_id": customer,
            "name": None,
            "email": None,
            "phone": None,
            "gender": None,
            "birth_date": None,
            "city": None,
            "city_tier": None,
            "channel": "app",
            "referred_by": referred_by,
            "marketing_consent": False,
            "registered_at": to_rfc3339(NOW - timedelta(days=3)),
        },
        source="/services/profiles",
    )


def account_when(loyalty: Service, customer: str, condition, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        answer = loyalty.get(f"/accounts/{customer}")
        if answer.status_code == 200 and condition(answer.json()):
            return answer.json()
        assert time.monotonic() < deadline, f"account never matched: {answer.status_code} {answer.text}"
        time.sleep(0.2)


def test_points_are_earned_and_a_partial_return_reverses_its_share(loyalty, publish, stack, prefix):
    customer = unique_id()
    publish(paid(customer, "o-1", 10_000))
    account_when(loyalty, customer, lambda a: a["balance"] == 100)
    publish(returned(customer, "o-1", 2_500))
    account = account_when(loyalty, customer, lambda a: a["balance"] == 75)
    assert account["tier"] == "member" and account["lifetime_earned"] == 100
    ledger = loyalty.get(f"/accounts/{customer}/ledger").json()["items"]
    assert [(e["kind"], e["points"]) for e in ledger] == [("reverse", -25), ("earn", 100)]
    reader = TopicReader(stack, prefix + "crm.loyalty.v1")
    events = reader.collect(lambda e: e["subject"] == customer, 2)
    reader.close()
    assert [e["type"] for e in events] == ["crm.loyalty.points_earned", "crm.loyalty.points_reversed"]


def test_every_balance_event_carries_the_order_loyalty_applied_its_entry_in(loyalty, publish, stack, prefix):
    """An earn is stamped with the order's paid time: one whose paid event reaches loyalty after
    a later redemption is still the entry applied last, so its balance is the account's."""
    customer = unique_id()
    publish(paid(customer, "o-1", 10_000))
    account_when(loyalty, customer, lambda a: a["balance"] == 100)
    redeemed = loyalty.post(
        f"/accounts/{customer}/redemptions", json={"points": 60, "reason": "voucher"}, headers=once()
    )
    assert redeemed.status_code == 201 and redeemed.json()["balance"] == 40
    publish(paid(customer, "o-2", 12_900, at=NOW - timedelta(hours=1)))  # paid before the redemption
    account_when(loyalty, customer, lambda a: a["balance"] == 169)
    reader = TopicReader(stack, prefix + "crm.loyalty.v1")
    events = reader.collect(lambda e: e["subject"] == customer, 3)
    reader.close()
    told = [(e["type"].rsplit(".", 1)[1], e["data"]["sequence"], e["data"]["balance"]) for e in events]
    assert told == [("points_earned", 1, 100), ("points_redeemed", 2, 40), ("points_earned", 3, 169)]
    assert events[2]["data"]["earned_at"] < events[1]["data"]["redeemed_at"]
    ledger = loyalty.get(f"/accounts/{customer}/ledger").json()["items"]
    assert max(ledger, key=lambda e: e["sequence"])["balance"] == 169


def test_duplicate_events_change_nothing(loyalty, publish):
    customer = unique_id()
    event = paid(customer, "o-1", 5_000)
    publish(event, event, event)
    publish(paid(customer, "o-2", 1_000))  # a marker that the duplicates were processed before it
    account = account_when(loyalty, customer, lambda a: a["lifetime_earned"] >= 60)
    time.sleep(1)
    assert loyalty.get(f"/accounts/{customer}").json()["balance"] == account["balance"] == 60


def test_referral_bonus_is_paid_once_on_the_first_paid_order(loyalty, publish):
    referrer, friend = unique_id(), unique_id()
    publish(registered(referrer), registered(friend, referred_by=referrer))
    publish(paid(friend, "o-1", 1_000), paid(friend, "o-2", 1_000))
    account_when(loyalty, referrer, lambda a: a["balance"] == 500)
    publish(registered(friend, referred_by=referrer))  # a re-registration is not a second referral
    publish(paid(friend, "o-3", 1_000))
    account_when(loyalty, friend, lambda a: a["balance"] == 30)
    assert loyalty.get(f"/accounts/{referrer}").json()["balance"] == 500


def test_points_expire_and_redemption_takes_the_oldest_lots_first(loyalty, publish, clock_file):
    customer = unique_id()
    publish(
        paid(customer, "old", 10_000, at=NOW - timedelta(days=300)),
        paid(customer, "mid", 20_000, at=NOW - timedelta(days=200)),
        paid(customer, "new", 5_000, at=NOW - timedelta(days=10)),
    )
    account = account_when(loyalty, customer, lambda a: a["balance"] == 350)
    assert account["expiring_soon"] == []
    redeemed = loyalty.post(
        f"/accounts/{customer}/redemptions", json={"points": 150, "reason": "voucher"}, headers=once()
    )
    assert redeemed.status_code == 201 and redeemed.json()["balance"] == 200
    ledger = loyalty.get(f"/accounts/{customer}/ledger").json()["items"]
    taken = [lot["points"] for lot in ledger[0]["lots"]]
    assert ledger[0]["kind"] == "redeem" and taken == [100, 50]  # all of the oldest, then the next
    clock_file.write_text(to_rfc3339(NOW + timedelta(days=150)))  # "mid" expires at NOW + 165 days
    account = account_when(loyalty, customer, lambda a: a["expiring_soon"] != [])
    assert account["expiring_soon"] == [
        {"date": (NOW + timedelta(days=165)).date().isoformat(), "points": 150}
    ]
    clock_file.write_text(to_rfc3339(NOW + timedelta(days=170)))
    assert (
        account_when(loyalty, customer, lambda a: True)["balance"] == 50
    )  # expired lots are never spendable
    deadline = time.monotonic() + 15
    while (ledger := loyalty.get(f"/accounts/{customer}/ledger").json()["items"])[0]["kind"] != "expire":
        assert time.monotonic() < deadline, "the expiry job never booked the expired lot"
        time.sleep(0.2)
    assert ledger[0]["points"] == -150 and ledger[0]["balance"] == 50
    clock_file.write_text(to_rfc3339(NOW))


def test_tiers_move_up_and_down(loyalty, publish, clock_file):
    customer = unique_id()
    publish(paid(customer, "big", 600_000, at=NOW - timedelta(days=20)))
    account = account_when(loyalty, customer, lambda a: a["tier"] == "gold")
    assert account["benefits"] == {"earn_multiplier": 1.5, "discount_percent": 5.0, "free_shipping": True}
    publish(returned(customer, "big", 200_000))
    account_when(loyalty, customer, lambda a: a["tier"] == "silver")
    clock_file.write_text(to_rfc3339(NOW + timedelta(days=346)))  # the purchase leaves the 12-month window
    account_when(loyalty, customer, lambda a: a["tier"] == "member")
    clock_file.write_text(to_rfc3339(NOW))


def test_concurrent_redemptions_never_overdraw(loyalty, publish):
    customer = unique_id()
    publish(paid(customer, "o-1", 10_000))
    account_when(loyalty, customer, lambda a: a["balance"] == 100)

    def spend(_):
        return loyalty.post(
            f"/accounts/{customer}/redemptions", json={"points": 30, "reason": "race"}, headers=once()
        ).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = sorted(pool.map(spend, range(10)))
    assert statuses == [201] * 3 + [409] * 7
    assert loyalty.get(f"/accounts/{customer}").json()["balance"] == 10
    refused = loyalty.post(
        f"/accounts/{customer}/redemptions", json={"points": 11, "reason": "x"}, headers=once()
    )
    assert refused.status_code == 409 and refused.json()["available"] == 10


def test_redemption_and_adjustment_rules(loyalty, publish):
    customer = unique_id()
    publish(paid(customer, "o-1", 10_000))
    account_when(loyalty, customer, lambda a: a["balance"] == 100)
    key = {"Idempotency-Key": f"k-{customer}"}
    first = loyalty.post(f"/accounts/{customer}/redemptions", json={"points": 10, "reason": "x"}, headers=key)
    again = loyalty.post(f"/accounts/{customer}/redemptions", json={"points": 10, "reason": "x"}, headers=key)
    assert first.json()["entry_id"] == again.json()["entry_id"] and again.json()["balance"] == 90
    assert (
        loyalty.post(
            f"/accounts/{customer}/redemptions", json={"points": 0, "reason": "x"}, headers=once()
        ).status_code
        == 422
    )
    assert (
        loyalty.post(
            f"/accounts/{customer}/adjustments",
            json={"points": 5, "reason": "sorry"},
            role="agent",
            headers=once(),
        ).status_code
        == 403
    )
    assert (
        loyalty.post(
            f"/accounts/{customer}/adjustments", json={"points": -500, "reason": "x"}, headers=once()
        ).status_code
        == 409
    )
    assert (
        loyalty.post(
            f"/accounts/{customer}/adjustments", json={"points": 15, "reason": "goodwill"}, headers=once()
        ).json()["balance"]
        == 105
    )
    assert loyalty.get("/accounts/nobody-here").status_code == 404
    assert [t["name"] for t in loyalty.get("/tiers").json()["items"]] == [
        "member",
        "silver",
        "gold",
        "platinum",
    ]


def test_redemptions_and_adjustments_need_an_idempotency_key(loyalty, publish):
    """A retry without the key would spend or grant the points again: refused up front."""
    customer = unique_id()
    publish(paid(customer, "o-1", 10_000))
    account_when(loyalty, customer, lambda a: a["balance"] == 100)
    for path in ("redemptions", "adjustments"):
        refused = loyalty.post(f"/accounts/{customer}/{path}", json={"points": 10, "reason": "x"})
        assert refused.status_code == 400, refused.text
        assert "Idempotency-Key" in refused.json()["detail"]
        spec = loyalty.get("/openapi.json", role=None).json()["paths"][f"/accounts/{{customer_id}}/{path}"]
        (header,) = [p for p in spec["post"]["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key" and header["required"] is True
    assert loyalty.get(f"/accounts/{customer}").json()["balance"] == 100


def test_malformed_records_are_dead_lettered_and_consumption_goes_on(loyalty, publish, stack, prefix):
    customer = unique_id()
    raw = KafkaProducer(bootstrap_servers=stack.bootstrap)
    raw.send(prefix + "crm.orders.v1", key=customer.encode(), value=b'{"specversion": "1.0", "oops": true}')
    raw.flush()
    raw.close()
    publish(paid(customer, "o-1", 4_200))
    account_when(loyalty, customer, lambda a: a["balance"] == 42)
    dead = TopicReader(stack, prefix + "crm.deadletter.v1").records()
    assert any(
        r.key == customer.encode() and dict(r.headers)["crm.dlq.consumer"].endswith(b"crm-loyalty")
        for r in dead
    )


def test_a_crash_between_storing_and_committing_does_not_double_the_effect(stack, tmp_path):
    prefix = f"crash{uuid.uuid4().hex[:6]}."
    settings = stack.settings(topic_prefix=prefix)
    ensure_topics(settings)
    producer = EventProducer(settings, "test-shop")
    customer = unique_id()
    producer.publish([paid(customer, "o-1", 10_000), paid(customer, "o-2", 5_000)])
    producer.close()
    db_prefix = f"t{uuid.uuid4().hex[:8]}_"
    crashing = start_service(
        stack, "loyalty", db_prefix=db_prefix, CRM_TOPIC_PREFIX=prefix, CRM_FAILPOINT="consumer_before_commit"
    )
    crashing.child.process.wait(60)  # it stores the batch, then dies before committing
    assert crashing.child.process.returncode == 137
    accounts = blocking_client(stack.mongo_url)[db_prefix + "loyalty"]["accounts"]
    assert accounts.find_one({"_id": customer})["balance"] == 150  # the effect was stored
    crashing.client.close()
    healthy = start_service(stack, "loyalty", db_prefix=db_prefix, CRM_TOPIC_PREFIX=prefix)
    try:
        # The uncommitted batch comes again (both events consumed anew) and changes nothing.
        consumed = f'crm_events_consumed_total{{topic="{prefix}crm.orders.v1",type="crm.order.paid"}} 2.0'
        # The group waits out the killed member's session before it hands its partitions on.
        deadline = time.monotonic() + 60
        while consumed not in healthy.get("/metrics", role=None).text:
            assert time.monotonic() < deadline, "the batch was not delivered again after the crash"
            time.sleep(0.3)
        assert healthy.get(f"/accounts/{customer}").json()["balance"] == 150
        assert len(healthy.get(f"/accounts/{customer}/ledger").json()["items"]) == 2
    finally:
        healthy.stop()
