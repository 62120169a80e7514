"""The scorer under faults (issue 18, "Nothing lost, nothing doubled"): a write that fails
while a later batch for the same customer waits, a worker whose partitions moved, a batch that
cannot be staged, two workers and one killed."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from datetime import timedelta

import pytest
from aiokafka.structs import ConsumerRecord
from kafka import KafkaProducer

from services.common.contracts import encode
from services.common.kafka import EventProducer, ensure_topics
from services.common.mongo import Mongo, blocking_client, ensure_indexes
from services.scoring import store
from services.scoring.service import Scorer
from services.stack.embedded import free_port, mongo_child
from services.stack.harness import start_service, until
from tests.conftest import NOW
from tests.integration.test_scoring import paid

OFFSETS = itertools.count()


def delivered(prefix, *events):
    """Events as the broker hands them to the scorer's agent."""
    records = []
    for event in events:
        key, value = event["subject"].encode(), encode(event)
        records.append(
            ConsumerRecord(
                prefix + "crm.orders.v1", 0, next(OFFSETS), 0, 0, key, value, None, len(key), len(value), []
            )
        )
    return records


@pytest.fixture
def own_database(tmp_path):
    """A database of the test's own, to stop and start without disturbing other tests."""
    mongo = mongo_child(free_port(), tmp_path / "mongo", tmp_path / "logs")
    mongo.start()
    mongo.wait_ready(30)
    yield mongo
    mongo.stop()


@pytest.fixture
def worker_settings(stack, own_database):
    prefix = f"f{uuid.uuid4().hex[:6]}."
    settings = stack.settings(topic_prefix=prefix, db_prefix=f"t{uuid.uuid4().hex[:8]}_")
    ensure_topics(settings)
    return settings.model_copy(update={"mongo_url": f"mongodb://127.0.0.1:{own_database.port}"})


async def scorer_worker(settings) -> Scorer:
    """The scorer's use cases as one worker's agent runs them, on the real database."""
    mongo = await Mongo.open(settings, "profiles")
    await ensure_indexes(mongo.db, store.INDEXES)
    profiles = store.ProfileStore(mongo.db)
    await profiles.version_profiles()
    scorer = Scorer(profiles, settings)
    await scorer.load_population()
    return scorer


def test_a_write_retried_after_the_database_was_away_does_not_overwrite_a_later_batch(
    worker_settings, own_database
):
    """Batch one's write fails (the database is gone) while batch two, for the same customer,
    waits: two must not land first and then be overwritten by one's retry."""
    customer = f"r-{uuid.uuid4().hex[:8]}"
    prefix = worker_settings.topic_prefix

    async def scenario():
        scorer = await scorer_worker(worker_settings)
        first = await scorer.stage_batch(
            delivered(prefix, paid(customer, "o-1", NOW - timedelta(days=9))), "t"
        )
        second = await scorer.stage_batch(
            delivered(prefix, paid(customer, "o-2", NOW - timedelta(days=2))), "t"
        )
        own_database.kill()
        writes = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
        await asyncio.sleep(3)
        await asyncio.to_thread(own_database.start)
        await asyncio.to_thread(own_database.wait_ready, 30)
        await asyncio.wait_for(asyncio.gather(*writes), 60)
        return (await scorer.store.load([customer]))[customer]

    profile = asyncio.run(scenario())
    assert profile["purchases"]["count"] == 2


def test_a_worker_whose_partitions_moved_cannot_overwrite_the_new_owner(worker_settings):
    """The old owner staged a batch before its partitions were revoked; the new owner read the
    same events again from the last commit, and one more, and wrote first. The old owner's late
    write must change nothing."""
    customer = f"m-{uuid.uuid4().hex[:8]}"
    prefix = worker_settings.topic_prefix
    first = paid(customer, "o-1", NOW - timedelta(days=9))
    second = paid(customer, "o-2", NOW - timedelta(days=2))

    async def scenario():
        old_owner, new_owner = await scorer_worker(worker_settings), await scorer_worker(worker_settings)
        late = await old_owner.stage_batch(delivered(prefix, first), "old")
        await (await new_owner.stage_batch(delivered(prefix, first, second), "new"))
        await late
        return (await new_owner.store.load([customer]))[customer]

    profile = asyncio.run(scenario())
    assert profile["purchases"]["count"] == 2


