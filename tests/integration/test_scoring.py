"""The streaming scorer on the real embedded stack: profiles from real events, time moving on
its own, churn warnings, crashes and duplicates."""

from __future__ import annotations

import itertools
import random
import signal
import time
import uuid
from datetime import timedelta

import pytest

from services.common.clock import to_rfc3339
from services.common.contracts import build_event
from services.common.kafka import EventProducer, ensure_topics
from services.common.mongo import blocking_client
from services.stack.harness import Service, TopicReader, start_service, start_stack, unique_id, until
from tests.conftest import NOW


@pytest.fixture(scope="module")
def scorer(stack, prefix, clock_file, tmp_path_factory) -> Service:
    # Live operation with a clock the test moves, fed backdated events: the wall clock, always.
    service = start_service(
        stack,
        "scoring",
        CRM_TOPIC_PREFIX=prefix,
        CRM_CLOCK_FILE=str(clock_file),
        CRM_SCORING_CLOCK="wall",
        CRM_SCORING_REVIEW_SECONDS="0.5",
        CRM_POPULATION_SECONDS="2",
        CRM_DATA_DIR=str(tmp_path_factory.mktemp("faust")),
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def profiles(stack, scorer):
    return blocking_client(stack.mongo_url)[scorer.env["CRM_DB_PREFIX"] + "profiles"]["profiles"]


def ev(name, customer, at, /, **data):
    return build_event(f"crm.{name}", {"customer_id": customer, **data}, source="/test", time=at)


def paid(customer, order, at, cents=20_000):
    return ev(
        "order.paid", customer, at, order_id=order, amount_cents=cents, currency="CNY", paid_at=to_rfc3339(at)
    )


def registered(customer, at, **extra):
    data = {
        "name": "Ann",
        "email": "ann@example.com",
        "phone": None,
        "gender": None,
        "birth_date": None,
        "city": "Hangzhou",
        "city_tier": 2,
        "channel": "app",
        "referred_by": None,
        "marketing_consent": True,
        "registered_at": to_rfc3339(at),
    }
    return ev("customer.registered", customer, at, **{**data, **extra})


def profile_when(profiles, customer, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        doc = profiles.find_one({"_id": customer}, {"facts": 0})
        if doc is not None and condition(doc):
            return doc
        assert time.monotonic() < deadline, (
            f"profile never matched: {doc and {k: doc.get(k) for k in ('purchases', 'lifecycle', 'churn')}}"
        )
        time.sleep(0.2)


def test_a_journey_from_prospect_to_decline_through_events_and_the_clock(
    scorer, publish, profiles, clock_file
):
    customer = unique_id()
    publish([registered(customer, NOW - timedelta(days=400))])
    assert profile_when(profiles, customer, lambda d: True)["lifecycle"]["stage"] == "prospect"
    publish([paid(customer, "o-1", NOW - timedelta(days=330))])
    profile_when(profiles, customer, lambda d: d["lifecycle"]["stage"] in ("exploration", "decline", "lost"))
    publish([paid(customer, f"o-{k}", NOW - timedelta(days=330 - 30 * k)) for k in range(2, 11)])
    doc = profile_when(profiles, customer, lambda d: d["purchases"]["count"] == 10)
    assert doc["lifecycle"]["stage"] == "stable" and doc["rfm"]["segment"] != "Prospect"
    assert doc["identity"]["city"] == "Hangzhou" and doc["consent"]["marketing"] is True
    clock_file.write_text(to_rfc3339(NOW + timedelta(days=120)))  # silence: four times the usual gap
    doc = profile_when(profiles, customer, lambda d: d["lifecycle"]["stage"] == "decline")
    assert doc["rfm"]["recency_days"] >= 150
    clock_file.write_text(to_rfc3339(NOW))


def test_a_churn_warning_fires_once_with_reasons_and_recovers_after_a_purchase(
    scorer, publish, profiles, stack, prefix, clock_file
):
    customer = unique_id()
    history = [paid(customer, f"o-{k}", NOW - timedelta(days=300 - 20 * k), 80_000) for k in range(8)]
    opened_at = NOW - timedelta(days=2)
    unhappy = [
        ev(
            "complaint.opened",
            customer,
            opened_at,
            complaint_id=f"k-{customer}",
            category="logistics",
            severity="high",
            channel="app",
            order_id=None,
            opened_at=to_rfc3339(opened_at),
            first_response_due=to_rfc3339(opened_at),
            resolution_due=to_rfc3339(opened_at),
            vip=False,
        ),
        ev(
            "survey.submitted",
            customer,
            NOW - timedelta(days=1),
            survey_id=f"s-{customer}",
            complaint_id=None,
            kind="general",
            scores={"overall": 1},
            recommend=1,
            submitted_at=to_rfc3339(NOW - timedelta(days=1)),
        ),
    ]
    publish(history + unhappy)
    doc = profile_when(profiles, customer, lambda d: d["churn"]["warning"]["open"])
    assert doc["churn"]["level"] == "high"
    assert {"open_complaint", "detractor"} <= {r["code"] for r in doc["churn"]["reasons"]}
    publish(unhappy)  # the same events again change nothing
    back = NOW - timedelta(hours=2)
    publish(
        [
            paid(customer, "o-back", back, 50_000),
            ev(
                "complaint.resolved",
                customer,
                back,
                complaint_id=f"k-{customer}",
                resolved_at=to_rfc3339(back),
                resolution="refunded",
                within_sla=False,
                resolution_hours=40.0,
            ),
            ev(
                "survey.submitted",
                customer,
                back,
                survey_id=f"s2-{customer}",
                complaint_id=None,
                kind="general",
                scores={"overall": 5},
                recommend=10,
                submitted_at=to_rfc3339(back),
            ),
        ]
    )
    profile_when(profiles, customer, lambda d: not d["churn"]["warning"]["open"])
    reader = TopicReader(stack, prefix + "crm.signals.v1")
    signals = reader.collect(lambda e: e["subject"] == customer and "churn" in e["type"], 2, settle=2)
    reader.close()
    assert [e["type"] for e in signals] == ["crm.profile.churn_warning", "crm.profile.churn_recovered"]
    warning = signals[0]["data"]
    assert warning["recommended_action"] == "service_recovery" and warning["reasons"]
    assert signals[1]["data"]["episode_id"] == warning["episode_id"]


def test_duplicates_and_out_of_order_events_give_the_same_profile(scorer, publish, profiles):
    ordered_customer, shuffled_customer = unique_id(), unique_id()

    def story(customer):
        at = NOW - timedelta(days=50)
        return [
            paid(customer, "o-1", at),
            paid(customer, "o-2", at + timedelta(days=20), 7_000),
            ev(
                "order.returned",
                customer,
                at + timedelta(days=25),
                order_id="o-2",
                return_id="r-1",
                items=[{"sku": "s", "qty": 1, "amount_cents": 3_000}],
                amount_cents=3_000,
                currency="CNY",
                reason="x",
                full=False,
                returned_at=to_rfc3339(at + timedelta(days=25)),
            ),
            ev(
                "interaction.recorded",
                customer,
                NOW - timedelta(days=1),
                interaction_id=f"i-{customer}",
                kind="page_view",
                occurred_at=to_rfc3339(NOW - timedelta(days=1)),
            ),
        ]

    publish(story(ordered_customer))
    shuffled = story(shuffled_customer) * 3
    random.Random(5).shuffle(shuffled)
    publish(shuffled)
    a = profile_when(profiles, ordered_customer, lambda d: d["purchases"]["net_spend_cents"] == 24_000)
    b = profile_when(profiles, shuffled_customer, lambda d: d["purchases"]["net_spend_cents"] == 24_000)
    for section in ("purchases", "rfm", "service", "engagement"):
        assert a[section] == b[section], section


def test_malformed_records_go_to_the_dead_letter_topic(scorer, stack, prefix, publish, profiles):
    from kafka import KafkaProducer

    customer = unique_id()
    raw = KafkaProducer(bootstrap_servers=stack.bootstrap)
    raw.send(prefix + "crm.orders.v1", key=customer.encode(), value=b"\xff not an event")
    raw.flush()
    raw.close()
    publish([paid(customer, "o-1", NOW - timedelta(days=3))])
    profile_when(profiles, customer, lambda d: d["purchases"]["count"] == 1)
    dead = TopicReader(stack, prefix + "crm.deadletter.v1").records()
    assert any(r.key == customer.encode() and r.value == b"\xff not an event" for r in dead)


def test_sigkill_mid_stream_and_restart_ends_exactly_as_if_nothing_happened(stack, tmp_path):
    prefix = f"kill{uuid.uuid4().hex[:6]}."
    settings = stack.settings(topic_prefix=prefix)
    ensure_topics(settings)
    customers = [f"k-{n:04d}" for n in range(1000)]  # enough that the kill lands mid-stream
    rng = random.Random(11)
    events, expected = [], {}
    for customer in customers:
        count = rng.randint(1, 5)
        expected[customer] = (count, 0)
        for k in range(count):
            cents = rng.randint(1_000, 50_000)
            expected[customer] = (count, expected[customer][1] + cents)
            events.append(
                paid(customer, f"{customer}-o{k}", NOW - timedelta(days=rng.randint(1, 300)), cents)
            )
    producer = EventProducer(settings, "test-shop")
    producer.publish(events)
    producer.close()
    env = dict(CRM_TOPIC_PREFIX=prefix, CRM_SCORING_BATCH="50", CRM_DATA_DIR=str(tmp_path / "faust"))
    db_prefix = f"t{uuid.uuid4().hex[:8]}_"
    first = start_service(stack, "scoring", db_prefix=db_prefix, **env)
    profiles = blocking_client(stack.mongo_url)[db_prefix + "profiles"]["profiles"]
    deadline = time.monotonic() + 60
    while profiles.count_documents({}) < 60:  # well into the stream
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.child.process.send_signal(signal.SIGKILL)
    first.child.process.wait(10)
    first.client.close()
    partial = profiles.count_documents({})
    second = start_service(stack, "scoring", db_prefix=db_prefix, **env)
    try:
        deadline = time.monotonic() + 120
        while True:
            docs = {
                d["_id"]: (d["purchases"]["count"], d["purchases"]["net_spend_cents"])
                for d in profiles.find({}, {"purchases": 1})
            }
            if docs == expected:
                break
            assert time.monotonic() < deadline, (
                f"{sum(docs.get(c) == v for c, v in expected.items())} of {len(customers)} match"
            )
            time.sleep(0.5)
        assert partial < len(customers)
    finally:
        second.stop()


def test_each_customers_signals_reach_the_topic_in_the_order_the_profile_changed(stack, tmp_path):
    """Signals are published while the next batches are written: a consumer must still see
    each customer's transitions as a chain (every change starts where the last one ended)."""
    prefix = f"ord{uuid.uuid4().hex[:6]}."
    settings = stack.settings(topic_prefix=prefix)
    ensure_topics(settings)
    customers = [f"q-{n:03d}" for n in range(300)]
    rounds = 6  # round k carries every customer's k-th order: each customer spans many batches
    events = [
        paid(c, f"{c}-o{k}", NOW - timedelta(days=400 - 60 * k + n % 7), 5_000 + 3_000 * k + n)
        for k in range(rounds)
        for n, c in enumerate(customers)
    ]
    producer = EventProducer(settings, "test-shop")
    producer.publish(events)
    producer.close()
    db_prefix = f"t{uuid.uuid4().hex[:8]}_"
    service = start_service(
        stack,
        "scoring",
        db_prefix=db_prefix,
        CRM_TOPIC_PREFIX=prefix,
        CRM_SCORING_BATCH="25",
        CRM_DATA_DIR=str(tmp_path / "faust"),
    )
    profiles = blocking_client(stack.mongo_url)[db_prefix + "profiles"]["profiles"]
    reader = TopicReader(stack, prefix + "crm.signals.v1")
    try:
        deadline = time.monotonic() + 120
        while profiles.count_documents({"purchases.count": rounds}) < len(customers):
            assert time.monotonic() < deadline, "the stream was not folded in time"
            time.sleep(0.5)
        stored = {d["_id"]: d for d in profiles.find({}, {"lifecycle": 1, "rfm": 1})}
        signals = reader.collect(lambda e: e["subject"] in stored, 2 * len(customers), timeout=60, settle=3)
    finally:
        reader.close()
        service.stop()
    chains = {
        "crm.profile.lifecycle_changed": ("from_stage", "to_stage", lambda d: d["lifecycle"]["stage"]),
        "crm.profile.segment_changed": ("from_segment", "to_segment", lambda d: d["rfm"]["segment"]),
    }
    for kind, (start, end, now_in) in chains.items():
        for customer, doc in stored.items():
            steps = [e["data"] for e in signals if e["subject"] == customer and e["type"] == kind]
            assert steps, (kind, customer)
            assert all(a[end] == b[start] for a, b in itertools.pairwise(steps)), (kind, customer, steps)
            assert steps[-1][end] == now_in(doc), (kind, customer, steps)


def test_the_backlog_sweep_hands_over_only_whole_batches(stack):
    """Signals left unpublished (the broker was away) go out batch by batch; a batch spread
    over partitions and cut by a page is read whole, or its signals would be marked sent
    while some still wait."""
    import asyncio

    from services.common.mongo import async_client, ensure_indexes
    from services.scoring.store import INDEXES, ProfileStore

    # batch 1: three profiles on partition 0, one on 1; batch 2: one on 0, two on 1; batch 3: one on 2
    layout = [(1, 0), (1, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 1), (3, 2)]
    docs = [
        {"_id": f"c-{k}", "partition": p, "pending_seq": seq, "pending": [{"seq": seq, "event": "{}"}]}
        for k, (seq, p) in enumerate(layout)
    ]

    def shape(batches):
        return [(seq, sorted(d["_id"] for d in batch)) for seq, batch in batches]

    async def sweep():
        db = async_client(stack.mongo_url)[f"t{uuid.uuid4().hex[:8]}_profiles"]
        await ensure_indexes(db, INDEXES)
        await db.profiles.insert_many(docs)
        store = ProfileStore(db)
        return (
            shape(await store.pending_batches({}, [0, 1, 2], limit=2)),
            shape(await store.pending_batches({0: 1, 1: 1, 2: 1}, [0, 1, 2], limit=2)),
            shape(await store.pending_batches({}, [0, 1, 2], limit=10)),
        )

    first_page, after_batch_one, roomy_pages = asyncio.run(sweep())
    assert first_page == [(1, ["c-0", "c-1", "c-2", "c-3"])]
    assert after_batch_one == [(2, ["c-4", "c-5", "c-6"])]
    assert roomy_pages == [(1, ["c-0", "c-1", "c-2", "c-3"]), (2, ["c-4", "c-5", "c-6"]), (3, ["c-7"])]


def test_refreshing_the_population_needs_an_admin_key(scorer):
    missing = scorer.post("/population/refresh", role=None)
    assert missing.status_code == 401 and "API key" in missing.json()["detail"]
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert scorer.post("/population/refresh", role="viewer").status_code == 403
    assert scorer.post("/population/refresh", role="admin").status_code == 200


def test_a_scorer_that_stays_up_through_a_broker_restart_takes_the_events_after_it(tmp_path):
    """The embedded broker comes back empty: the scorer's positions are past the new log's end,
    and the events published after the restart must still reach it without restarting it."""
    stack = start_stack(tmp_path)
    prefix = f"empty{uuid.uuid4().hex[:6]}."
    settings = stack.settings(topic_prefix=prefix)
    ensure_topics(settings)
    db_prefix = f"t{uuid.uuid4().hex[:8]}_"
    scorer = start_service(
        stack, "scoring", db_prefix=db_prefix, CRM_TOPIC_PREFIX=prefix, CRM_DATA_DIR=str(tmp_path / "faust")
    )
    profiles = blocking_client(stack.mongo_url)[db_prefix + "profiles"]["profiles"]
    producer = EventProducer(settings, "test-shop")
    try:
        before = [f"before-{n:03d}" for n in range(60)]
        producer.publish([paid(c, f"{c}-o", NOW - timedelta(days=3)) for c in before])
        until(lambda: profiles.count_documents({}), lambda n: n == len(before), timeout=60)
        stack.broker.stop()
        stack.start_broker()
        ensure_topics(settings)
        # Fewer events than before: every partition's new log ends below the old positions.
        after = [f"after-{n:03d}" for n in range(6)]
        producer.publish([paid(c, f"{c}-o", NOW - timedelta(days=1)) for c in after])
        until(
            lambda: profiles.count_documents({"_id": {"$in": after}}),
            lambda n: n == len(after),
            timeout=60,
        )
    finally:
        producer.close()
        scorer.stop()
        stack.stop()
