"""Reading profiles under concurrent load: `GET /customers/{id}` and the 360 view with 100,000
profiles stored, beside `/healthz` of the same process as the same-run baseline. The 360 view
is measured twice: from its read model (one read) and read through to orders, complaints and
loyalty (`?source=services`, five calls to three services).

The profiles are real scorer documents: built by the scorer's own pure functions from
generated facts, then bulk-inserted (the scorer's write path is measured in bench/scoring.py).
The read model's documents are folded by the profiles service's own rule (activity.py) from
each customer's generated registration, orders, points and complaints.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from datetime import UTC, datetime, timedelta

import httpx
from pymongo import InsertOne

from services.common.mongo import blocking_client
from services.profiles import activity
from services.profiles.store import ACTIVITY, activity_document
from services.scoring import facts as F
from services.scoring.domain import partition_of
from services.scoring.profile import build
from services.scoring.scores import Population
from services.scoring.store import encode_facts
from services.stack.harness import start_platform

from .report import Row, percentile, show
from .stack import start_bench_stack

PROFILES = int(os.environ.get("BENCH_PROFILES", 100_000))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", 2000))
CONCURRENCY = 16
NOW = datetime.now(UTC)


def history(k: int) -> tuple[str, datetime, list[tuple[str, datetime, int]]]:
    """Customer k's registration and paid orders (id, time, cents): the same for both documents."""
    rng = random.Random(k)
    registered = NOW - timedelta(days=rng.randint(30, 900))
    orders = [
        (
            f"o-{k}-{n}",
            registered + timedelta(days=rng.uniform(0, (NOW - registered).days)),
            rng.randint(1000, 40000),
        )
        for n in range(rng.choice([0, 1, 1, 2, 3, 5, 8]))
    ]
    return f"c-{k:07d}", registered, orders


def profile_document(k: int, population: Population) -> dict:
    rng = random.Random(k)
    customer, registered, orders = history(k)
    facts = F.empty(customer)
    F.apply(
        facts,
        {
            "type": "crm.customer.registered",
            "time": registered.isoformat(),
            "data": {
                "customer_id": customer,
                "name": f"Customer {k}",
                "email": f"c{k}@example.com",
                "city": rng.choice(["Hangzhou", "Shanghai", "Chengdu", "Wuhan"]),
                "city_tier": rng.randint(1, 4),
                "channel": "app",
                "marketing_consent": rng.random() < 0.5,
                "registered_at": registered.isoformat(),
            },
        },
    )
    for order_id, at, cents in orders:
        F.apply(
            facts,
            {
                "type": "crm.order.paid",
                "time": at.isoformat(),
                "data": {"order_id": order_id, "amount_cents": cents, "currency": "CNY"},
            },
        )
    profile, _ = build(facts, NOW, population, None)
    return {
        "_id": customer,
        **profile,
        "facts": encode_facts(facts),
        "pending": [],
        "pending_seq": 0,
        "partition": partition_of(customer, 12),
        "next_review_ts": (NOW + timedelta(days=1)).timestamp(),
        "updated_at": NOW,
        "scored_at": NOW,
        "event_time": NOW,
    }


def read_model_document(k: int) -> dict:
    """What the read model holds after this customer's events (a complaint for one in five)."""
    customer, registered, orders = history(k)

    def event(kind: str, at: datetime, **data) -> dict:
        return {"type": kind, "time": at.isoformat(), "data": {"customer_id": customer, **data}}

    events = [event("crm.customer.registered", registered, registered_at=registered.isoformat())]
    balance = 0
    for n, (order_id, at, cents) in enumerate(orders):
        balance += cents // 100
        item = {"sku": f"SKU-{n}", "category": "shoes", "brand": "Acme", "qty": 1, "unit_price_cents": cents}
        events += [
            event(
                "crm.order.placed",
                at,
                order_id=order_id,
                items=[item],
                amount_cents=cents,
                discount_cents=0,
                currency="CNY",
                channel="app",
                placed_at=at.isoformat(),
            ),
            event(
                "crm.order.paid",
                at,
                order_id=order_id,
                amount_cents=cents,
                currency="CNY",
                paid_at=at.isoformat(),
            ),
            event(
                "crm.loyalty.points_earned",
                at,
                entry_id=f"le-{order_id}",
                points=cents // 100,
                reason="purchase",
                order_id=order_id,
                expires_at=(at + timedelta(days=365)).isoformat(),
                balance=balance,
                earned_at=at.isoformat(),
            ),
        ]
    if orders and k % 5 == 0:
        order_id, at, _ = orders[-1]
        opened = at + timedelta(days=2)
        events.append(
            event(
                "crm.complaint.opened",
                opened,
                complaint_id=f"cp-{k}",
                category="logistics",
                severity="medium",
                channel="web",
                order_id=order_id,
                opened_at=opened.isoformat(),
                first_response_due=(opened + timedelta(hours=8)).isoformat(),
                resolution_due=(opened + timedelta(days=3)).isoformat(),
                vip=False,
            )
        )
    return activity_document({**activity.fold(None, customer, events, "[erased]"), "version": 1})


