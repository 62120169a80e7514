"""Engagement's MongoDB (`crm_engagement`): contacts, campaigns, messages, coupons and the
purchases and recoveries a campaign is measured by."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClientSession, AsyncIOMotorDatabase

from services.common.clock import as_utc
from services.common.errors import ConcurrentChange
from services.common.mongo import index
from services.common.pagination import page

from .domain import Contact, Coupon, CouponState, Offer, State

CONTACTS = "contacts"
CAMPAIGNS = "campaigns"
MESSAGES = "messages"
COUPONS = "coupons"
PURCHASES = "purchases"
RECOVERIES = "recoveries"
AUDIENCES = "audiences"
INDEXES = {
    AUDIENCES: [],
    CONTACTS: [],
    CAMPAIGNS: [index("trigger", "status")],
    MESSAGES: [
        index("campaign_id", "customer_id", "occasion", unique=True),
        index("state", "due_ts"),
        index("customer_id", "purpose", "due_at"),
        index("campaign_id", "group"),
        index("claim"),  # a sender reads back what it claimed
    ],
    COUPONS: [index("coupon_id", unique=True), index("order_id"), index("customer_id")],
    PURCHASES: [index("customer_id", "paid_at")],
    RECOVERIES: [index("customer_id", "recovered_at")],
}
PERSONAL_CONTENT = ("to", "subject", "text", "html")  # what an erased customer's messages lose


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def contact_from(d: dict[str, Any]) -> Contact:
    return Contact(
        customer_id=d["_id"],
        **{k: d.get(k) for k in ("name", "email", "phone", "city", "gender", "birth_date", "locale")},
        time_zone=d.get("time_zone"),
        consent=d.get("consent", {}),
        erased=d.get("erased", False),
    )


def coupon_document(c: Coupon) -> dict[str, Any]:
    return {
        "_id": c.code,
        "coupon_id": coupon_id_of(c.code),
        "customer_id": c.customer_id,
        "campaign_id": c.campaign_id,
        "offer": asdict(c.offer),
        "issued_at": c.issued_at,
        "expires_at": c.expires_at,
        "state": c.state.value,
        "order_id": c.order_id,
        "version": c.version,
    }


def coupon_from(d: dict[str, Any]) -> Coupon:
    return Coupon(
        code=d["_id"],
        customer_id=d["customer_id"],
        campaign_id=d["campaign_id"],
        offer=Offer(**d["offer"]),
        issued_at=as_utc(d["issued_at"]),
        expires_at=as_utc(d["expires_at"]),
        state=CouponState(d["state"]),
        order_id=d.get("order_id"),
        version=d.get("version", 0),
    )


def coupon_id_of(code: str) -> str:
    """The id events and reports name a coupon by: not the code, which only its holder sees."""
    return "cp-" + hashlib.sha256(code.encode()).hexdigest()[:20]


class EngagementStore:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self.db = db
        self.contacts = db[CONTACTS]
        self.campaigns = db[CAMPAIGNS]
        self.messages = db[MESSAGES]
        self.coupons = db[COUPONS]
        self.purchases = db[PURCHASES]
        self.recoveries = db[RECOVERIES]

    # --- contacts ------------------------------------------------------------------------------

    async def contact(self, customer_id: str, session: AsyncIOMotorClientSession | None = None) -> Contact:
        found = await self.contacts.find_one({"_id": customer_id}, session=session)
        return contact_from(found) if found else Contact(customer_id)

    async def contacts_of(
        self, customer_ids: list[str], session: AsyncIOMotorClientSession | None = None
    ) -> dict[str, Contact]:
        docs = await self.contacts.find({"_id": {"$in": customer_ids}}, session=session).to_list(None)
        return {d["_id"]: contact_from(d) for d in docs}

    async def contact_document(self, customer_id: str) -> dict[str, Any] | None:
        return await self.contacts.find_one({"_id": customer_id})

    async def merge_contact(
        self, customer_id: str, fields: dict[str, Any], session: AsyncIOMotorClientSession | None = None
    ) -> None:
        """An erased contact stays erased: a late registration or change adds nothing."""
        found = await self.contacts.find_one({"_id": customer_id}, {"erased": 1}, session=session)
        if found and found.get("erased"):
            return
        await self.contacts.update_one({"_id": customer_id}, {"$set": fields}, upsert=True, session=session)

    async def erase_contact(self, customer_id: str) -> None:
        await self.contacts.replace_one(
            {"_id": customer_id}, {"_id": customer_id, "erased": True}, upsert=True
        )

    # --- audiences ------------------------------------------------------------------------------

    async def add_audience(self, audience: dict[str, Any]) -> None:
        await self.db[AUDIENCES].insert_one(audience)

    async def audience(self, audience_id: str) -> dict[str, Any] | None:
        return await self.db[AUDIENCES].find_one({"_id": audience_id})

    # --- campaigns -----------------------------------------------------------------------------

    async def add_campaign(self, campaign: dict[str, Any]) -> None:
        await self.campaigns.insert_one(campaign)

    async def campaign(self, campaign_id: str) -> dict[str, Any] | None:
        return await self.campaigns.find_one({"_id": campaign_id})

    async def campaigns_list(self) -> list[dict[str, Any]]:
        return await self.campaigns.find({}).sort("created_at", -1).to_list(None)

    async def triggered_by(self, trigger: str) -> list[dict[str, Any]]:
        return await self.campaigns.find({"trigger": trigger, "status": "active"}).to_list(None)

    async def set_status(self, campaign_id: str, status: str) -> None:
        await self.campaigns.update_one({"_id": campaign_id}, {"$set": {"status": status}})

    async def holiday_campaigns(self) -> list[dict[str, Any]]:
        return await self.campaigns.find({"kind": "holiday", "status": "active"}).to_list(None)

    async def ran(self, campaign_id: str, day: str) -> None:
        await self.campaigns.update_one({"_id": campaign_id}, {"$addToSet": {"runs": day}})

    async def enrolling(self) -> dict[str, Any] | None:
        return await self.campaigns.find_one({"status": "enrolling"}, sort=[("created_at", 1)])

    async def enrolled(self, campaign_id: str, upto: int, done: bool) -> None:
        fields: dict[str, Any] = {"enrolled": upto}
        if done:
            fields["status"] = "active"
        await self.campaigns.update_one({"_id": campaign_id}, {"$set": fields})

    # --- messages ------------------------------------------------------------------------------

    async def existing_messages(self, message_ids: list[str], session: AsyncIOMotorClientSession) -> set[str]:
        docs = await self.messages.find({"_id": {"$in": message_ids}}, {"_id": 1}, session=session).to_list(
            None
        )
        return {d["_id"] for d in docs}

    async def add_messages(self, messages: list[dict[str, Any]], session: AsyncIOMotorClientSession) -> None:
        """The unique id (campaign and customer) refuses a second message in a race."""
        if messages:
            await self.messages.insert_many(
                [{**m, "due_ts": as_utc(m["due_at"]).timestamp()} for m in messages], session=session
            )

    async def backfill_due_ts(self) -> int:
        """Messages queued before `due_ts` was kept get it (once, when the sender starts)."""
        docs = await self.messages.find(
            {"state": {"$in": [State.PENDING.value, State.SENDING.value]}, "due_ts": {"$exists": False}},
            {"due_at": 1},
        ).to_list(None)
        for d in docs:
            await self.messages.update_one(
                {"_id": d["_id"]}, {"$set": {"due_ts": as_utc(d["due_at"]).timestamp()}}
            )
        return len(docs)

    async def message(
        self, message_id: str, session: AsyncIOMotorClientSession | None = None
    ) -> dict[str, Any] | None:
        return await self.messages.find_one({"_id": message_id}, session=session)

    async def recent_marketing(
        self, customer_ids: list[str], since: datetime, session: AsyncIOMotorClientSession
    ) -> dict[str, list[datetime]]:
        """When each customer's marketing messages went out or are due, since `since`."""
        docs = await self.messages.find(
            {
                "customer_id": {"$in": customer_ids},
                "purpose": "marketing",
                "state": {"$in": [State.PENDING.value, State.SENDING.value, State.SENT.value]},
                "due_at": {"$gt": since},
            },
            {"due_at": 1, "customer_id": 1},
            session=session,
        ).to_list(None)
        out: dict[str, list[datetime]] = {}
        for d in docs:
            out.setdefault(d["customer_id"], []).append(as_utc(d["due_at"]))
        return out

    async def due(self, now: datetime, wall: datetime, limit: int) -> list[dict[str, Any]]:
        """Due by the business clock (schedule, quiet hours) and past any retry wait, which
        runs on the wall clock (a relay's outage does not follow a rehearsal's clock). The
        wait and the claim's lease are epoch seconds: a date set by an update is text on the
        embedded server (mongo.DatabaseCapabilities.dates_in_updates). So is when it is due
        (`due_ts`): the embedded server compares dates in Python over every pending message,
        which at 100,000 queued made each round of the sender a scan."""
        return (
            await self.messages.find(
                {
                    "state": State.PENDING.value,
                    "due_ts": {"$lte": now.timestamp()},
                    "retry_ts": {"$lte": wall.timestamp()},
                }
            )
            .sort("due_ts", 1)
            .limit(limit)
            .to_list(None)
        )

    async def claim(self, message_ids: list[str], now: datetime, lease: timedelta) -> list[dict[str, Any]]:
        """Take due messages for sending, in one write; those another sender took first are
        left out (each claim carries its own token)."""
        token = uuid.uuid4().hex
        await self.messages.update_many(
            {"_id": {"$in": message_ids}, "state": State.PENDING.value},
            {"$set": {"state": State.SENDING.value, "lease_ts": (now + lease).timestamp(), "claim": token}},
        )
        return await self.messages.find({"claim": token, "state": State.SENDING.value}).to_list(None)

    async def reclaim_stale(self, now: datetime) -> int:
        """Messages whose sender died mid-send go back to pending (see service.send_due)."""
        result = await self.messages.update_many(
            {"state": State.SENDING.value, "lease_ts": {"$lt": now.timestamp()}},
            {"$set": {"state": State.PENDING.value}},
        )
        return result.modified_count

    async def finish(
        self, message_ids: list[str], fields: dict[str, Any], session: AsyncIOMotorClientSession
    ) -> None:
        """Record a send's answer for messages still claimed (one attempt more each)."""
        await self.messages.update_many(
            {"_id": {"$in": message_ids}, "state": State.SENDING.value},
            {"$set": fields, "$inc": {"attempts": 1}},
            session=session,
        )

    async def mark_once(
        self, message_id: str, field: str, at: datetime, session: AsyncIOMotorClientSession
    ) -> dict[str, Any] | None:
        """Set `field` the first time only (a flag, set false on insert, says whether it was);
        the message when it was set now."""
        flag = field.removesuffix("_at")
        return await self.messages.find_one_and_update(
            {"_id": message_id, flag: False, "state": State.SENT.value},
            {"$set": {field: at, flag: True}},
            session=session,
        )

    async def take_receipt(
        self, message_id: str, fields: dict[str, Any], session: AsyncIOMotorClientSession
    ) -> dict[str, Any] | None:
        """Record a provider's receipt on a sent message not yet delivered (domain.receipt_moves
        decided it may); the message as it was, or None when another receipt came first."""
        return await self.messages.find_one_and_update(
            {"_id": message_id, "state": State.SENT.value, "delivered_at": {"$exists": False}},
            {"$set": fields},
            session=session,
        )

    async def mark_unsubscribed(self, message_id: str, at: datetime) -> None:
        await self.messages.update_one(
            {"_id": message_id, "unsubscribed": False},
            {"$set": {"unsubscribed_at": at, "unsubscribed": True}},
        )

    async def messages_of_campaign(self, campaign_id: str) -> int:
        return await self.messages.count_documents({"campaign_id": campaign_id})

    async def arms(self, campaign_id: str) -> list[dict[str, Any]]:
        return await self.messages.find(
            {"campaign_id": campaign_id, "group": {"$in": ["treated", "control"]}},
            {
                "customer_id": 1,
                "group": 1,
                "state": 1,
                "assigned_at": 1,
                "opened_at": 1,
                "clicked_at": 1,
                "unsubscribed_at": 1,
                "delivered_at": 1,
                "coupon_id": 1,
            },
        ).to_list(None)

    async def messages_of(
        self, campaign_id: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await page(
            self.messages, {"campaign_id": campaign_id}, [("_id", 1)], limit, cursor, {"html": 0, "text": 0}
        )

    async def scrub_messages(self, customer_id: str, reason: str) -> None:
        await self.messages.update_many(
            {"customer_id": customer_id, "state": {"$in": [State.PENDING.value, State.SENDING.value]}},
            {"$set": {"state": State.SUPPRESSED.value, "reason": reason}},
        )
        await self.messages.update_many(
            {"customer_id": customer_id}, {"$unset": dict.fromkeys(PERSONAL_CONTENT, "")}
        )

    # --- coupons -------------------------------------------------------------------------------

    async def add_coupon(self, coupon: Coupon, session: AsyncIOMotorClientSession) -> None:
        await self.coupons.insert_one(coupon_document(coupon), session=session)

    async def coupon(self, code: str, session: AsyncIOMotorClientSession | None = None) -> Coupon | None:
        found = await self.coupons.find_one({"_id": code}, session=session)
        return coupon_from(found) if found else None

    async def coupons_of_order(
        self, order_id: str, session: AsyncIOMotorClientSession | None = None
    ) -> list[Coupon]:
        docs = await self.coupons.find({"order_id": order_id}, session=session).to_list(None)
        return [coupon_from(d) for d in docs]

    async def save_coupon(self, coupon: Coupon, session: AsyncIOMotorClientSession | None = None) -> Coupon:
        """Optimistic: the coupon must be as it was read; the loser of a race is retried and
        then sees the winner's state."""
        doc = coupon_document(coupon)
        doc["version"] = coupon.version + 1
        result = await self.coupons.replace_one(
            {"_id": coupon.code, "version": coupon.version}, doc, session=session
        )
        if result.matched_count != 1:
            raise ConcurrentChange(coupon.code)
        return coupon_from(doc)

    async def redemptions(self, campaign_id: str) -> int:
        return await self.coupons.count_documents(
            {"campaign_id": campaign_id, "state": CouponState.REDEEMED.value}
        )

    # --- purchases and recoveries (what a campaign is measured by) ------------------------------

    async def add_purchase(
        self, order_id: str, customer_id: str, cents: int, at: datetime, session: AsyncIOMotorClientSession
    ) -> None:
        await self.purchases.update_one(
            {"_id": order_id},
            {"$setOnInsert": {"customer_id": customer_id, "amount_cents": cents, "paid_at": at}},
            upsert=True,
            session=session,
        )

    async def cancel_purchase(self, order_id: str, session: AsyncIOMotorClientSession) -> None:
        await self.purchases.delete_one({"_id": order_id}, session=session)

    async def purchases_of(self, customer_ids: list[str]) -> dict[str, list[tuple[datetime, int]]]:
        out: dict[str, list[tuple[datetime, int]]] = {}
        for k in range(0, len(customer_ids), 1000):
            chunk = customer_ids[k : k + 1000]
            async for d in self.purchases.find({"customer_id": {"$in": chunk}}):
                out.setdefault(d["customer_id"], []).append((as_utc(d["paid_at"]), d["amount_cents"]))
        return out

    async def add_recovery(self, episode_id: str, customer_id: str, at: datetime) -> None:
        await self.recoveries.update_one(
            {"_id": episode_id},
            {"$setOnInsert": {"customer_id": customer_id, "recovered_at": at}},
            upsert=True,
        )

    async def recoveries_of(self, customer_ids: list[str]) -> dict[str, list[datetime]]:
        out: dict[str, list[datetime]] = {}
        for k in range(0, len(customer_ids), 1000):
            async for d in self.recoveries.find({"customer_id": {"$in": customer_ids[k : k + 1000]}}):
                out.setdefault(d["customer_id"], []).append(as_utc(d["recovered_at"]))
        return out
