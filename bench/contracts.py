"""Envelope build + validate + serialize, beside plain serialization and beside validating with
jsonschema alone (what the compiled fast path saves)."""

from __future__ import annotations

import time

import orjson

from services.common.contracts import build_event, encode, registry

from .report import Row, show

N = 20_000


def data(k: int) -> dict:
    return {
        "order_id": f"o-{k}",
        "customer_id": f"c-{k % 1000}",
        "amount_cents": 12900 + k,
        "currency": "CNY",
        "paid_at": "2026-11-22T07:00:00Z",
    }


def rate(fn) -> float:
    started = time.perf_counter()
    for k in range(N):
        fn(k)
    return N / (time.perf_counter() - started)


def main() -> None:
    prebuilt = build_event("crm.order.paid", data(0), source="/services/orders")
    strict_env = registry().validator(registry().envelope_url)
    strict_data = registry().validator(prebuilt["dataschema"])
    ours = rate(lambda k: encode(build_event("crm.order.paid", data(k), source="/services/orders")))
    plain = rate(lambda k: orjson.dumps({**prebuilt, "data": data(k)}))
    strict = rate(
        lambda k: (
            strict_env.validate(prebuilt),
            strict_data.validate(prebuilt["data"]),
            orjson.dumps(prebuilt),
        )
    )
    show(
        "Event envelope: build + validate + serialize",
        [
            Row("contracts", "build+validate+serialize", ours, "events/s", "serialize only", plain),
            Row(
                "contracts",
                "build+validate+serialize",
                ours,
                "events/s",
                "jsonschema validate+serialize",
                strict,
            ),
        ],
    )


if __name__ == "__main__":
    main()
