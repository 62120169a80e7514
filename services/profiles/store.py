"""The profiles service's own collections in `crm_profiles` (customers, churn warnings,
segment moves) and its read-only view of the live profiles the scorer writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClientSession, AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

from services.common.clock import as_utc
from services.common.errors import ConcurrentChange
from services.common.mongo import between, index
from services.common.pagination import Sort, page

from .domain import ChurnWarning, Customer, WarningStatus

CUSTOMERS = "customers"
WARNINGS = "churn_warnings"
MOVES = "segment_moves"
PROFILES = "profiles"  # the scorer's; read only here
INDEXES = {
    CUSTOMERS: [index(("registered_at", -1))],
    WARNINGS: [
        index(("open_rank", -1), ("value_at_risk_cents", -1)),
        index("customer_id"),
        index("status"),
        index("assignee"),
    ],
    MOVES: [index(("at", -1))],
}
WARNING_SORT: Sort = [("open_rank", -1), ("value_at_risk_cents", -1), ("_id", -1)]
# What the scorer keeps for itself in a profile; not part of any answer.
INTERNAL = ("facts", "pending", "pending_seq", "next_review_ts", "partition", "rank")


def customer_document(c: Customer) -> dict[str, Any]:
    doc = {k: v for k, v in c.__dict__.items() if k != "customer_id"}
    doc["_id"] = c.customer_id
    return doc


def customer_from(doc: dict[str, Any]) -> Customer:
    fields = {k: v for k, v in doc.items() if k != "_id"}
    for name in ("registered_at", "consent_changed_at", "erased_at"):
        if fields.get(name) is not None:
            fields[name] = as_utc(fields[name])
    return Customer(customer_id=doc["_id"], **fields)


def warning_document(w: ChurnWarning) -> dict[str, Any]:
    doc = {
        k: v
        for k, v in w.__dict__.items()
        if k not in ("episode_id", "status", "reasons", "actions", "history")
    }
    doc.update(
        _id=w.episode_id,
        status=w.status.value,
        reasons=list(w.reasons),
        actions=list(w.actions),
        history=list(w.history),
        open_rank=1 if w.is_open else 0,
        value_at_risk_cents=w.value_at_risk_cents,
    )
    return doc


def warning_from(doc: dict[str, Any]) -> ChurnWarning:
    times = ("warned_at", "closed_at", "recovered_at")
    return ChurnWarning(
        episode_id=doc["_id"],
        customer_id=doc["customer_id"],
        risk=doc["risk"],
        level=doc["level"],
        reasons=tuple(doc.get("reasons", ())),
        recommended_action=doc.get("recommended_action"),
        abc_class=doc.get("abc_class"),
        clv_cents=doc.get("clv_cents", 0),
        status=WarningStatus(doc["status"]),
        assignee=doc.get("assignee"),
        actions=tuple({**a, "at": as_utc(a["at"])} for a in doc.get("actions", ())),
        outcome=doc.get("outcome"),
        history=tuple({**h, "at": as_utc(h["at"])} for h in doc.get("history", ())),
        version=doc.get("version", 0),
        **{t: as_utc(doc[t]) if doc.get(t) is not None else None for t in times},
    )


class ProfilesStore:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self.db = db
        self.customers = db[CUSTOMERS]
        self.warnings = db[WARNINGS]
        self.moves = db[MOVES]
        self.profiles = db[PROFILES]

    # --- customers ------------------------------------------------------------------------

    async def get_customer(
        self, customer_id: str, session: AsyncIOMotorClientSession | None = None
    ) -> Customer | None:
        doc = await self.customers.find_one({"_id": customer_id}, session=session)
        return customer_from(doc) if doc else None

    async def insert_customer(self, c: Customer, session: AsyncIOMotorClientSession) -> None:
        await self.customers.insert_one(customer_document(c), session=session)

    async def replace_customer(self, c: Customer, session: AsyncIOMotorClientSession) -> Customer:
        saved = type(c)(**{**c.__dict__, "version": c.version + 1})
        result = await self.customers.replace_one(
            {"_id": c.customer_id, "version": c.version}, customer_document(saved), session=session
        )
        if result.matched_count != 1:
            raise ConcurrentChange(c.customer_id)
        return saved

    # --- churn warnings ---------------------------------------------------------------------

    async def get_warning(
        self, episode_id: str, session: AsyncIOMotorClientSession | None = None
    ) -> ChurnWarning | None:
        doc = await self.warnings.find_one({"_id": episode_id}, session=session)
        return warning_from(doc) if doc else None

    async def add_warning(self, w: ChurnWarning) -> bool:
        """False when this episode is already known (a redelivered signal)."""
        try:
            await self.warnings.insert_one(warning_document(w))
            return True
        except DuplicateKeyError:
            return False

    async def replace_warning(
        self, w: ChurnWarning, session: AsyncIOMotorClientSession | None = None
    ) -> ChurnWarning:
        saved = type(w)(**{**w.__dict__, "version": w.version + 1})
        result = await self.warnings.replace_one(
            {"_id": w.episode_id, "version": w.version}, warning_document(saved), session=session
        )
        if result.matched_count != 1:
            raise ConcurrentChange(w.episode_id)
        return saved

    async def warnings_page(
        self, filters: dict[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[ChurnWarning], str | None]:
        docs, next_cursor = await page(self.warnings, filters, WARNING_SORT, limit, cursor)
        return [warning_from(d) for d in docs], next_cursor

    async def warnings_of(self, customer_id: str) -> list[ChurnWarning]:
        return [warning_from(d) async for d in self.warnings.find({"customer_id": customer_id})]

    # --- segment moves (from crm.profile.segment_changed) -----------------------------------

    async def add_move(self, event_id: str, customer_id: str, data: dict[str, Any], at: datetime) -> None:
        try:
            await self.moves.insert_one(
                {
                    "_id": event_id,
                    "customer_id": customer_id,
                    "from": data["from_segment"],
                    "to": data["to_segment"],
                    "at": at,
                }
            )
        except DuplicateKeyError:
            pass  # a redelivered signal

    async def moves_between(self, since: datetime | None, until: datetime | None) -> list[tuple[str, str]]:
        query = {"at": between(since, until)} if since or until else {}
        return [(d["from"], d["to"]) async for d in self.moves.find(query, {"from": 1, "to": 1})]

    # --- live profiles (read only) ----------------------------------------------------------

    async def profile(self, customer_id: str) -> dict[str, Any] | None:
        return await self.profiles.find_one({"_id": customer_id}, {name: 0 for name in INTERNAL})

    async def search(
        self, query: dict[str, Any], sort: Sort, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await page(self.profiles, query, sort, limit, cursor, {"facts": 0, "pending": 0})

    async def group_totals(self, field: str) -> list[dict[str, Any]]:
        """Customers, net spend and CLV summed by one profile field (a $group both MongoDB and
        the embedded server serve)."""
        rows = await self.profiles.aggregate(
            [
                {
                    "$group": {
                        "_id": f"${field}",
                        "customers": {"$sum": 1},
                        "revenue_cents": {"$sum": "$purchases.net_spend_cents"},
                        "clv_cents": {"$sum": "$value.clv_12m_cents"},
                    }
                }
            ]
        ).to_list(None)
        return [
            {
                "key": r["_id"],
                "customers": r["customers"],
                "revenue_cents": r["revenue_cents"] or 0,
                "clv_cents": r["clv_cents"] or 0,
            }
            for r in rows
        ]
