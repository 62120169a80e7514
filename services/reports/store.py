"""The reports' read model in MongoDB (`crm_reports`): what the events said (customers'
registration attributes, orders and their lines, returns and refunds, complaints' categories,
surveys, segment moves, erasures) and what the profiles API answered (each profile's scores,
the churn worklist). Every write is keyed by the entity it is about, so a redelivered event
changes nothing. Only this module knows field paths."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
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
WRITTEN = "written"  # the wall clock (ns) of a document's last write: the builder reads what changed
INDEXES = {
    CUSTOMERS: [index(WRITTEN)],
    ORDERS: [index("customer_id"), index(WRITTEN)],
    ADJUSTMENTS: [index("order_id"), index(WRITTEN)],
    COMPLAINTS: [index("customer_id"), index(WRITTEN)],
    SURVEYS: [index("customer_id"), index(WRITTEN)],
    MOVES: [index("customer_id"), index(WRITTEN)],
    SCORES: [index(WRITTEN)],
    WARNINGS: [index("customer_id"), index(WRITTEN)],
    ERASED: [],
}
ATTRIBUTES = ("gender", "birth_date", "city", "city_tier", "channel", "marketing_consent")
SCORE_FIELDS = ("segment", "lifecycle_stage", "abc_class", "tier", "clv_12m_cents", "churn_risk", "rfm_code")
CHUNK = 1000


def epoch(when: datetime) -> int:
    return int(when.timestamp())


def stamped(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with the wall clock of this write (not the service's clock: the builder
    compares it with its own wall clock)."""
    return {**doc, WRITTEN: time.time_ns()}


