"""The profiles service's own collections in `crm_profiles` (customers, churn warnings,
segment moves) and its read-only view of the live profiles the scorer writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClientSession, AsyncIOMotorDatabase
from pymongo import InsertOne, ReplaceOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.clock import as_utc
from services.common.errors import ConcurrentChange
from services.common.mongo import add_epoch_seconds, between, epoch_seconds, index
from services.common.pagination import Sort, page

from .domain import ChurnWarning, Customer, ProfileFilters, WarningFilters, WarningStatus

CUSTOMERS = "customers"
WARNINGS = "churn_warnings"
MOVES = "segment_moves"
PROFILES = "profiles"  # the scorer's; read only here
ERASURES = "erasures"  # who was erased, when and by whom: a second erasure or registration is refused
ACTIVITY = "customer_activity"  # the 360 view's read model (activity.py), one document per customer
EXPORTS = "exports"  # every bulk export of personal data: who, when, what filter
INDEXES = {
    ERASURES: [],
    EXPORTS: [index(("at", -1))],
    CUSTOMERS: [index(("registered_at", -1))],
    WARNINGS: [
        index(("open_rank", -1), ("value_at_risk_cents", -1)),
        index("customer_id"),
        index("status"),
        index("assignee"),
    ],
    MOVES: [index(("at", -1)), index("at_ts")],
    ACTIVITY: [],
}
WARNING_SORT: Sort = [("open_rank", -1), ("value_at_risk_cents", -1), ("_id", -1)]
# Where each search criterion and summary dimension sits in a live profile.
PROFILE_FIELDS = {
    "gender": "identity.gender",
    "city_tier": "identity.city_tier",
    "channel": "identity.channel",
    "marketing_consent": "consent.marketing",
    "segment": "rfm.segment",
    "lifecycle_stage": "lifecycle.stage",
    "abc_class": "value.abc_class",
    "tier": "loyalty.tier",
    "churn_level": "churn.level",
    "city": "identity.city",
}
# The never-null field each search order sorts on (the scorer keeps them under `rank`).
SORT_FIELDS = {
    "clv": "rank.clv",
    "risk": "rank.risk",
    "spend": "rank.spend",
    "recency": "rank.last_purchase",
}
# What the scorer keeps for itself in a profile; not part of any answer.
INTERNAL = ("facts", "pending", "pending_seq", "write_seq", "next_review_ts", "partition", "rank")


def search_query(filters: ProfileFilters) -> dict[str, Any]:
    query: dict[str, Any] = {
        path: value for name, path in PROFILE_FIELDS.items() if (value := getattr(filters, name)) is not None
    }
    if filters.min_risk is not None:
        query["rank.risk"] = {"$gte": filters.min_risk}  # churn.risk, indexed (-1 when not scored)
    if (registered := between(filters.registered_from, filters.registered_to)) is not None:
        query["identity.registered_at"] = registered
    if filters.born is not None:
        query["identity.birth_date"] = {"$gt": filters.born[0], "$lte": filters.born[1]}
    for name, kind in (("category", "categories"), ("brand", "brands")):
        if (wanted := getattr(filters, name)) is not None:
            # $elemMatch unindexed: nx-27017 answers a multikey index on it wrongly (empty)
            query[f"affinity.{kind}"] = {
                "$elemMatch": {"name": wanted, "share": {"$gte": filters.min_affinity or 0}}
            }
    return query


def search_sort(sort: str, ascending: bool) -> Sort:
    if sort == "recency":
        ascending = not ascending  # the stored key is the last purchase's time, the quantity an age
    direction = 1 if ascending else -1
    return [(SORT_FIELDS[sort], direction), ("_id", direction)]


def search_row(doc: dict[str, Any]) -> dict[str, Any]:
    """One search hit: who, and the scores an operations list sorts and filters by."""
    identity, rfm, value = doc.get("identity", {}), doc.get("rfm", {}), doc.get("value", {})
    churn, purchases = doc.get("churn", {}), doc.get("purchases", {})
    affinity = doc.get("affinity") or {}
    categories, brands = affinity.get("categories") or [{}], affinity.get("brands") or [{}]
    return {
        "customer_id": doc["_id"],
        "name": identity.get("name"),
        "email": identity.get("email"),
        "city": identity.get("city"),
        "registered_at": identity.get("registered_at"),
        "segment": rfm.get("segment"),
        "rfm_code": rfm.get("code"),
        "lifecycle_stage": (doc.get("lifecycle") or {}).get("stage"),
        "abc_class": value.get("abc_class"),
        "tier": (doc.get("loyalty") or {}).get("tier"),
        "purchases": purchases.get("count"),
        "net_spend_cents": purchases.get("net_spend_cents"),
        "recency_days": rfm.get("recency_days"),
        "clv_12m_cents": value.get("clv_12m_cents"),
        "p_alive": value.get("p_alive"),
        "churn_risk": churn.get("risk"),
        "churn_level": churn.get("level"),
        "gender": identity.get("gender"),
        "birth_date": identity.get("birth_date"),
        "city_tier": identity.get("city_tier"),
        "channel": identity.get("channel"),
        "marketing_consent": (doc.get("consent") or {}).get("marketing"),
        "top_category": categories[0].get("name"),
        "top_category_share": categories[0].get("share"),
        "top_brand": brands[0].get("name"),
        "top_brand_share": brands[0].get("share"),
    }


def profile_view(doc: dict[str, Any]) -> dict[str, Any]:
    """The live profile as the API shows it: `computed_at` is when the scorer last wrote it,
    `scored_as_of` the moment its scores describe (event time during a replay)."""
    out = {k: v for k, v in doc.items() if k not in ("_id", "updated_at", "scored_at", "event_time")}
    out["computed_at"] = doc.get("updated_at")
    out["scored_as_of"] = doc.get("scored_at")
    out["latest_event_at"] = doc.get("event_time")
    return out


def _erasure_from(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in doc.items() if k != "_id"},
        "customer_id": doc["_id"],
        "erased_at": as_utc(doc["erased_at"]),
    }


def customer_document(c: Customer) -> dict[str, Any]:
    doc = {k: v for k, v in c.__dict__.items() if k != "customer_id"}
    doc["_id"] = c.customer_id
    doc["consent_history"] = list(c.consent_history)
    return doc


def customer_from(doc: dict[str, Any]) -> Customer:
    fields = {k: v for k, v in doc.items() if k != "_id"}
    for name in ("registered_at", "consent_changed_at", "erased_at"):
        if fields.get(name) is not None:
            fields[name] = as_utc(fields[name])
    fields["consent_history"] = tuple({**h, "at": as_utc(h["at"])} for h in fields.get("consent_history", ()))
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
        value_at_risk_cents=doc.get("value_at_risk_cents", round(doc.get("clv_cents", 0) * doc["risk"])),
        ended_by=doc.get("ended_by"),
        **{t: as_utc(doc[t]) if doc.get(t) is not None else None for t in times},
    )


def activity_document(a: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in a.items() if k != "customer_id"}
    doc["_id"] = a["customer_id"]
    return doc


def activity_from(doc: dict[str, Any]) -> dict[str, Any]:
    a = {k: v for k, v in doc.items() if k != "_id"}
    a["customer_id"] = doc["_id"]
    return a


class ProfilesStore:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self.db = db
        self.customers = db[CUSTOMERS]
        self.warnings = db[WARNINGS]
        self.moves = db[MOVES]
        self.profiles = db[PROFILES]
        self.erasures = db[ERASURES]
        self.activity = db[ACTIVITY]
        self.exports = db[EXPORTS]

    # --- customers ------------------------------------------------------------------------

    async def get_customer(
        self, customer_id: str, session: AsyncIOMotorClientSession | None = None
    ) -> Customer | None:
        doc = await self.customers.find_one({"_id": customer_id}, session=session)
        return customer_from(doc) if doc else None

    async def names_of(self, customer_ids: list[str]) -> dict[str, str | None]:
        """The registered names of a page's customers, in one read."""
        docs = await self.customers.find({"_id": {"$in": customer_ids}}, {"name": 1}).to_list(None)
        return {d["_id"]: d.get("name") for d in docs}

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

    # --- erasures ---------------------------------------------------------------------------

    async def erasure(
        self, customer_id: str, session: AsyncIOMotorClientSession | None = None
    ) -> dict[str, Any] | None:
        """The erasure record of this customer (customer_id, erased_at, requested_by, reason),
        if erased."""
        doc = await self.erasures.find_one({"_id": customer_id}, session=session)
        return _erasure_from(doc) if doc else None

    async def record_erasure(
        self,
        customer_id: str,
        erased_at: datetime,
        requested_by: str,
        reason: str | None,
        session: AsyncIOMotorClientSession,
    ) -> dict[str, Any]:
        doc = {"_id": customer_id, "erased_at": erased_at, "requested_by": requested_by}
        if reason:
            doc["reason"] = reason
        await self.erasures.insert_one(doc, session=session)
        return _erasure_from(doc)

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
        self, filters: WarningFilters, limit: int, cursor: str | None
    ) -> tuple[list[ChurnWarning], str | None]:
        query = {
            k: v
            for k, v in (
                ("status", filters.status.value if filters.status else None),
                ("assignee", filters.assignee),
                ("customer_id", filters.customer_id),
            )
            if v is not None
        }
        docs, next_cursor = await page(self.warnings, query, WARNING_SORT, limit, cursor)
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
                    "at_ts": epoch_seconds(at),  # what period reads select on (mongo.epoch_seconds)
                }
            )
        except DuplicateKeyError:
            pass  # a redelivered signal

    async def record_export(self, record: dict[str, Any]) -> None:
        await self.exports.insert_one({"_id": record["export_id"], **record})

    async def moves_between(self, since: datetime | None, until: datetime | None) -> list[tuple[str, str]]:
        seconds = between(epoch_seconds(since) if since else None, epoch_seconds(until) if until else None)
        query = {"at_ts": seconds} if seconds else {}
        return [(d["from"], d["to"]) async for d in self.moves.find(query, {"from": 1, "to": 1})]

    # --- the 360 view's read model ------------------------------------------------------------

    async def activity_of(
        self, customer_id: str, session: AsyncIOMotorClientSession | None = None
    ) -> dict[str, Any] | None:
        doc = await self.activity.find_one({"_id": customer_id}, session=session)
        return activity_from(doc) if doc else None

    async def activities_of(self, customer_ids: list[str]) -> dict[str, dict[str, Any]]:
        """A batch's customers in one read."""
        docs = await self.activity.find({"_id": {"$in": customer_ids}}).to_list(None)
        return {d["_id"]: activity_from(d) for d in docs}

    async def save_activities(
        self, changed: list[dict[str, Any]], session: AsyncIOMotorClientSession | None = None
    ) -> None:
        """One bulk write: each document replaces the version it was folded from (a new one is
        inserted). Another writer in between (an erasure) raises ConcurrentChange, and the
        caller folds again from what is stored now."""
        writes = [
            InsertOne(activity_document({**a, "version": 1}))
            if a["version"] == 0
            else ReplaceOne(
                {"_id": a["customer_id"], "version": a["version"]},
                activity_document({**a, "version": a["version"] + 1}),
            )
            for a in changed
        ]
        if not writes:
            return
        try:
            result = await self.activity.bulk_write(writes, ordered=False, session=session)
        except BulkWriteError as exc:
            raise ConcurrentChange(f"{len(exc.details.get('writeErrors', []))} activity documents") from None
        if result.matched_count != sum(1 for a in changed if a["version"]):
            raise ConcurrentChange("activity documents changed meanwhile")

    async def add_epoch_seconds(self) -> None:
        """Segment moves stored before their epoch seconds were kept get them."""
        await add_epoch_seconds(self.moves, "at", "at_ts")

    # --- live profiles (read only) ----------------------------------------------------------

    async def profile(self, customer_id: str) -> dict[str, Any] | None:
        """The live profile as the API shows it (see profile_view), None before its first score."""
        doc = await self.profiles.find_one({"_id": customer_id}, {name: 0 for name in INTERNAL})
        return profile_view(doc) if doc else None

    async def search(
        self, filters: ProfileFilters, sort: str, ascending: bool, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of search rows (see search_row)."""
        docs, next_cursor = await page(
            self.profiles,
            search_query(filters),
            search_sort(sort, ascending),
            limit,
            cursor,
            {"facts": 0, "pending": 0},
        )
        return [search_row(d) for d in docs], next_cursor

    async def group_totals(self, dimension: str) -> list[dict[str, Any]]:
        """Customers, net spend and CLV summed by one profile dimension (segment,
        lifecycle_stage, abc_class, tier, ...; a $group both MongoDB and the embedded server
        serve)."""
        field = PROFILE_FIELDS[dimension]
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