def test_a_batch_that_cannot_be_staged_is_retried_and_readiness_reports_the_stall(stack, tmp_path):
    """A malformed record larger than the scorer's producer sends cannot be dead-lettered, so
    its batch fails before its write: the batch is tried again, never acknowledged, and
    /readyz must say the consumer is stalled instead of staying green."""
    prefix = f"stl{uuid.uuid4().hex[:6]}."
    ensure_topics(stack.settings(topic_prefix=prefix))
    scorer = start_service(
        stack,
        "scoring",
        CRM_TOPIC_PREFIX=prefix,
        CRM_SCORING_STALL_SECONDS="3",
        CRM_DATA_DIR=str(tmp_path / "faust"),
    )
    customer = f"s-{uuid.uuid4().hex[:8]}"
    raw = KafkaProducer(bootstrap_servers=stack.bootstrap, max_request_size=4_000_000)
    raw.send(prefix + "crm.orders.v1", key=customer.encode(), value=b"\xff" + b"x" * 1_500_000)
    raw.flush()
    raw.close()
    try:
        stalled = until(lambda: scorer.get("/readyz", role=None), lambda r: r.status_code == 503, timeout=60)
        assert "stalled" in stalled.json()["reasons"]["consumer"]
        assert stalled.json()["checks"] == {"database": True, "broker": True, "consumer": False}
    finally:
        scorer.stop()


def test_two_workers_one_killed_the_other_takes_its_partitions_and_the_population_job_runs_once(
    stack, tmp_path
):
    """Two scorer workers in one consumer group; one is killed mid-stream. The other takes its
    partitions and every customer ends with exact totals; the population job ran about once
    per interval across both workers, not once per worker."""
    prefix = f"two{uuid.uuid4().hex[:6]}."
    settings = stack.settings(topic_prefix=prefix)
    ensure_topics(settings)
    customers = [f"w-{n:03d}" for n in range(200)]
    rounds = 8
    expected = {c: (rounds, sum(1_000 + 10 * k + n for k in range(rounds))) for n, c in enumerate(customers)}
    db_prefix = f"t{uuid.uuid4().hex[:8]}_"
    interval = 1.0
    workers = [
        start_service(
            stack,
            "scoring",
            db_prefix=db_prefix,
            CRM_TOPIC_PREFIX=prefix,
            CRM_SCORING_BATCH="50",
            CRM_POPULATION_SECONDS=str(interval),
            CRM_DATA_DIR=str(tmp_path / f"faust-{k}"),
        )
        for k in range(2)
    ]
    db = blocking_client(stack.mongo_url)[db_prefix + "profiles"]
    producer = EventProducer(settings, "test-shop")

    def feed():
        for k in range(rounds):
            producer.publish(
                [
                    # all of a customer's orders on one day: no repeat buyers, so the population
                    # job keeps the default model (a fit on this uniform shop is degenerate)
                    paid(c, f"{c}-o{k}", NOW - timedelta(days=30 + n % 90, minutes=-k), 1_000 + 10 * k + n)
                    for n, c in enumerate(customers)
                ]
            )
            time.sleep(1.0)

    def population_runs():
        return (db.population.find_one({"_id": "refresh_lease"}) or {}).get("runs", 0)

    feeding = threading.Thread(target=feed)
    try:
        feeding.start()
        until(lambda: db.profiles.count_documents({}), lambda n: n > 0, timeout=60)
        runs_before, started = population_runs(), time.monotonic()
        time.sleep(6)
        runs, elapsed = population_runs() - runs_before, time.monotonic() - started
        assert 1 <= runs <= elapsed / interval + 1, (runs, elapsed)
        workers[0].child.kill()  # SIGKILL: no goodbye to the group, its batches in flight lost
        feeding.join()
        until(
            lambda: {
                d["_id"]: (d["purchases"]["count"], d["purchases"]["net_spend_cents"])
                for d in db.profiles.find({}, {"purchases": 1})
            },
            lambda found: found == expected,
            timeout=120,
        )
        runs_after = population_runs()
        until(population_runs, lambda n: n > runs_after, timeout=10)  # the survivor took the job on
    finally:
        feeding.join()
        producer.close()
        for worker in workers:
            worker.stop()
