"""Loyalty accounts, the ledger and the consumed-event record in MongoDB (`crm_loyalty`)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClientSession, AsyncIOMotorDatabase

from services.common.clock import as_utc
from services.common.errors import ConcurrentChange
from services.common.mongo import index
from services.common.pagination import page

from . import domain
from .domain import Account, Entry, Lot, OrderPoints, Programme

ACCOUNTS = "accounts"
LEDGER = "ledger"
PROCESSED = "processed_events"
INDEXES = {
    ACCOUNTS: [index("next_expiry"), index("tier_review_at"), index("next_announcement"), index("tier")],
    LEDGER: [index("source", unique=True), index("customer_id", ("at", -1))],
    PROCESSED: [],
}
LEDGER_SORT = [("at", -1), ("_id", -1)]


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def to_document(a: Account, programme: Programme) -> dict[str, Any]:
    doc = {
        "_id": a.customer_id,
        "tier": a.tier,
        "balance": a.balance,
        "lots": [asdict(lot) for lot in a.lots],
        "spend": [{"at": w, "cents": c} for w, c in a.spend],
        "orders": [asdict(o) for o in a.orders],
        "referred_by": a.referred_by,
        "first_paid_at": a.first_paid_at,
        "referral_paid": a.referral_paid,
        "lifetime_earned": a.lifetime_earned,
        "closed": a.closed,
        "version": a.version,
        "entries": a.entries,
    }
    # Absent rather than null: the jobs' range queries skip accounts with nothing due.
    for name, when in (
        ("next_expiry", domain.next_expiry(a)),
        ("tier_review_at", domain.tier_review_at(a, programme)),
        ("next_announcement", domain.next_announcement(a, programme)),
    ):
        if when is not None:
            doc[name] = when
    return doc


def from_document(d: dict[str, Any]) -> Account:
    return Account(
        customer_id=d["_id"],
        tier=d["tier"],
        lots=tuple(
            Lot(**{**lot, "earned_at": as_utc(lot["earned_at"]), "expires_at": as_utc(lot["expires_at"])})
            for lot in d.get("lots", [])
        ),
        spend=tuple((as_utc(s["at"]), s["cents"]) for s in d.get("spend", [])),
        orders=tuple(OrderPoints(**{**o, "paid_at": as_utc(o["paid_at"])}) for o in d.get("orders", [])),
        referred_by=d.get("referred_by"),
        first_paid_at=_utc(d.get("first_paid_at")),
        referral_paid=d.get("referral_paid", False),
        lifetime_earned=d.get("lifetime_earned", 0),
        closed=d.get("closed", False),
        version=d.get("version", 0),
        entries=d.get("entries", 0),
    )


def entry_document(e: Entry) -> dict[str, Any]:
    doc = asdict(e)
    doc["_id"] = doc.pop("entry_id")
    doc["lots"] = [{"lot_id": lot, "points": points} for lot, points in e.lots]
    return doc


class LoyaltyStore:
    def __init__(self, db: AsyncIOMotorDatabase, programme: Programme) -> None:
        self.db = db
        self.accounts = db[ACCOUNTS]
        self.ledger = db[LEDGER]
        self.processed = db[PROCESSED]
        self.programme = programme

    async def get(self, customer_id: str, session: AsyncIOMotorClientSession | None = None) -> Account | None:
        doc = await self.accounts.find_one({"_id": customer_id}, session=session)
        return from_document(doc) if doc else None

    async def get_or_new(self, customer_id: str, session: AsyncIOMotorClientSession) -> Account:
        return await self.get(customer_id, session) or Account(customer_id, version=-1)

    async def save(self, account: Account, session: AsyncIOMotorClientSession) -> Account:
        """Lands only on the version read (version -1: a new account), so two writers can never
        both spend the same points."""
        saved = type(account)(**{**account.__dict__, "version": account.version + 1})
        doc = to_document(saved, self.programme)
        if account.version < 0:
            await self.accounts.insert_one(doc, session=session)  # a concurrent creator hits the unique _id
            return saved
        result = await self.accounts.replace_one(
            {"_id": account.customer_id, "version": account.version}, doc, session=session
        )
        if result.matched_count != 1:
            raise ConcurrentChange(account.customer_id)
        return saved

    async def append(self, entries: list[Entry], session: AsyncIOMotorClientSession) -> None:
        if entries:
            await self.ledger.insert_many([entry_document(e) for e in entries], session=session)

    async def scrub_reasons(self, customer_id: str, text: str, session: AsyncIOMotorClientSession) -> None:
        """Erasure: what agents wrote on redemptions and adjustments may describe the person."""
        await self.ledger.update_many(
            {"customer_id": customer_id, "kind": {"$in": ["redeem", "adjust"]}},
            {"$set": {"reason": text}},
            session=session,
        )

    async def seen_among(self, event_ids: list[str], session: AsyncIOMotorClientSession) -> set[str]:
        """Which of these events were already applied."""
        docs = await self.processed.find({"_id": {"$in": event_ids}}, {"_id": 1}, session=session).to_list(
            None
        )
        return {d["_id"] for d in docs}

    async def remember(self, event_id: str, at: datetime, session: AsyncIOMotorClientSession) -> None:
        await self.processed.insert_one({"_id": event_id, "at": at}, session=session)

    async def ledger_page(
        self, customer_id: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A customer's ledger entries, newest first, each with its `entry_id`."""
        docs, next_cursor = await page(self.ledger, {"customer_id": customer_id}, LEDGER_SORT, limit, cursor)
        entries = [{**{k: v for k, v in d.items() if k != "_id"}, "entry_id": d["_id"]} for d in docs]
        return entries, next_cursor

    async def due(self, now: datetime, limit: int = 500) -> list[str]:
        query = {
            "$or": [
                {"next_expiry": {"$lte": now}},
                {"tier_review_at": {"$lte": now}},
                {"next_announcement": {"$lte": now}},
            ]
        }
        return [d["_id"] for d in await self.accounts.find(query, {"_id": 1}).limit(limit).to_list(None)]

    async def tier_counts(self) -> dict[str, int]:
        rows = await self.accounts.aggregate([{"$group": {"_id": "$tier", "n": {"$sum": 1}}}]).to_list(None)
        return {row["_id"]: row["n"] for row in rows}
