"""Scorer throughput, end to end (broker to profile written), beside same-run baselines: a raw
aiokafka consumer, a faust agent that does nothing, a naive agent with one database update per
event, and the database's own ceiling: unordered bulk upserts of real profile documents with
the scorer's indexes (what the scorer has to write), beside flat documents of the same size (the
database's best case). Also the scoring fold alone (pure functions) beside the same fold at a
baseline commit (bench/scoring_fold.py), and freshness under a steady live load.

Sizes: BENCH_CUSTOMERS (default 100,000) and BENCH_EVENTS (default 1,000,000)."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaProducer
from pymongo import ReplaceOne

from services.common.clock import to_rfc3339
from services.common.contracts import build_event
from services.common.kafka import ensure_topics
from services.common.mongo import async_client, ensure_indexes
from services.scoring import facts as F
from services.scoring import population as population_math
from services.scoring import scores as S
from services.scoring import store as ST
from services.scoring.metrics import collect_less_often
from services.scoring.profile import build
from services.stack.harness import ROOT, start_service

from .profiles_http import profile_document
from .report import Row, show
from .stack import start_bench_stack

CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", 100_000))
EVENTS = int(os.environ.get("BENCH_EVENTS", 1_000_000))
NAIVE_EVENTS = min(EVENTS, 10_000)  # one awaited write per event: a sample is enough for its rate


def generate(now: datetime) -> list[tuple[bytes, bytes]]:
    """Paid orders (with their placement) spread over customers with a long-tailed activity.

    Pareto(2.0) weights give the concentration of real purchase data: the top 1 % of customers
    make 10 % of the orders, as in CDNOW (10.9 %; its busiest customer bought 217 times). A
    heavier tail (Pareto 1.2: top 1 % with 38 %, one customer with 9,434 orders) puts the same
    few huge profiles in every batch, which measures those customers rather than the scorer."""
    rng = random.Random(7)
    weights = [rng.paretovariate(2.0) for _ in range(CUSTOMERS)]
    customers = rng.choices(range(CUSTOMERS), weights=weights, k=EVENTS // 2)
    out = []
    for k, c in enumerate(customers):
        customer = f"b-{c:06d}"
        at = now - timedelta(days=rng.uniform(1, 700))
        stamp = to_rfc3339(at)
        amount = rng.randint(500, 60_000)
        placed = build_event(
            "crm.order.placed",
            {
                "order_id": f"o-{k}",
                "customer_id": customer,
                "amount_cents": amount,
                "discount_cents": 0,
                "currency": "CNY",
                "channel": "app",
                "promised_delivery_date": None,
                "placed_at": stamp,
                "items": [
                    {"sku": "S-1", "category": "shoes", "brand": "Acme", "qty": 1, "unit_price_cents": amount}
                ],
            },
            source="/bench",
            time=at,
            validate=False,
        )
        paid = build_event(
            "crm.order.paid",
            {
                "order_id": f"o-{k}",
                "customer_id": customer,
                "amount_cents": amount,
                "currency": "CNY",
                "paid_at": stamp,
            },
            source="/bench",
            time=at,
            validate=False,
        )
        out += [(customer.encode(), orjson.dumps(placed)), (customer.encode(), orjson.dumps(paid))]
    return out


async def raw_consumer(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    seen, started = 0, None
    while seen < n:
        batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
        for records in batches.values():
            started = started or time.perf_counter()
            for record in records:
                orjson.loads(record.value)
            seen += len(records)
    await consumer.stop()
    return n / (time.perf_counter() - started)


def faust_baseline(mode: str, stack, topic: str, n: int, workdir) -> float:
    env = {
        **os.environ,
        "MODE": mode,
        "BROKER": stack.bootstrap,
        "TOPIC": topic,
        "N": str(n),
        "MONGO": stack.mongo_url,
        "DB": f"bench_{mode}_{uuid.uuid4().hex[:6]}",
        "DATADIR": str(workdir / mode),
        "PYTHONPATH": str(ROOT),
    }
    (workdir / mode).mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "bench.faust_agents", "worker", "-l", "warn"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    found = re.search(r"RATE ([0-9.]+)", done.stderr)
    if not found:
        raise RuntimeError(f"{mode} agent: {done.stderr[-2000:]}")
    return float(found.group(1))


async def database_ceiling(mongo_url: str, docs: list[dict], indexes: bool) -> float:
    """Unordered bulk upserts, 1,000 a round trip, no scoring: `docs` written as they are (with
    the scorer's profile indexes when `indexes`), docs/s."""
    db = async_client(mongo_url)[f"bench_ceiling_{uuid.uuid4().hex[:6]}"]
    if indexes:
        await ensure_indexes(db, {"profiles": ST.INDEXES["profiles"]})
    started = time.perf_counter()
    for start in range(0, len(docs), 1000):
        await db.profiles.bulk_write(
            [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs[start : start + 1000]],
            ordered=False,
        )
    return len(docs) / (time.perf_counter() - started)


def ceiling_documents(n: int = 20_000) -> tuple[list[dict], list[dict]]:
    """Real profile documents (every score, encoded facts: what the scorer writes) and flat
    documents of the same size in bytes (one text field and a few small ones), the database's
    best case for that much data."""
    population = S.Population()
    profiles = [profile_document(k, population) for k in range(n)]
    size = sum(len(orjson.dumps(d, default=str)) for d in profiles[:1000]) // 1000
    flat = [
        {"_id": d["_id"], "blob": "x" * size, "rfm": {"r": 3, "f": 4, "m": 5}, "value": {"clv": 1234}}
        for d in profiles
    ]
    return profiles, flat


def fitted_population(records: list[tuple[bytes, bytes]], now: datetime) -> S.Population:
    """What the population job would have fitted on the whole generated history (the scorer
    folds with it; the defaults are only for a cold start)."""
    by_customer: dict[str, list[dict]] = defaultdict(list)
    for _, value in records:
        event = orjson.loads(value)
        by_customer[event["subject"]].append(event)
    rows = []
    for facts in F.fold(by_customer, {}, now).values():
        p = S.summarize(facts, now)
        if p.count:
            rows.append(population_math.row(p))
    return population_math.compute(rows, now, S.Population())


async def store_population(mongo_url: str, db_name: str, population: S.Population) -> None:
    """What the population job keeps in the database: the scorer starts with it, as a
    running platform does, instead of the cold-start defaults (under which every customer's
    first purchase is worth keeping and most of them would warn)."""
    client = async_client(mongo_url)
    try:
        await ST.ProfileStore(client[db_name]).save_population(population, 0.0)
    finally:
        client.close()


def fold_alone(
    records: list[tuple[bytes, bytes]], now: datetime, population: S.Population, sample: int = 100_000
) -> float:
    """The scorer's fold as it runs per batch, without I/O and under the scorer's collector
    settings: events grouped by customer and folded into facts, batch model values, profiles
    with their signals."""
    events = [orjson.loads(value) for _, value in records[:sample]]
    before = collect_less_often()
    try:
        started = time.perf_counter()
        for start in range(0, len(events), 1000):
            by_customer: dict[str, list[dict]] = defaultdict(list)
            for event in events[start : start + 1000]:
                by_customer[event["subject"]].append(event)
            folded = F.fold(by_customer, {}, now)
            summaries = [S.summarize(f, now) for f in folded.values()]
            scored = S.scored(summaries, S.values(summaries, now, population), population)
            for f, model in zip(folded.values(), scored, strict=True):
                build(f, now, population, None, model)
        return len(events) / (time.perf_counter() - started)
    finally:
        gc.set_threshold(*before)


def counter_total(scoring_url: str, name: str) -> float:
    """A counter summed over its labels, from the scorer's /metrics."""
    text = httpx.get(f"{scoring_url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", text, re.M))


