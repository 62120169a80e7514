"""The reports' builder reads only what changed since its previous read: after new orders, a
return on an old order, changed and dropped scores, moves and an erasure, what it holds is
what a read of everything gives, and the snapshot built from it answers the same."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from services.common.mongo import async_client, blocking_client
from services.reports import domain
from services.reports.store import ReadModelReader, ReportsStore

JANUARY = datetime(2026, 1, 10, 12, tzinfo=UTC)


def normalised(model: dict[str, Any]) -> dict[str, Any]:
    def by_id(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        return sorted(rows, key=lambda r: str(r[key]))

    return {
        "customers": by_id(model["customers"], "customer_id"),
        "scores": model["scores"],
        "orders": sorted(model["orders"], key=lambda o: o.order_id),
        "complaints": model["complaints"],
        "surveys": by_id(model["surveys"], "survey_id"),
        "moves": by_id(model["moves"], "_id"),
        "warnings": by_id(model["warnings"], "_id"),
        "erased": model["erased"],
    }


async def seed(store: ReportsStore, people: list[str], first: bool) -> None:
    for k, person in enumerate(people):
        if first:
            await store.customer(
                person, {"gender": "female", "city": "Hangzhou", "registered_at": 1_760_000_000}
            )
        order = f"o-{person}-{'a' if first else 'b'}"
        await store.order_placed(order, person, [{"sku": "S1", "category": "shoes", "brand": "Acme", "qty": 1,
                                                 "unit_price_cents": 1000 + k}])  # fmt: skip
        await store.order_paid(order, person, 1000 + k, JANUARY.replace(month=1 if first else 3))
        await store.segment_move(
            f"e-{order}", person, JANUARY, "Prospect" if first else "New", "New" if first else "Loyal"
        )


def scores(people: list[str], segment: str) -> list[dict[str, Any]]:
    return [{"customer_id": p, "segment": segment, "rfm_code": "345", "clv_12m_cents": 500} for p in people]


def test_an_incremental_read_holds_what_a_full_read_gives(stack):
    name = f"reports_reader_{uuid.uuid4().hex[:8]}"
    people = [f"p{k}" for k in range(6)]
    reader = ReadModelReader()
    reader.MARGIN_NS = 0  # everything here is written within the minute the margin re-reads
    db = blocking_client(stack.mongo_url)[name]

    async def first() -> None:
        store = ReportsStore(async_client(stack.mongo_url)[name])
        await seed(store, people, first=True)
        await store.replace_scores(scores(people, "New"))
        return store

    async def then(store: ReportsStore) -> None:
        await seed(store, people[:3], first=False)  # new orders and moves
        await store.adjustment("r1", "o-p4-a", "return", 1004, "too small", [("S1", 1004)])  # an old order
        await store.replace_scores(scores(people[:5], "Loyal"))  # changed, and p5 no longer listed
        await store.forget("p1")

    loop = asyncio.new_event_loop()
    try:
        store = loop.run_until_complete(first())
        before = reader.read(db)
        assert len(before["orders"]) == 6 and len(before["scores"]) == 6
        loop.run_until_complete(then(store))
    finally:
        loop.close()
    incremental = normalised(reader.read(db))
    # 3 orders, the returned one and its return, 3 moves, the scores again (one went), the
    # erased person's orders unlinked and their customer deleted: not the whole history again
    assert reader.documents_read < 20
    everything = normalised(ReadModelReader().read(db))
    assert incremental == everything
    assert "p5" not in incremental["scores"] and "p1" in incremental["erased"]
    p4 = next(o for o in incremental["orders"] if o.order_id == "o-p4-a")
    assert p4.net_cents == 0  # the return on the old order was read
    now = int(datetime(2026, 4, 1, tzinfo=UTC).timestamp())
    a, b = domain.build(**reader.read(db), now=now), domain.build(**ReadModelReader().read(db), now=now)
    everyone = domain.Period()
    assert domain.contribution(a, everyone) == domain.contribution(b, everyone)
    assert domain.movement(a, 0, now)["matrix"] == domain.movement(b, 0, now)["matrix"]
