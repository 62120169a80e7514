"""Profiles (`crm_profiles.profiles`, the scorer is its only writer) and the population's
parameters in MongoDB."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import orjson
from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import ReplaceOne, ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.clock import as_utc, parse_rfc3339
from services.common.mongo import index, projection

from . import facts as F
from .model import BgNbd, GammaGamma
from .scores import Population

PROFILES = "profiles"
POPULATION = "population"
PUBLISHED = "signals_published"  # per partition: the batch sequence whose signals are all out
RETAINED = "signals_retained"  # published signals kept for the retention window (outbox.Retention)
DUPLICATE_KEY = 11000
REFRESH_LEASE = "refresh_lease"  # in POPULATION: which worker runs the population job, until when
# Every index costs each profile write (about 14 µs a document on nx-27017, a
# quarter of the write at 15 indexes), so only what a query needs: the review timer, the
# signals waiting to be published, and the profiles service's sort keys and its two selective
# filters. Low-cardinality filters (segment, stage, class, tier, level) ride a sort index.
INDEXES = {
    PROFILES: [
        index("next_review_ts"),
        index("pending_seq"),
        index(("rank.clv", -1)),
        index(("rank.risk", -1)),
        index(("rank.spend", -1)),
        index(("rank.last_purchase", -1)),
        index("identity.city"),
        index("identity.registered_at"),
    ],
    POPULATION: [],
    PUBLISHED: [],
    RETAINED: [index("expires_at")],
}


def encode_facts(facts: F.Facts) -> str:
    """Facts are internal state keyed by arbitrary ids (which MongoDB field names may not
    hold), so they are stored as one encoded value; orjson writes the times (RFC 3339) and
    `decode_facts` knows them by their keys (`facts.TIME_KEYS`).

    JSON text rather than binary, as are the signals waiting in a profile: a profile is
    replaced on every write (`DatabaseCapabilities.binary_in_updates` in
    services/common/mongo.py)."""
    return orjson.dumps(facts, option=orjson.OPT_UTC_Z).decode()


def decode_facts(raw: str | bytes) -> F.Facts:
    return _revive(orjson.loads(raw))


def _revive(node: Any) -> Any:
    if isinstance(node, dict):
        if len(node) == 1 and "$t" in node:  # the earlier tagged form of a time
            return parse_rfc3339(node["$t"])
        return {
            k: parse_rfc3339(v) if k in F.TIME_KEYS and isinstance(v, str) else _revive(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_revive(v) for v in node]
    return node


SIGNALS_STORED = projection("pending", "pending_seq", "partition")  # what the backlog sweep reads


class ProfileStore:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self.db = db
        self.profiles = db[PROFILES]
        self.population = db[POPULATION]
        self.published = db[PUBLISHED]

    async def load(self, customer_ids: list[str]) -> dict[str, dict[str, Any]]:
        docs = await self.profiles.find({"_id": {"$in": customer_ids}}).to_list(None)
        return {d["_id"]: d for d in docs}

    async def write(self, docs: list[dict[str, Any]]) -> set[str]:
        """One unordered bulk write for the whole batch, fenced: a profile is replaced only by
        a write of the same or a later batch (`write_seq`), so a write that comes late (a
        worker whose partitions moved to another) changes nothing. Returns the ids of the
        profiles a later batch had written already: the replace matched nothing and its upsert
        met the stored `_id`."""
        if not docs:
            return set()
        try:
            await self.profiles.bulk_write(
                [
                    ReplaceOne({"_id": d["_id"], "write_seq": {"$lte": d["write_seq"]}}, d, upsert=True)
                    for d in docs
                ],
                ordered=False,
            )
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors) or exc.details.get("writeConcernErrors"):
                raise
            return {docs[e["index"]]["_id"] for e in errors}
        return set()

    async def version_profiles(self) -> None:
        """Profiles stored before writes were fenced get batch number 0, so any write passes
        their fence (a missing field would match no `$lte`)."""
        await self.profiles.update_many({"write_seq": {"$exists": False}}, {"$set": {"write_seq": 0}})

    async def reachable(self) -> bool:
        try:
            await self.profiles.database.command("ping")
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False

    async def published_marks(self) -> dict[int, int]:
        """Per partition, the batch sequence up to which every stored signal was published."""
        return {d["_id"]: d["seq"] async for d in self.published.find({})}

    async def mark_published(self, marks: dict[int, int]) -> None:
        if marks:
            await self.published.bulk_write(
                [UpdateOne({"_id": p}, {"$max": {"seq": seq}}, upsert=True) for p, seq in marks.items()],
                ordered=False,
            )

    async def pending_batches(
        self, marks: dict[int, int], partitions: list[int], limit: int
    ) -> list[tuple[int, list[dict[str, Any]]]]:
        """Profiles whose stored signals may not have been published, by batch, oldest first,
        and only batches read whole: a batch spans partitions, and a partition's page of
        `limit` may end inside one. A first batch larger than a page is read on its own.

        One query a partition rather than one `$or`, each over the `pending_seq` index
        (`DatabaseCapabilities.indexed_or`: on the embedded server 2 s at 30,000 profiles as
        one `$or`, 0.07 s for all twelve partitions' queries)."""
        pages = [
            await self.profiles.find(
                {"partition": p, "pending_seq": {"$gt": marks.get(p, 0)}}, SIGNALS_STORED
            )
            .sort([("pending_seq", 1)])
            .limit(limit)
            .to_list(None)
            for p in partitions
        ]
        docs = [d for page in pages for d in page]
        if not docs:
            return []
        horizon = complete_below(pages, limit)
        batches = sorted({d["pending_seq"] for d in docs})
        whole = [seq for seq in batches if horizon is None or seq < horizon]
        if not whole:
            return [(batches[0], await self.batch_pending(batches[0], partitions))]
        return [(seq, [d for d in docs if d["pending_seq"] == seq]) for seq in whole]

    async def batch_pending(self, seq: int, partitions: list[int]) -> list[dict[str, Any]]:
        """Every profile on these partitions whose stored signals are of batch `seq`."""
        query = {"pending_seq": seq, "partition": {"$in": partitions}}
        return await self.profiles.find(query, SIGNALS_STORED).to_list(None)

    async def due(self, now: datetime, partitions: list[int], limit: int = 2000) -> list[str]:
        """Profiles whose review time has come. The time is epoch seconds, not a date
        (`DatabaseCapabilities.indexed_date_ranges`)."""
        query: dict[str, Any] = {"next_review_ts": {"$lte": now.timestamp()}}
        if partitions:
            query["partition"] = {"$in": partitions}
        return [d["_id"] for d in await self.profiles.find(query, {"_id": 1}).limit(limit).to_list(None)]

    async def ids(self, partitions: list[int]) -> list[str]:
        query = {"partition": {"$in": partitions}} if partitions else {}
        return [d["_id"] for d in await self.profiles.find(query, {"_id": 1}).to_list(None)]

    async def population_rows(self) -> list[dict[str, Any]]:
        rows = []
        # An aggregation, not a find (`DatabaseCapabilities.find_projection_in_sql`: on the
        # embedded server 3.5 s for 30,000 profiles as a find, 1 s as a pipeline).
        wanted = [{"$match": {"purchases.count": {"$gt": 0}}}, {"$project": {"purchases": 1, "value": 1}}]
        async for doc in self.profiles.aggregate(wanted):
            p = doc["purchases"]
            rows.append(
                {
                    "first_day": as_utc(p["first_day"]),
                    "last_day": as_utc(p["last_day"]),
                    "purchase_days": p["purchase_days"],
                    "count": p["count"],
                    "net_spend_cents": p["net_spend_cents"],
                    "mean_gap_days": p.get("mean_gap_days"),
                    "first_gap_days": p.get("first_gap_days"),
                    "trailing_spend_cents": doc["value"]["trailing_spend_cents"],
                }
            )
        return rows

    async def load_population(self) -> Population | None:
        doc = await self.population.find_one({"_id": "current"})
        if not doc:
            return None
        return Population(
            recency_bounds=tuple(doc["recency_bounds"]),
            frequency_bounds=tuple(doc["frequency_bounds"]),
            monetary_bounds=tuple(doc["monetary_bounds"]),
            abc_a_min_cents=doc["abc_a_min_cents"],
            abc_b_min_cents=doc["abc_b_min_cents"],
            median_gap_days=doc["median_gap_days"],
            repeat_gap_days=doc.get("repeat_gap_days", Population.repeat_gap_days),
            median_clv_cents=doc["median_clv_cents"],
            bgnbd=BgNbd(**doc["bgnbd"]),
            gamma_gamma=GammaGamma(**doc["gamma_gamma"]),
            fitted_at=as_utc(doc["fitted_at"]),
            customers=doc["customers"],
        )

    async def save_population(self, population: Population, seconds: float) -> None:
        doc = asdict(population)
        doc.update(
            _id="current",
            fit_seconds=seconds,
            recency_bounds=list(population.recency_bounds),
            frequency_bounds=list(population.frequency_bounds),
            monetary_bounds=list(population.monetary_bounds),
        )
        await self.population.replace_one({"_id": "current"}, doc, upsert=True)

    async def claim_population_refresh(self, holder: str, now: float, seconds: float) -> bool:
        """The population job's lease for the next `seconds` (epoch seconds), taken by one
        worker at a time: one atomic update conditioned on the last lease having run out, no
        transaction. Counts the runs it hands out (`runs`). While another worker's lease
        holds, the condition matches nothing and the upsert meets the stored `_id` (a
        duplicate key; the embedded server answers no document instead)."""
        try:
            lease = await self.population.find_one_and_update(
                {"_id": REFRESH_LEASE, "until": {"$lte": now}},
                {"$set": {"holder": holder, "until": now + seconds}, "$inc": {"runs": 1}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False
        return lease is not None and lease.get("holder") == holder

    async def counts(self) -> dict[str, dict[Any, int]]:
        """Profiles by segment, lifecycle stage and ABC class (the profiles gauge)."""
        counted = {}
        for dimension, field in (
            ("segment", "$rfm.segment"),
            ("lifecycle", "$lifecycle.stage"),
            ("abc", "$value.abc_class"),
        ):
            rows = await self.profiles.aggregate([{"$group": {"_id": field, "n": {"$sum": 1}}}]).to_list(None)
            counted[dimension] = {row["_id"]: row["n"] for row in rows}
        return counted


def complete_below(pages: list[list[dict[str, Any]]], limit: int) -> int | None:
    """Pages of profiles with stored signals, one a partition, each sorted by batch and cut at
    `limit`: the first batch that may have profiles not read yet, or None when every page
    ended early (nothing is left unread). A full page may end inside its last batch, and
    later batches may have profiles on its partition beyond it."""
    cuts = [page[-1]["pending_seq"] for page in pages if len(page) >= limit]
    return min(cuts) if cuts else None