def processed(scoring_url: str) -> float:
    return counter_total(scoring_url, "crm_scoring_events_processed_total")


def freshness_quantiles(scoring_url: str) -> tuple[float, float]:
    """p50 and p99 from the freshness histogram's buckets (upper bounds)."""
    text = httpx.get(f"{scoring_url}/metrics", timeout=10).text
    buckets = [
        (float("inf") if le == "+Inf" else float(le), float(v))
        for le, v in re.findall(
            r'^crm_scoring_freshness_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', text, re.M
        )
    ]
    total = buckets[-1][1] if buckets else 0

    def q(p: float) -> float:
        return next((le for le, count in buckets if count >= p * total), float("nan"))

    return q(0.5), q(0.99)


def main() -> None:
    from .scoring_fold import fold_rows  # it imports this module

    now = datetime.now(UTC)
    stack = start_bench_stack()
    prefix = f"bsc{uuid.uuid4().hex[:6]}."
    settings = stack.settings(topic_prefix=prefix)
    ensure_topics(settings)
    topic = prefix + "crm.orders.v1"
    try:
        records = generate(now)
        producer = KafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=10, batch_size=512 * 1024)
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush()
        n = len(records)
        raw = asyncio.run(raw_consumer(stack.bootstrap, topic, n))
        noop = faust_baseline("noop", stack, topic, n, stack.workdir)
        naive = faust_baseline("naive", stack, topic, NAIVE_EVENTS, stack.workdir)
        profile_docs, flat_docs = ceiling_documents()
        ceiling_docs = asyncio.run(database_ceiling(stack.mongo_url, profile_docs, indexes=True))
        ceiling_flat = asyncio.run(database_ceiling(stack.mongo_url, flat_docs, indexes=False))
        population = fitted_population(records, now)
        fold = fold_rows(records, now, population)
        asyncio.run(store_population(stack.mongo_url, settings.db_name("profiles"), population))

        scoring = start_service(
            stack,
            "scoring",
            CRM_TOPIC_PREFIX=prefix,
            CRM_DATA_DIR=str(stack.workdir / "ours"),
            CRM_POPULATION_SECONDS="3600",
            CRM_SCORING_REVIEW_SECONDS="3600",
        )
        started = None
        while (done := processed(scoring.url)) < n:
            if done and started is None:
                started = time.perf_counter() - 0.5
            time.sleep(0.5)
        elapsed = time.perf_counter() - (started or time.perf_counter())
        ours = n / elapsed
        writes = counter_total(scoring.url, "crm_scoring_profile_writes_total") / elapsed

        live_producer = KafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=1)
        rng = random.Random(3)
        for second in range(20):  # a steady 1,000 events/s of live traffic
            tick = time.perf_counter()
            for k in range(1000):
                at = datetime.now(UTC)
                customer = f"b-{rng.randrange(CUSTOMERS):06d}"
                event = build_event(
                    "crm.interaction.recorded",
                    {
                        "interaction_id": f"i-{second}-{k}",
                        "customer_id": customer,
                        "kind": "page_view",
                        "occurred_at": to_rfc3339(at),
                    },
                    source="/bench",
                    time=at,
                    validate=False,
                )
                live_producer.send(
                    topic.replace("orders", "interactions"), key=customer.encode(), value=orjson.dumps(event)
                )
            live_producer.flush()
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - tick)))
        time.sleep(3)
        p50, p99 = freshness_quantiles(scoring.url)
        scoring.stop()
        floor = min(noop, ceiling_docs)
        show(
            f"Scorer, {n:,} events over {CUSTOMERS:,} customers, embedded stack",
            [
                Row(
                    "scoring",
                    "scorer end to end (broker to profile written)",
                    ours,
                    "events/s",
                    "naive agent (target 5x)",
                    naive,
                ),
                Row(
                    "scoring",
                    "scorer end to end",
                    ours,
                    "events/s",
                    "min(faust no-op, database ceiling) (target 0.8x)",
                    floor,
                ),
                Row("scoring", "scorer end to end", ours, "events/s", "raw aiokafka consumer", raw),
                Row("scoring", "faust no-op agent", noop, "events/s", "raw aiokafka consumer", raw),
                Row(
                    "scoring",
                    "scorer profile writes",
                    writes,
                    "docs/s",
                    "database ceiling: profile docs, scorer indexes",
                    ceiling_docs,
                ),
                Row(
                    "scoring",
                    "database ceiling: profile docs, scorer indexes",
                    ceiling_docs,
                    "docs/s",
                    "flat docs of the same size, no index",
                    ceiling_flat,
                ),
                *fold,
                Row(
                    "scoring",
                    "freshness p50 at 1,000 events/s",
                    p50,
                    "s (bucket bound)",
                    "p99",
                    p99,
                    higher_is_better=False,
                ),
            ],
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
