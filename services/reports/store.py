"""The reports' read model in MongoDB (`crm_reports`): what the events said (customers'
registration attributes, orders and their lines, returns and refunds, complaints' categories,
surveys, segment moves, erasures) and what the profiles API answered (each profile's scores,
the churn worklist). Every write is keyed by the entity it is about, so a redelivered event
changes nothing. Only this module knows field paths."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import ReplaceOne
from pymongo.database import Database

from services.common.mongo import index

from .domain import OrderRecord, order_record

CUSTOMERS = "customers"
ORDERS = "orders"
ADJUSTMENTS = "adjustments"  # returns and refunds, keyed by their own ids
COMPLAINTS = "complaints"
SURVEYS = "surveys"
MOVES = "segment_moves"
SCORES = "scores"
WARNINGS = "warnings"
ERASED = "erased"
INDEXES = {
    CUSTOMERS: [],
    ORDERS: [index("customer_id")],
    ADJUSTMENTS: [index("order_id")],
    COMPLAINTS: [index("customer_id")],
    SURVEYS: [index("customer_id")],
    MOVES: [index("customer_id")],
    SCORES: [],
    WARNINGS: [index("customer_id")],
    ERASED: [],
}
ATTRIBUTES = ("gender", "birth_date", "city", "city_tier", "channel", "marketing_consent")
SCORE_FIELDS = ("segment", "lifecycle_stage", "abc_class", "tier", "clv_12m_cents", "churn_risk", "rfm_code")
CHUNK = 1000


def epoch(when: datetime) -> int:
    return int(when.timestamp())


# Replacements carry their _id: nx-27017 does not take it from the filter on an upsert (real
# MongoDB does; carrying it is right on both).
class ReportsStore:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self.db = db

    # --- from events ----------------------------------------------------------------------------

    async def customer(self, customer_id: str, attributes: dict[str, Any]) -> None:
        values = {k: v for k, v in attributes.items() if k in (*ATTRIBUTES, "registered_at")}
        if await self.is_erased(customer_id):
            return
        await self.db[CUSTOMERS].update_one({"_id": customer_id}, {"$set": values}, upsert=True)

    async def order_placed(self, order_id: str, customer_id: str, items: list[dict[str, Any]]) -> None:
        lines = [
            {
                "sku": i["sku"],
                "category": i["category"],
                "brand": i["brand"],
                "cents": i["qty"] * i["unit_price_cents"],
            }
            for i in items
        ]
        await self.db[ORDERS].update_one(
            {"_id": order_id}, {"$set": {"customer_id": customer_id, "items": lines}}, upsert=True
        )

    async def order_paid(self, order_id: str, customer_id: str, cents: int, at: datetime) -> None:
        await self.db[ORDERS].update_one(
            {"_id": order_id},
            {"$set": {"customer_id": customer_id, "paid_cents": cents, "paid_at": epoch(at)}},
            upsert=True,
        )

    async def adjustment(
        self,
        adjustment_id: str,
        order_id: str,
        kind: str,
        cents: int,
        reason: str,
        items: list[tuple[str, int]],
    ) -> None:
        await self.db[ADJUSTMENTS].replace_one(
            {"_id": f"{kind}:{adjustment_id}"},
            {
                "_id": f"{kind}:{adjustment_id}",
                "order_id": order_id,
                "kind": kind,
                "cents": cents,
                "reason": reason,
                "items": [list(i) for i in items],
            },
            upsert=True,
        )

    async def complaint(self, complaint_id: str, customer_id: str, category: str) -> None:
        await self.db[COMPLAINTS].replace_one(
            {"_id": complaint_id},
            {"_id": complaint_id, "customer_id": customer_id, "category": category},
            upsert=True,
        )

    async def survey(self, survey: dict[str, Any]) -> None:
        await self.db[SURVEYS].replace_one(
            {"_id": survey["survey_id"]},
            {
                "_id": survey["survey_id"],
                "customer_id": survey["customer_id"],
                "complaint_id": survey.get("complaint_id"),
                "kind": survey["kind"],
                "scores": survey["scores"],
                "recommend": survey.get("recommend"),
                "submitted_at": epoch(survey["submitted_at"]),
            },
            upsert=True,
        )

    async def segment_move(
        self, event_id: str, customer_id: str, at: datetime, source: str, target: str
    ) -> None:
        await self.db[MOVES].replace_one(
            {"_id": event_id},
            {"_id": event_id, "customer_id": customer_id, "at": epoch(at), "from": source, "to": target},
            upsert=True,
        )

    # --- erasure --------------------------------------------------------------------------------

    async def is_erased(self, customer_id: str) -> bool:
        return await self.db[ERASED].find_one({"_id": customer_id}) is not None

    async def forget(self, customer_id: str) -> None:
        """The person's attributes, scores, moves and warnings go; their orders, surveys and
        complaints stay, unlinked, so the shop's totals do not change. The id is kept (as the
        profiles service keeps its erasure record) so a late event does not bring them back."""
        await self.db[ERASED].update_one({"_id": customer_id}, {"$set": {"erased": True}}, upsert=True)
        for name in (CUSTOMERS, SCORES):
            await self.db[name].delete_many({"_id": customer_id})
        for name in (MOVES, WARNINGS):
            await self.db[name].delete_many({"customer_id": customer_id})
        for name in (ORDERS, SURVEYS, COMPLAINTS):
            await self.db[name].update_many({"customer_id": customer_id}, {"$set": {"customer_id": None}})

    # --- from the profiles API -----------------------------------------------------------------

    async def replace_scores(self, rows: list[dict[str, Any]]) -> None:
        """Each profile's scores as the profiles search answered; profiles no longer listed go."""
        seen = set()
        for start in range(0, len(rows), CHUNK):
            ops = []
            for row in rows[start : start + CHUNK]:
                seen.add(row["customer_id"])
                ops.append(
                    ReplaceOne(
                        {"_id": row["customer_id"]},
                        {"_id": row["customer_id"], **{k: row.get(k) for k in SCORE_FIELDS}},
                        upsert=True,
                    )
                )
            await self.db[SCORES].bulk_write(ops, ordered=False)
        stale = [d["_id"] async for d in self.db[SCORES].find({}, {"_id": 1}) if d["_id"] not in seen]
        for start in range(0, len(stale), CHUNK):
            await self.db[SCORES].delete_many({"_id": {"$in": stale[start : start + CHUNK]}})

    async def replace_warnings(self, warnings: list[dict[str, Any]]) -> None:
        ops = [
            ReplaceOne({"_id": w["warning_id"]}, {"_id": w["warning_id"], **_warning_doc(w)}, upsert=True)
            for w in warnings
        ]
        for start in range(0, len(ops), CHUNK):
            await self.db[WARNINGS].bulk_write(ops[start : start + CHUNK], ordered=False)

    # --- the bench and the tests write generated history directly -------------------------------

    async def insert_generated(self, collection: str, docs: list[dict[str, Any]]) -> None:
        for start in range(0, len(docs), CHUNK):
            await self.db[collection].bulk_write(
                [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs[start : start + CHUNK]],
                ordered=False,
            )


