"""Every report under concurrent load with 100,000 customers and 1,000,000 orders in the
reports' read model, beside `/healthz` of the same process as the same-run baseline.

The read model is generated and written directly into `crm_reports` (the consumers' write
path is one upsert per event, measured with the other consumers); the service then builds its
snapshot once, as its refresh job does, and every request is answered from it. Sizes:
BENCH_REPORT_CUSTOMERS, BENCH_REPORT_ORDERS, BENCH_REQUESTS."""

from __future__ import annotations

import asyncio
import os
import random
import time
from datetime import UTC, datetime, timedelta

from pymongo import InsertOne

from services.common.mongo import blocking_client
from services.reports import store as S
from services.stack.harness import start_service, until

from .profiles_http import load
from .report import Row, percentile, show
from .stack import start_bench_stack

CUSTOMERS = int(os.environ.get("BENCH_REPORT_CUSTOMERS", 100_000))
ORDERS = int(os.environ.get("BENCH_REPORT_ORDERS", 1_000_000))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", 2000))
NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(days=3 * 365)
CATEGORIES = ["shoes", "bags", "books", "toys", "beauty", "home", "sports", "food", "phones", "garden"]
BRANDS = [f"brand-{b}" for b in range(40)]
SEGMENTS = ["Champions", "Loyal", "Potential Loyalist", "New", "Promising", "Need Attention", "At Risk"]
SEGMENTS += ["About to Sleep", "Can't Lose Them", "Hibernating"]


def epoch(when: datetime) -> int:
    return int(when.timestamp())


def generated(k: int, rng: random.Random) -> dict[str, list[dict]]:
    """One customer's registration, scores, and a share of the orders; some returns, surveys,
    complaints, segment moves and warnings."""
    customer = f"c-{k:07d}"
    registered = START + timedelta(days=rng.uniform(0, 3 * 365 - 30))
    out: dict[str, list[dict]] = {name: [] for name in (S.CUSTOMERS, S.SCORES, S.ORDERS, S.ADJUSTMENTS)}
    out |= {S.SURVEYS: [], S.COMPLAINTS: [], S.MOVES: [], S.WARNINGS: []}
    out[S.CUSTOMERS].append(
        {
            "_id": customer,
            "gender": rng.choice(["female", "male", "other", None]),
            "birth_date": f"{rng.randint(1950, 2006)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "city": rng.choice(["Shanghai", "Beijing", "Hangzhou", "Chengdu", "Wuhan", "Xi'an"]),
            "city_tier": rng.randint(1, 5),
            "channel": rng.choice(["web", "app", "store", "phone"]),
            "marketing_consent": rng.random() < 0.5,
            "registered_at": epoch(registered),
        }
    )
    out[S.SCORES].append(
        {
            "_id": customer,
            "segment": rng.choice(SEGMENTS),
            "lifecycle_stage": rng.choice(["exploration", "growth", "stable", "decline", "lost"]),
            "abc_class": rng.choice("AABBBCCCCC"),
            "tier": rng.choice(["member", "member", "silver", "gold", "platinum"]),
            "clv_12m_cents": rng.randint(0, 200_000),
            "churn_risk": round(rng.random(), 3),
            "rfm_code": f"{rng.randint(1, 5)}{rng.randint(1, 5)}{rng.randint(1, 5)}",
        }
    )
    count = max(1, round(rng.expovariate(CUSTOMERS / ORDERS)))
    span = max((NOW - registered).total_seconds(), 1)
    for n in range(count):
        order_id = f"o-{k}-{n}"
        items = [
            {
                "sku": f"sku-{rng.randrange(500)}",
                "category": rng.choice(CATEGORIES),
                "brand": rng.choice(BRANDS),
                "cents": rng.randint(500, 30_000),
            }
            for _ in range(rng.choice([1, 1, 2, 3]))
        ]
        paid = sum(i["cents"] for i in items)
        out[S.ORDERS].append(
            {
                "_id": order_id,
                "customer_id": customer,
                "items": items,
                "paid_cents": paid,
                "paid_at": epoch(registered) + int(rng.uniform(0, span)),
            }
        )
        if rng.random() < 0.05:
            item = items[0]
            out[S.ADJUSTMENTS].append(
                {
                    "_id": f"return:r-{order_id}",
                    "order_id": order_id,
                    "kind": "return",
                    "cents": item["cents"],
                    "reason": "too small",
                    "items": [[item["sku"], item["cents"]]],
                }
            )
    if rng.random() < 0.1:
        complaint = f"k-{k}"
        out[S.COMPLAINTS].append(
            {
                "_id": complaint,
                "customer_id": customer,
                "category": rng.choice(["product", "logistics", "service"]),
            }
        )
        out[S.SURVEYS].append(
            {"_id": f"s-{k}", "customer_id": customer, "complaint_id": complaint, "kind": "csat",
             "scores": {"overall": rng.randint(1, 5)}, "recommend": None,
             "submitted_at": epoch(registered) + int(rng.uniform(0, span))}
        )  # fmt: skip
    if rng.random() < 0.2:
        out[S.SURVEYS].append(
            {"_id": f"g-{k}", "customer_id": customer, "complaint_id": None, "kind": "general",
             "scores": {d: rng.randint(1, 5) for d in ("website", "product", "payment", "service", "logistics", "overall")},
             "recommend": rng.randint(0, 10), "submitted_at": epoch(registered) + int(rng.uniform(0, span))}
        )  # fmt: skip
    previous = "Prospect"
    for n in range(rng.randint(1, 3)):
        target = rng.choice(SEGMENTS)
        at = epoch(registered) + int(span * (n + 1) / 4)
        out[S.MOVES].append(
            {"_id": f"m-{k}-{n}", "customer_id": customer, "at": at, "from": previous, "to": target}
        )
        previous = target
    if rng.random() < 0.05:
        warned = epoch(registered) + int(rng.uniform(0, span))
        closed = warned + 86400 * rng.randint(1, 60) if rng.random() < 0.6 else None
        out[S.WARNINGS].append(
            {"_id": f"w-{k}", "customer_id": customer, "warned_at": warned, "closed_at": closed,
             "reasons": rng.sample(["silence", "open_complaints", "low_csat", "falling_frequency"], 2),
             "actions": rng.sample(["call", "coupon", "email"], rng.randint(0, 2)),
             "outcome": rng.choice(["retained", "lost", "recovered"]) if closed else None,
             "risk": round(rng.uniform(0.7, 1.0), 3), "clv_cents": rng.randint(10_000, 300_000)}
        )  # fmt: skip
    return out


