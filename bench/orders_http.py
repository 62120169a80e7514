"""Order creation over HTTP (auth, validation, totals, transaction with outbox) beside a
minimal FastAPI endpoint, both as separate processes, the same client load for each."""

from __future__ import annotations

import asyncio
import sys
import time

import httpx

from services.stack.embedded import Child, free_port
from services.stack.harness import start_service

from .report import Row, percentile, show
from .stack import start_bench_stack

REQUESTS = 2000
CONCURRENCY = 16


def body(k: int) -> dict:
    return {
        "customer_id": f"bench-{k % 500}",
        "currency": "CNY",
        "channel": "app",
        "items": [
            {
                "sku": "SKU-1",
                "category": "shoes",
                "brand": "Acme",
                "qty": 1 + k % 3,
                "unit_price_cents": 4599,
            },
            {"sku": "SKU-2", "category": "socks", "brand": "Acme", "qty": 2, "unit_price_cents": 999},
        ],
    }


async def load(url: str, headers: dict[str, str]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(range(REQUESTS))
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY)
    ) as client:
        for k in range(50):  # warm up
            await client.post("/orders", json=body(k))

        async def worker() -> None:
            for k in queue:
                started = time.perf_counter()
                answer = await client.post("/orders", json=body(k))
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 201:
                    raise RuntimeError(f"{answer.status_code}: {answer.text}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return REQUESTS / elapsed, latencies


def main() -> None:
    stack = start_bench_stack()
    orders = start_service(stack, "orders")
    port = free_port()
    baseline = Child(
        "minimal",
        [sys.executable, "-m", "bench.minimal_app", str(port)],
        stack.workdir / "minimal.log",
        port=port,
    )
    baseline.start()
    baseline.wait_ready(30)
    try:
        base_rate, base_lat = asyncio.run(load(f"http://127.0.0.1:{port}", {}))
        rate, lat = asyncio.run(load(orders.url, stack.headers("agent")))
        show(
            f"Order creation over HTTP, {REQUESTS} requests, {CONCURRENCY} concurrent",
            [
                Row("orders_http", "POST /orders throughput", rate, "orders/s", "minimal FastAPI", base_rate),
                Row(
                    "orders_http",
                    "POST /orders p50 latency",
                    percentile(lat, 50) * 1000,
                    "ms",
                    "minimal FastAPI",
                    percentile(base_lat, 50) * 1000,
                    higher_is_better=False,
                ),
                Row(
                    "orders_http",
                    "POST /orders p99 latency",
                    percentile(lat, 99) * 1000,
                    "ms",
                    "minimal FastAPI",
                    percentile(base_lat, 99) * 1000,
                    higher_is_better=False,
                ),
            ],
        )
    finally:
        baseline.stop()
        orders.stop()
        stack.stop()


if __name__ == "__main__":
    main()