def read_model(db: Database) -> dict[str, Any]:
    """The whole read model, as domain.build takes it. Blocking (PyMongo): the snapshot is
    built in a process of its own, so reading a million orders never holds the HTTP
    process's interpreter."""
    erased = {d["_id"] for d in db[ERASED].find({})}
    customers = [
        {"customer_id": d["_id"], **{k: d.get(k) for k in (*ATTRIBUTES, "registered_at")}}
        for d in db[CUSTOMERS].find({})
    ]
    scores = {d["_id"]: d for d in db[SCORES].find({})}
    returns: dict[str, dict[str, Any]] = defaultdict(dict)
    refunds: dict[str, dict[str, Any]] = defaultdict(dict)
    for d in db[ADJUSTMENTS].find({}):
        target = returns if d["kind"] == "return" else refunds
        target[d["order_id"]][d["_id"]] = d
    orders: list[OrderRecord] = []
    for d in db[ORDERS].find({}, batch_size=10_000):  # unpaid ones are left out below, not by a filter
        record = order_record(d, returns.get(d["_id"], {}), refunds.get(d["_id"], {}))
        if record is not None:
            orders.append(record)
    return {
        "customers": customers,
        "scores": scores,
        "orders": orders,
        "complaints": {d["_id"]: d["category"] for d in db[COMPLAINTS].find({})},
        "surveys": [
            {**d, "survey_id": d["_id"], "customer_id": d.get("customer_id") or ""}
            for d in db[SURVEYS].find({})
        ],
        "moves": list(db[MOVES].find({})),
        "warnings": list(db[WARNINGS].find({})),
        "erased": erased,
    }


def _warning_doc(w: dict[str, Any]) -> dict[str, Any]:
    def at(value: str | None) -> int | None:
        return None if value is None else epoch(datetime.fromisoformat(value.replace("Z", "+00:00")))

    return {
        "customer_id": w["customer_id"],
        "warned_at": at(w["warned_at"]),
        "closed_at": at(w.get("closed_at") or w.get("recovered_at")),
        "reasons": [r["code"] if isinstance(r, dict) else str(r) for r in w.get("reasons") or []],
        "actions": [a.get("action") for a in w.get("actions") or [] if a.get("action")],
        "outcome": w.get("outcome"),
        "risk": w.get("risk") or 0.0,
        "clv_cents": w.get("clv_cents") or 0,
    }
