"""The agent queue with 50,000 open cases: `GET /cases` by time left (the whole desk, a team,
an agent, a kind and state, an escalation level, newest first, and a second page), p50 and p99
under concurrent load beside `/healthz` of the same process in the same run.

The cases are built by the case rules (services/complaints/domain.py) and written straight
into `crm_complaints` as the store writes them (the write path is one transaction per change,
measured with the other writes). Sizes: BENCH_OPEN_CASES, BENCH_REQUESTS."""

from __future__ import annotations

import asyncio
import os
import random
import time
from datetime import UTC, datetime, timedelta

import httpx
from pymongo import InsertOne

from services.common.mongo import blocking_client
from services.complaints import domain, store
from services.stack.harness import start_service

from .profiles_http import load
from .report import Row, percentile, show
from .stack import start_bench_stack

OPEN_CASES = int(os.environ.get("BENCH_OPEN_CASES", 50_000))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", 2000))
NOW = datetime.now(UTC).replace(microsecond=0)
TEAMS = [f"team-{t}" for t in range(10)]
AGENTS = [f"agent-{a}" for a in range(200)]
CATEGORIES = ["product", "logistics", "payment", "service", "website", "other"]


def open_case(k: int, rng: random.Random, policy: domain.SlaPolicy) -> dict:
    kind = rng.choice(["inquiry", "inquiry", "complaint", "complaint", "suggestion", "praise"])
    at = NOW - timedelta(hours=rng.uniform(0, 72))
    case = domain.open_complaint(
        complaint_id=f"cs-{k:07d}",
        customer_id=f"c-{rng.randrange(OPEN_CASES * 2):07d}",
        category=rng.choice(CATEGORIES),
        severity=rng.choice(["low", "medium", "high", "critical"]) if kind == "complaint" else None,
        channel=rng.choice(["web", "app", "phone"]),
        order_id=None,
        description="Where is my parcel?",
        vip=rng.random() < 0.1,
        at=at,
        policy=policy,
        by="bench",
        kind=kind,
        team=rng.choice(TEAMS),
    ).complaint
    if rng.random() < 0.7:  # most are with an agent already
        case = domain.assign(
            case, at + timedelta(minutes=rng.uniform(1, 60)), rng.choice(AGENTS), "bench"
        ).complaint
    if kind != "praise" and rng.random() < 0.1:
        case = domain.escalate(case, case.history[-1]["at"], "bench", None).complaint
    return store.to_document(case, domain.next_check(case, policy, NOW), domain.due_at(case, policy))


def load_cases(mongo_url: str, db_name: str) -> float:
    db = blocking_client(mongo_url)[db_name]
    for model in store.INDEXES[store.COMPLAINTS]:
        db[store.COMPLAINTS].create_indexes([model])
    policy, rng = domain.SlaPolicy.default(), random.Random(21)
    started = time.perf_counter()
    batch = []
    for k in range(OPEN_CASES):
        batch.append(InsertOne(open_case(k, rng, policy)))
        if len(batch) == 5000:
            db[store.COMPLAINTS].bulk_write(batch, ordered=False)
            batch = []
    if batch:
        db[store.COMPLAINTS].bulk_write(batch, ordered=False)
    return time.perf_counter() - started


def main() -> None:
    stack = start_bench_stack()
    cases = None
    try:
        db_prefix = "bench_"
        seconds = load_cases(stack.mongo_url, db_prefix + "complaints")
        print(f"{OPEN_CASES:,} open cases written in {seconds:.1f} s")
        # The watcher would work through the backlog of breaches; the queue is measured alone.
        cases = start_service(stack, "complaints", db_prefix=db_prefix, CRM_SLA_WATCH_SECONDS="86400")
        headers = stack.headers("viewer")
        page = httpx.get(f"{cases.url}/cases?limit=50", headers=headers, timeout=60).json()
        paths = {
            "queue by time left": "/cases?limit=50",
            "a team's queue": "/cases?team=team-3&limit=50",
            "an agent's queue": "/cases?assignee=agent-7&limit=50",
            "inquiries assigned": "/cases?kind=inquiry&status=assigned&limit=50",
            "escalated to level 1": "/cases?level=1&limit=50",
            "newest first": "/cases?sort=newest&limit=50",
            "second page": f"/cases?limit=50&cursor={page['next_cursor']}",
        }
        _, base_lat = asyncio.run(load(cases.url, ["/healthz"] * REQUESTS, headers))
        rows: list[Row] = []
        for name, path in paths.items():
            _, lat = asyncio.run(load(cases.url, [path] * max(REQUESTS // 10, 100), headers))
            rows += [
                Row("cases_http", f"{name} p50", percentile(lat, 50) * 1000, "ms", "/healthz",
                    percentile(base_lat, 50) * 1000, higher_is_better=False),
                Row("cases_http", f"{name} p99", percentile(lat, 99) * 1000, "ms", "/healthz",
                    percentile(base_lat, 99) * 1000, higher_is_better=False),
            ]  # fmt: skip
        show(f"The agent queue: {OPEN_CASES:,} open cases, 16 concurrent", rows)
    finally:
        if cases is not None:
            cases.stop()
        stack.stop()


if __name__ == "__main__":
    main()