def load_profiles(mongo_url: str, db_name: str, count: int = PROFILES) -> float:
    population = Population()
    db = blocking_client(mongo_url)[db_name]
    started = time.perf_counter()
    for collection, document in (
        (db["profiles"], lambda k: profile_document(k, population)),
        (db[ACTIVITY], read_model_document),
    ):
        batch = []
        for k in range(count):
            batch.append(InsertOne(document(k)))
            if len(batch) == 5000:
                collection.bulk_write(batch, ordered=False)
                batch = []
        if batch:
            collection.bulk_write(batch, ordered=False)
    return time.perf_counter() - started


async def load(url: str, paths: list[str], headers: dict[str, str]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(paths)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY)
    ) as client:
        for path in paths[:50]:  # warm up
            await client.get(path)

        async def worker() -> None:
            for path in queue:
                started = time.perf_counter()
                answer = await client.get(path)
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return len(paths) / elapsed, latencies


def main() -> None:
    stack = start_bench_stack()
    # The scorer's timers at their production pace: its population job reads every profile.
    platform = start_platform(
        stack, stack.workdir / "faust", CRM_POPULATION_SECONDS="60", CRM_SCORING_REVIEW_SECONDS="60"
    )
    try:
        profiles = platform["profiles"]
        seconds = load_profiles(stack.mongo_url, profiles.env["CRM_DB_PREFIX"] + "profiles")
        print(f"{PROFILES:,} profiles and their read-model documents stored in {seconds:.1f} s")
        headers = stack.headers("viewer")
        rng = random.Random(7)
        ids = [f"c-{rng.randrange(PROFILES):07d}" for _ in range(REQUESTS)]
        base_rate, base_lat = asyncio.run(load(profiles.url, ["/healthz"] * REQUESTS, headers))
        rate, lat = asyncio.run(load(profiles.url, [f"/customers/{c}" for c in ids], headers))
        rate360, lat360 = asyncio.run(load(profiles.url, [f"/customers/{c}/360" for c in ids], headers))
        through = [f"/customers/{c}/360?source=services" for c in ids]
        rate_through, lat_through = asyncio.run(load(profiles.url, through, headers))
        rows = []
        for name, r, latencies in (
            ("GET /customers/{id}", rate, lat),
            ("GET /customers/{id}/360 (read model)", rate360, lat360),
            ("GET /customers/{id}/360?source=services (5 calls)", rate_through, lat_through),
        ):
            rows += [
                Row("profiles_http", f"{name} throughput", r, "req/s", "/healthz", base_rate),
                Row(
                    "profiles_http",
                    f"{name} p50 latency",
                    percentile(latencies, 50) * 1000,
                    "ms",
                    "/healthz",
                    percentile(base_lat, 50) * 1000,
                    higher_is_better=False,
                ),
                Row(
                    "profiles_http",
                    f"{name} p99 latency",
                    percentile(latencies, 99) * 1000,
                    "ms",
                    "/healthz",
                    percentile(base_lat, 99) * 1000,
                    higher_is_better=False,
                ),
            ]
        show(
            f"Profiles under load: {PROFILES:,} profiles, {REQUESTS} requests, {CONCURRENCY} concurrent", rows
        )
    finally:
        for service in platform.values():
            service.stop()
        stack.stop()


if __name__ == "__main__":
    main()
