"""Profiles (`crm_profiles.profiles`, the scorer is its only writer) and the population's
parameters in MongoDB."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import orjson
from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import ReplaceOne, UpdateOne

from services.common.clock import as_utc, parse_rfc3339, to_rfc3339
from services.common.mongo import index, projection

from . import facts as F
from .model import BgNbd, GammaGamma
from .scores import Population

PROFILES = "profiles"
POPULATION = "population"
INDEXES = {
    PROFILES: [
        index("next_review"),
        index("partition"),
        index("rfm.segment"),
        index("lifecycle.stage"),
        index("value.abc_class"),
        index("churn.risk"),
        index("has_pending"),
        # the profiles service's search: filters and sort keys
        index("loyalty.tier"),
        index("churn.level"),
        index("identity.city"),
        index("identity.registered_at"),
        index(("rank.clv", -1)),
        index(("rank.risk", -1)),
        index(("rank.spend", -1)),
        index(("rank.last_purchase", -1)),
    ],
    POPULATION: [],
}


def encode_facts(facts: F.Facts) -> str:
    """Facts are internal state keyed by arbitrary ids (which MongoDB field names may not
    hold), so they are stored as one encoded value.

    JSON text rather than binary. Embedded-stack gap: nx-27017 stores a binary value on insert
    but fails a replace or update that carries one ("Object of type bytes is not JSON
    serializable"). Signals waiting in a profile are kept as text for the same reason."""
    return orjson.dumps(facts, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$t": to_rfc3339(value)}
    raise TypeError(type(value))


def decode_facts(raw: str | bytes) -> F.Facts:
    return _revive(orjson.loads(raw))


def _revive(node: Any) -> Any:
    if isinstance(node, dict):
        if len(node) == 1 and "$t" in node:
            return parse_rfc3339(node["$t"])
        return {k: _revive(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_revive(v) for v in node]
    return node


class ProfileStore:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self.profiles = db[PROFILES]
        self.population = db[POPULATION]

    async def load(self, customer_ids: list[str]) -> dict[str, dict[str, Any]]:
        docs = await self.profiles.find({"_id": {"$in": customer_ids}}).to_list(None)
        return {d["_id"]: d for d in docs}

    async def write(self, docs: list[dict[str, Any]]) -> None:
        """One unordered bulk write for the whole batch."""
        if docs:
            await self.profiles.bulk_write(
                [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs], ordered=False
            )

    async def clear_pending(self, customer_ids: list[str]) -> None:
        """The profiles' signals reached the broker. (The scorer serialises its writes, so
        nothing new was added to them in between.)"""
        if customer_ids:
            await self.profiles.bulk_write(
                [
                    UpdateOne({"_id": cid}, {"$set": {"pending": [], "has_pending": False}})
                    for cid in customer_ids
                ],
                ordered=False,
            )

    async def with_pending(self, limit: int = 500) -> list[dict[str, Any]]:
        # A flag, not "pending.0": array-index paths are an embedded-stack gap.
        return (
            await self.profiles.find({"has_pending": True}, projection("pending")).limit(limit).to_list(None)
        )

    async def due(self, now: datetime, partitions: list[int], limit: int = 2000) -> list[str]:
        query: dict[str, Any] = {"next_review": {"$lte": now}}
        if partitions:
            query["partition"] = {"$in": partitions}
        return [d["_id"] for d in await self.profiles.find(query, {"_id": 1}).limit(limit).to_list(None)]

    async def ids(self, partitions: list[int]) -> list[str]:
        query = {"partition": {"$in": partitions}} if partitions else {}
        return [d["_id"] for d in await self.profiles.find(query, {"_id": 1}).to_list(None)]

    async def population_rows(self) -> list[dict[str, Any]]:
        rows = []
        async for doc in self.profiles.find({"purchases.count": {"$gt": 0}}, {"purchases": 1, "value": 1}):
            p = doc["purchases"]
            rows.append(
                {
                    "first_day": as_utc(p["first_day"]),
                    "last_day": as_utc(p["last_day"]),
                    "purchase_days": p["purchase_days"],
                    "count": p["count"],
                    "net_spend_cents": p["net_spend_cents"],
                    "mean_gap_days": p.get("mean_gap_days"),
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
