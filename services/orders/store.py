"""Orders in MongoDB (`crm_orders.orders`)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClientSession, AsyncIOMotorDatabase

from services.common.clock import as_utc
from services.common.errors import ConcurrentChange
from services.common.mongo import between, index
from services.common.pagination import page

from .domain import (
    Action,
    Item,
    Order,
    OrderFilters,
    SalesChange,
    Status,
    monthly_sales,
    net_sales,
    sales_totals,
)

ORDERS = "orders"
# Net sales by month of payment and currency, kept with every order change (a row a month and
# currency, so sales by month never read every order).
MONTHLY_SALES = "monthly_sales"
SALES_REBUILT = "rebuilt from the orders"  # the marker row of `rebuild_sales`
INDEXES = {
    ORDERS: [
        index("customer_id", ("placed_at", -1)),
        index("status", ("placed_at", -1)),
        index(("placed_at", -1)),
    ],
    MONTHLY_SALES: [index("month")],
}
LIST_SORT = [("placed_at", -1), ("_id", -1)]


def to_document(order: Order) -> dict[str, Any]:
    return {
        "_id": order.order_id,
        "customer_id": order.customer_id,
        "status": order.status.value,
        "items": [asdict(i) for i in order.items],
        "currency": order.currency,
        "channel": order.channel,
        "gross_cents": order.gross_cents,
        "discount_cents": order.discount_cents,
        "amount_cents": order.amount_cents,
        "paid_cents": order.paid_cents,
        "returned_cents": order.returned_cents,
        "refunded_cents": order.refunded_cents,
        "refunded_for_returns_cents": order.refunded_for_returns_cents,
        "promised_delivery_date": order.promised_delivery_date.isoformat()
        if order.promised_delivery_date
        else None,
        "placed_at": order.placed_at,
        "times": dict(order.times),
        "late": order.late,
        "history": list(order.history),
        "version": order.version,
        "benefits": order.benefits,
    }


def from_document(doc: dict[str, Any]) -> Order:
    promised = doc.get("promised_delivery_date")
    return Order(
        order_id=doc["_id"],
        customer_id=doc["customer_id"],
        items=tuple(Item(**i) for i in doc["items"]),
        currency=doc["currency"],
        channel=doc["channel"],
        discount_cents=doc["discount_cents"],
        amount_cents=doc["amount_cents"],
        placed_at=as_utc(doc["placed_at"]),
        promised_delivery_date=date.fromisoformat(promised) if promised else None,
        status=Status(doc["status"]),
        paid_cents=doc["paid_cents"],
        returned_cents=doc["returned_cents"],
        refunded_cents=doc["refunded_cents"],
        refunded_for_returns_cents=doc.get("refunded_for_returns_cents", 0),
        late=doc.get("late"),
        times={k: as_utc(v) for k, v in doc.get("times", {}).items()},
        history=tuple({**h, "at": as_utc(h["at"])} for h in doc.get("history", [])),
        version=doc.get("version", 0),
        benefits=doc.get("benefits"),
    )


class OrderStore:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self.orders = db[ORDERS]
        self.sales = db[MONTHLY_SALES]

    async def count_sales(
        self, changes: list[SalesChange | None], session: AsyncIOMotorClientSession
    ) -> None:
        """Add orders' changes to the monthly sales, in the transaction that stores them."""
        for total in sales_totals(changes):
            await self.sales.update_one(
                {"_id": f"{total.month} {total.currency}"},
                {
                    "$set": {"month": total.month, "currency": total.currency},
                    "$inc": {"net_sales_cents": total.net_sales_cents, "orders": total.orders},
                },
                upsert=True,
                session=session,
            )

    async def monthly_sales(self, first_month: str | None, last_month: str | None) -> list[dict[str, Any]]:
        """Rows of net sales by month (YYYY-MM, both ends included) and currency, oldest first."""
        months: dict[str, str] = {}
        if first_month:
            months["$gte"] = first_month
        if last_month:
            months["$lte"] = last_month
        docs = await self.sales.find({"month": months} if months else {}).to_list(None)
        return sorted(
            (
                {k: d[k] for k in ("month", "currency", "net_sales_cents", "orders")}
                for d in docs
                if "month" in d and (d["orders"] or d["net_sales_cents"])
            ),
            key=lambda row: (row["month"], row["currency"]),
        )

    async def rebuild_sales(self, session: AsyncIOMotorClientSession) -> int:
        """Monthly sales counted again from every paid order, once per database (a marker row
        says it was done): the orders stored before monthly sales were kept count too. Rows
        written by payments meanwhile are replaced, as their orders are read here as well.
        Months written."""
        if await self.sales.find_one({"_id": SALES_REBUILT}, session=session) is not None:
            return 0
        rows = monthly_sales([row async for row in self.paid_sales(None, None, session)])
        await self.sales.delete_many({}, session=session)
        await self.sales.insert_many(
            [{"_id": SALES_REBUILT}, *({"_id": f"{r['month']} {r['currency']}", **r} for r in rows)],
            session=session,
        )
        return len(rows)

    async def get(self, order_id: str, session: AsyncIOMotorClientSession | None = None) -> Order | None:
        doc = await self.orders.find_one({"_id": order_id}, session=session)
        return from_document(doc) if doc else None

    async def existing_ids(
        self, order_ids: list[str], session: AsyncIOMotorClientSession | None = None
    ) -> set[str]:
        docs = await self.orders.find({"_id": {"$in": order_ids}}, {"_id": 1}, session=session).to_list(None)
        return {d["_id"] for d in docs}

    async def insert(self, orders: list[Order], session: AsyncIOMotorClientSession) -> None:
        if orders:
            await self.orders.insert_many([to_document(o) for o in orders], session=session)

    async def replace(self, order: Order, session: AsyncIOMotorClientSession) -> Order:
        """Optimistic concurrency: the write lands only on the version that was read."""
        saved = type(order)(**{**order.__dict__, "version": order.version + 1})
        result = await self.orders.replace_one(
            {"_id": order.order_id, "version": order.version}, to_document(saved), session=session
        )
        if result.matched_count != 1:
            raise ConcurrentChange(order.order_id)
        return saved

    async def paid_sales(
        self, since: datetime | None, until: datetime | None, session: AsyncIOMotorClientSession | None = None
    ):
        """(currency, paid at, net sales) of every order paid in [since, until): reads every
        paid order, so only for rebuilding the monthly sales."""
        fields = {
            "currency": 1,
            "times": 1,
            "paid_cents": 1,
            "returned_cents": 1,
            "refunded_cents": 1,
            "refunded_for_returns_cents": 1,
        }
        async for d in self.orders.find({"paid_cents": {"$gt": 0}}, fields, session=session):
            paid_at = d.get("times", {}).get(Action.PAY.value)
            if paid_at is None:
                continue
            paid_at = as_utc(paid_at)
            if (since is None or paid_at >= since) and (until is None or paid_at < until):
                yield (
                    d["currency"],
                    paid_at,
                    net_sales(
                        d["paid_cents"],
                        d["returned_cents"],
                        d["refunded_cents"],
                        d.get("refunded_for_returns_cents", 0),
                    ),
                )

    async def list(
        self, filters: OrderFilters, limit: int, cursor: str | None
    ) -> tuple[list[Order], str | None]:
        query: dict[str, Any] = {}
        if filters.customer_id:
            query["customer_id"] = filters.customer_id
        if filters.status:
            query["status"] = filters.status.value
        if (placed := between(filters.placed_from, filters.placed_to)) is not None:
            query["placed_at"] = placed
        docs, next_cursor = await page(self.orders, query, LIST_SORT, limit, cursor)
        return [from_document(d) for d in docs], next_cursor
