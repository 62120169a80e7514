"""Producer throughput: the shared EventProducer (validate, encode, key, acks=all,
idempotence) against raw kafka-python sending pre-encoded bytes, on the embedded broker."""

from __future__ import annotations

import time
import uuid

from kafka import KafkaProducer

from services.common.contracts import build_event, encode
from services.common.kafka import EventProducer, ensure_topics

from .report import Row, show
from .stack import start_bench_stack

N = 50_000


def main() -> None:
    stack = start_bench_stack()
    try:
        settings = stack.settings(topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")
        ensure_topics(settings)
        events = [
            build_event(
                "crm.order.paid",
                {
                    "order_id": f"o-{k}",
                    "customer_id": f"c-{k % 5000}",
                    "amount_cents": 1000 + k,
                    "currency": "CNY",
                    "paid_at": "2026-11-22T07:00:00Z",
                },
                source="/services/orders",
            )
            for k in range(N)
        ]
        topic = settings.topic_prefix + "crm.orders.v1"

        raw = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5, batch_size=256 * 1024)
        encoded = [(e["subject"].encode(), encode(e)) for e in events]
        started = time.perf_counter()
        for key, value in encoded:
            raw.send(topic, key=key, value=value)
        raw.flush()
        raw_rate = N / (time.perf_counter() - started)
        raw.close()

        shared = EventProducer(settings, "bench")
        started = time.perf_counter()
        for k in range(0, N, 1000):
            shared.publish(events[k : k + 1000])
        shared_rate = N / (time.perf_counter() - started)
        shared.close()
        show(
            f"Producer throughput, {N:,} events of ~300 bytes, embedded broker",
            [
                Row(
                    "producer",
                    "shared EventProducer (validate+encode+acks=all)",
                    shared_rate,
                    "events/s",
                    "raw kafka-python, pre-encoded",
                    raw_rate,
                )
            ],
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