# Replacements carry their _id: nx-27017 does not take it from the filter on an upsert (real
# MongoDB does; carrying it is right on both).
class ReportsStore:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self.db = db
        self._scores_written: dict[str, dict[str, Any]] = {}
        self._warnings_written: dict[str, dict[str, Any]] = {}

    # --- from events ----------------------------------------------------------------------------

    async def customer(self, customer_id: str, attributes: dict[str, Any]) -> None:
        values = {k: v for k, v in attributes.items() if k in (*ATTRIBUTES, "registered_at")}
        if await self.is_erased(customer_id):
            return
        await self.db[CUSTOMERS].update_one({"_id": customer_id}, {"$set": stamped(values)}, upsert=True)

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
            {"_id": order_id}, {"$set": stamped({"customer_id": customer_id, "items": lines})}, upsert=True
        )

    async def order_paid(self, order_id: str, customer_id: str, cents: int, at: datetime) -> None:
        await self.db[ORDERS].update_one(
            {"_id": order_id},
            {"$set": stamped({"customer_id": customer_id, "paid_cents": cents, "paid_at": epoch(at)})},
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
            stamped(
                {
                    "_id": f"{kind}:{adjustment_id}",
                    "order_id": order_id,
                    "kind": kind,
                    "cents": cents,
                    "reason": reason,
                    "items": [list(i) for i in items],
                }
            ),
            upsert=True,
        )

    async def complaint(self, complaint_id: str, customer_id: str, category: str) -> None:
        await self.db[COMPLAINTS].replace_one(
            {"_id": complaint_id},
            stamped({"_id": complaint_id, "customer_id": customer_id, "category": category}),
            upsert=True,
        )

    async def survey(self, survey: dict[str, Any]) -> None:
        await self.db[SURVEYS].replace_one(
            {"_id": survey["survey_id"]},
            stamped(
                {
                    "_id": survey["survey_id"],
                    "customer_id": survey["customer_id"],
                    "complaint_id": survey.get("complaint_id"),
                    "kind": survey["kind"],
                    "scores": survey["scores"],
                    "recommend": survey.get("recommend"),
                    "submitted_at": epoch(survey["submitted_at"]),
                }
            ),
            upsert=True,
        )

    async def segment_move(
        self, event_id: str, customer_id: str, at: datetime, source: str, target: str
    ) -> None:
        await self.db[MOVES].replace_one(
            {"_id": event_id},
            stamped(
                {"_id": event_id, "customer_id": customer_id, "at": epoch(at), "from": source, "to": target}
            ),
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
        self._scores_written.pop(customer_id, None)
        for name in (MOVES, WARNINGS):
            await self.db[name].delete_many({"customer_id": customer_id})
        for name in (ORDERS, SURVEYS, COMPLAINTS):
            await self.db[name].update_many(
                {"customer_id": customer_id}, {"$set": stamped({"customer_id": None})}
            )

    # --- from the profiles API -----------------------------------------------------------------

    async def replace_scores(self, rows: list[dict[str, Any]]) -> None:
        """Each profile's scores as the profiles search answered, written when they differ from
        what this process wrote last (so the builder re-reads only changed scores); profiles no
        longer listed go."""
        seen = set()
        changed = []
        for row in rows:
            seen.add(row["customer_id"])
            doc = {"_id": row["customer_id"], **{k: row.get(k) for k in SCORE_FIELDS}}
            if self._scores_written.get(doc["_id"]) != doc:
                changed.append(doc)
        for start in range(0, len(changed), CHUNK):
            chunk = changed[start : start + CHUNK]
            ops = [ReplaceOne({"_id": d["_id"]}, stamped(d), upsert=True) for d in chunk]
            await self.db[SCORES].bulk_write(ops, ordered=False)
            self._scores_written.update((d["_id"], d) for d in chunk)
        stale = [d["_id"] async for d in self.db[SCORES].find({}, {"_id": 1}) if d["_id"] not in seen]
        for start in range(0, len(stale), CHUNK):
            await self.db[SCORES].delete_many({"_id": {"$in": stale[start : start + CHUNK]}})
        for customer_id in stale:
            self._scores_written.pop(customer_id, None)

    async def replace_warnings(self, warnings: list[dict[str, Any]]) -> None:
        """The churn worklist's episodes, written when they differ from what this process wrote
        last."""
        docs = [{"_id": w["warning_id"], **_warning_doc(w)} for w in warnings]
        changed = [d for d in docs if self._warnings_written.get(d["_id"]) != d]
        for start in range(0, len(changed), CHUNK):
            chunk = changed[start : start + CHUNK]
            ops = [ReplaceOne({"_id": d["_id"]}, stamped(d), upsert=True) for d in chunk]
            await self.db[WARNINGS].bulk_write(ops, ordered=False)
            self._warnings_written.update((d["_id"], d) for d in chunk)

    # --- the bench and the tests write generated history directly -------------------------------

    async def insert_generated(self, collection: str, docs: list[dict[str, Any]]) -> None:
        for start in range(0, len(docs), CHUNK):
            await self.db[collection].bulk_write(
                [ReplaceOne({"_id": d["_id"]}, stamped(d), upsert=True) for d in docs[start : start + CHUNK]],
                ordered=False,
            )


class ReadModelReader:
    """The read model as domain.build takes it, kept by the builder process between builds.
    The first read takes every document; each later one only those written since the
    previous read began (less a margin for writes in flight), by the WRITTEN index, and
    takes an erased person's documents out (erasure is the only other deletion; a score of
    a profile no longer listed, or documents written without a stamp, are caught by a
    collection's count, its estimate from the collection's metadata: counting the documents
    reads them all on the embedded database; and everything is read again every
    FULL_READ_SECONDS anyway).
    Blocking (PyMongo): the builder runs in a process of its own, so reading a million orders
    never holds the HTTP process's interpreter."""

    MARGIN_NS = 60 * 10**9
    FULL_READ_SECONDS = 3600

    def __init__(self) -> None:
        self.since: int | None = None  # when the last read began (ns), None: read everything
        self.documents_read = 0  # by the last read
        self._forget()

    def _forget(self) -> None:
        self.docs: dict[str, dict[Any, dict[str, Any]]] = {}
        self.records: dict[str, OrderRecord | None] = {}  # each order's, None while unpaid
        self.adjustments: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # by order
        self.full_read_at = time.time()

    def read(self, db: Database) -> dict[str, Any]:
        started = time.time_ns()
        self.documents_read = 0
        full = self.since is None or time.time() - self.full_read_at > self.FULL_READ_SECONDS
        if full:
            self._forget()
        erased = {d["_id"] for d in db[ERASED].find({})}
        query = {} if full else {WRITTEN: {"$gte": self.since - self.MARGIN_NS}}
        for name, by_customer in ((CUSTOMERS, False), (SCORES, False), (MOVES, True), (WARNINGS, True)):
            kept = self.docs.setdefault(name, {})
            gone = [k for k, d in kept.items() if (d.get("customer_id") if by_customer else k) in erased]
            for k in gone:
                del kept[k]
        for name in (CUSTOMERS, SCORES, COMPLAINTS, SURVEYS, MOVES, WARNINGS):
            kept = self.docs.setdefault(name, {})
            if not full and db[name].estimated_document_count() != len(kept):
                kept.clear()  # something else went, or came without a stamp: this one all again
                self._read(db[name].find({}), kept)
            else:
                self._read(db[name].find(query), kept)
        changed_orders: set[str] = set()
        for d in db[ADJUSTMENTS].find(query):
            self.documents_read += 1
            self.adjustments[d["order_id"]][d["_id"]] = d
            changed_orders.add(d["order_id"])
        orders = {}
        for d in db[ORDERS].find(query, batch_size=10_000):  # unpaid ones are left out, not by a filter
            orders[d["_id"]] = d
        self.documents_read += len(orders)
        missing = [o for o in changed_orders if o not in orders]  # a return or refund came alone
        for start in range(0, len(missing), CHUNK):
            orders.update(
                (d["_id"], d) for d in db[ORDERS].find({"_id": {"$in": missing[start : start + CHUNK]}})
            )
        for order_id, d in orders.items():
            returns, refunds = {}, {}
            for adjustment_id, a in self.adjustments.get(order_id, {}).items():
                (returns if a["kind"] == "return" else refunds)[adjustment_id] = a
            self.records[order_id] = order_record(d, returns, refunds)
        if not full and db[ORDERS].estimated_document_count() != len(self.records):
            self.since = None  # an order came without a stamp: all of it again next time
        else:
            self.since = started
        return {
            "customers": [
                {"customer_id": d["_id"], **{k: d.get(k) for k in (*ATTRIBUTES, "registered_at")}}
                for d in self.docs[CUSTOMERS].values()
            ],
            "scores": self.docs[SCORES],
            "orders": [r for r in self.records.values() if r is not None],
            "complaints": {d["_id"]: d["category"] for d in self.docs[COMPLAINTS].values()},
            "surveys": [
                {**d, "survey_id": d["_id"], "customer_id": d.get("customer_id") or ""}
                for d in self.docs[SURVEYS].values()
            ],
            "moves": list(self.docs[MOVES].values()),
            "warnings": list(self.docs[WARNINGS].values()),
            "erased": erased,
        }

    def _read(self, docs: Iterable[dict[str, Any]], into: dict[Any, dict[str, Any]]) -> None:
        for d in docs:
            self.documents_read += 1
            d.pop(WRITTEN, None)
            into[d["_id"]] = d


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