def load_read_model(mongo_url: str, db_name: str) -> tuple[float, int]:
    db = blocking_client(mongo_url)[db_name]
    started = time.perf_counter()
    rng = random.Random(11)
    pending: dict[str, list] = {}
    orders = 0
    for k in range(CUSTOMERS):
        for name, docs in generated(k, rng).items():
            pending.setdefault(name, []).extend(InsertOne(d) for d in docs)
            if name == S.ORDERS:
                orders += len(docs)
        for name, ops in pending.items():
            if len(ops) >= 5000:
                db[name].bulk_write(ops, ordered=False)
                pending[name] = []
    for name, ops in pending.items():
        if ops:
            db[name].bulk_write(ops, ordered=False)
    return time.perf_counter() - started, orders


QUESTIONS = {
    "composition by segment": "/reports/composition?by=segment",
    "composition gender x age band": "/reports/composition?by=gender,age_band",
    "contribution": "/reports/contribution?",
    "retention": "/reports/retention?",
    "rfm grid": "/reports/rfm?",
    "segment moves": "/reports/segment-moves?",
    "churn": "/reports/churn?",
    "products by tier": "/reports/products?by=tier",
    "next categories": "/reports/products/next?category=shoes",
    "satisfaction": "/reports/satisfaction?",
    "seasonality + forecast": "/reports/seasonality?",
    "composition csv": "/reports/composition?by=city,channel&format=csv",
}


def paths(rng: random.Random, count: int) -> dict[str, list[str]]:
    """Each question twice: over a named period (last 365 days, answered when the snapshot
    was built, except the crossed composition, computed on the request), and over periods
    starting on a different random second of the last three years each time (computed on
    the request from the monthly running totals)."""

    def since() -> str:
        return (NOW - timedelta(seconds=rng.randrange(3 * 365 * 86400))).strftime("%Y-%m-%dT%H:%M:%SZ")

    out = {}
    for name, path in QUESTIONS.items():
        glue = "" if path.endswith("?") else "&"
        out[f"{name}, last 365 days"] = [f"{path}{glue}period=last_365_days"] * count
        out[f"{name}, any period"] = [f"{path}{glue}from={since()}" for _ in range(count)]
    return out


def main() -> None:
    stack = start_bench_stack()
    reports = None
    try:
        db_prefix = "bench_"
        seconds, orders = load_read_model(stack.mongo_url, db_prefix + "reports")
        print(f"{CUSTOMERS:,} customers and {orders:,} orders written to the read model in {seconds:.1f} s")
        started = time.perf_counter()
        # No profiles API here (no key): the generated scores stand for the pulled ones. One
        # build, then none while measuring (a rebuild runs beside requests in production).
        reports = start_service(stack, "reports", db_prefix=db_prefix, CRM_REPORTS_REFRESH_SECONDS="86400")
        headers = stack.headers("viewer")
        built = until(
            lambda: reports.get("/reports/rfm", role="viewer"), lambda r: r.status_code == 200, timeout=3600
        )
        print(f"snapshot built in {time.perf_counter() - started:.1f} s: {built.json()['freshness']}")
        _, base_lat = asyncio.run(load(reports.url, ["/healthz"] * REQUESTS, headers))
        rows: list[Row] = []
        for name, asked in paths(random.Random(5), max(REQUESTS // 10, 100)).items():
            _, lat = asyncio.run(load(reports.url, asked, headers))
            rows += [
                Row("reports_http", f"{name} p50", percentile(lat, 50) * 1000, "ms", "/healthz",
                    percentile(base_lat, 50) * 1000, higher_is_better=False),
                Row("reports_http", f"{name} p99", percentile(lat, 99) * 1000, "ms", "/healthz",
                    percentile(base_lat, 99) * 1000, higher_is_better=False),
            ]  # fmt: skip
        show(
            f"Reports under load: {CUSTOMERS:,} customers, {orders:,} orders, 16 concurrent",
            rows,
        )
        # the refresh job's next build: only what was written since the last read is read
        started = time.perf_counter()
        rebuilt = reports.post("/reports/refresh", role="admin", timeout=3600)
        print(f"rebuilt with nothing new in {time.perf_counter() - started:.1f} s: {rebuilt.json()}")
    finally:
        if reports is not None:
            reports.stop()
        stack.stop()


if __name__ == "__main__":
    main()
