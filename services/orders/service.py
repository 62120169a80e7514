"""Order use cases: each loads, applies a domain rule, and stores the order with its events
in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from motor.motor_asyncio import AsyncIOMotorClientSession
from prometheus_client import Counter
from pydantic import ValidationError
from pymongo.errors import DuplicateKeyError

from services.common.clock import Clock
from services.common.errors import Kind
from services.common.fields import new_id
from services.common.peers import Peers
from services.common.problems import describe_validation_errors
from services.common.writes import IdempotencyKey, Outcome, Writes

from . import domain
from .domain import Action, Change, Order, OrderError, OrderFilters
from .events import change_events, events_for
from .models import CancelIn, ImportLine, OrderIn, PayIn, RefundIn, ReturnIn, ShipIn, present
from .store import OrderStore

TRANSITIONS = Counter("crm_orders_transitions_total", "Order state changes, by event.", ["transition"])
REVENUE = Counter("crm_orders_revenue_cents_total", "Paid order value, in minor units.", ["currency"])
REFUNDED = Counter("crm_orders_refunded_cents_total", "Refunded value, in minor units.", ["currency"])
IMPORT_CHUNK = 5000
MAX_REPORTED_REJECTS = 1000


def count(events: list[dict[str, Any]]) -> None:
    for event in events:
        TRANSITIONS.labels(event["type"].rsplit(".", 1)[1]).inc()
        data = event["data"]
        if event["type"] == "crm.order.paid":
            REVENUE.labels(data["currency"]).inc(data["amount_cents"])
        elif event["type"] == "crm.order.refunded":
            REFUNDED.labels(data["currency"]).inc(data["amount_cents"])


class OrderService:
    def __init__(self, store: OrderStore, writes: Writes, clock: Clock, peers: Peers | None = None) -> None:
        self.store = store
        self.writes = writes
        self.clock = clock
        self.peers = peers

    async def place(
        self, body: OrderIn, by: str, key: IdempotencyKey | None, authorization: str | None = None
    ) -> Outcome:
        # A retry under the same Idempotency-Key names the same order, so its coupon (held for
        # that order) is not refused as taken by the first try.
        order_id = body.order_id or (f"o-{key.id[:20]}" if key is not None else new_id("o"))
        items = [i.model_dump() for i in body.items]
        subtotal = max(domain.gross_cents(items) - body.discount_cents, 0)
        tier = await self._tier_of(body.customer_id, authorization) if body.tier_benefits else None
        coupon = None
        if body.coupon_code:
            coupon = await self._hold_coupon(
                body.coupon_code, body.customer_id, order_id, subtotal, authorization
            )
        benefits = (
            domain.tier_benefits(
                tier["tier"],
                tier["benefits"]["discount_percent"],
                tier["benefits"]["free_shipping"],
                subtotal - (coupon["discount_cents"] if coupon else 0),
            )
            if tier is not None
            else None
        )
        try:
            order = domain.new_order(
                order_id=order_id,
                customer_id=body.customer_id,
                items=items,
                currency=body.currency,
                channel=body.channel,
                discount_cents=body.discount_cents
                + (coupon["discount_cents"] if coupon else 0)
                + (benefits["discount_cents"] if benefits else 0),
                placed_at=body.placed_at or self.clock.now(),
                promised_delivery_date=body.promised_delivery_date,
                amount_cents=body.amount_cents,
                by=by,
                benefits=benefits,
            )

            async def work(session: AsyncIOMotorClientSession) -> Outcome:
                await self.store.insert([order], session)  # the unique _id refuses a second copy
                answer = present(order)
                if coupon:
                    answer["coupon"] = {"code": coupon["code"], "discount_cents": coupon["discount_cents"]}
                return Outcome(201, answer, events_for(order, domain.placed_facts(order)))

            try:
                outcome = await self.writes.run(work, key)
            except DuplicateKeyError:
                raise OrderError(f"order {order_id} already exists", Kind.CONFLICT) from None
        except Exception:
            if coupon:  # the order was not placed: the coupon must not stay held for it
                await self._let_go(body.coupon_code, order_id, authorization)
            raise
        if not outcome.replayed:
            count(outcome.events)
        return outcome

    async def _tier_of(self, customer_id: str, authorization: str | None) -> dict[str, Any] | None:
        """The customer's loyalty account as loyalty shows it (tier and benefits), asked with
        the caller's key; None for a customer without an account (no benefits to apply)."""
        if self.peers is None:
            raise OrderError("tier benefits are not applied here", Kind.UNAVAILABLE)
        answer = await self.peers.get("loyalty", f"/accounts/{quote(customer_id, safe='')}", authorization)
        if answer.status == "not_found":
            return None
        if not answer.ok:
            raise OrderError(
                "tier benefits cannot be checked now (loyalty is unavailable); retry", Kind.UNAVAILABLE
            )
        return None if answer.body.get("closed") else answer.body

    async def _hold_coupon(
        self, code: str, customer_id: str, order_id: str, subtotal: int, authorization: str | None
    ) -> dict[str, Any]:
        """Engagement holds the coupon for this order (one order wins a race for a code); it
        is redeemed when crm.order.paid arrives there, and released on crm.order.cancelled."""
        if self.peers is None:
            raise OrderError("coupons are not accepted here", Kind.UNAVAILABLE)
        answer = await self.peers.send(
            "engagement",
            f"/coupons/{quote(code, safe='')}/reservations",
            authorization,
            {"customer_id": customer_id, "order_id": order_id, "subtotal_cents": subtotal},
        )
        if answer.status == "refused":
            kind = {404: Kind.NOT_FOUND, 409: Kind.CONFLICT}.get(answer.code or 0, Kind.INVALID)
            raise OrderError(f"coupon refused: {answer.error}", kind, field="coupon_code")
        if not answer.ok:
            raise OrderError(
                "coupons cannot be checked now (engagement is unavailable); retry", Kind.UNAVAILABLE
            )
        return answer.body

    async def _let_go(self, code: str, order_id: str, authorization: str | None) -> None:
        if self.peers is not None:
            await self.peers.send(
                "engagement",
                f"/coupons/{quote(code, safe='')}/release",
                authorization,
                {"order_id": order_id},
            )

    async def act(
        self, order_id: str, action: Action, body: Any, by: str, key: IdempotencyKey | None
    ) -> Outcome:
        at = body.at or self.clock.now()
        apply = self._rule(action, body, at, by)

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            order = await self.store.get(order_id, session)
            if order is None:
                raise domain.no_order(order_id)
            change = apply(order)
            saved = await self.store.replace(change.order, session)
            await self.store.count_sales([domain.sales_change(order, change.order)], session)
            return Outcome(200, present(saved), change_events(change))

        outcome = await self.writes.run(work, key)
        if not outcome.replayed:
            count(outcome.events)
        return outcome

    def _rule(self, action: Action, body: Any, at: datetime, by: str) -> Callable[[Order], Change]:
        if action is Action.PAY:
            stated = body.amount_cents if isinstance(body, PayIn) else None
            return lambda order: domain.pay(order, at, by, stated)
        if action is Action.SHIP:
            assert isinstance(body, ShipIn)
            return lambda order: domain.ship(order, at, by, body.carrier, body.tracking_number)
        if action is Action.DELIVER:
            return lambda order: domain.deliver(order, at, by)
        if action is Action.CANCEL:
            assert isinstance(body, CancelIn)
            return lambda order: domain.cancel(order, at, body.reason, new_id("rf"), by)
        if action is Action.RETURN:
            assert isinstance(body, ReturnIn)
            lines = [i.model_dump() for i in body.items] if body.items else None
            return lambda order: domain.return_items(order, at, new_id("r"), body.reason, lines, by)
        assert isinstance(body, RefundIn)
        return lambda order: domain.refund(order, at, new_id("rf"), body.amount_cents, by)

    # --- reading -----------------------------------------------------------------------------

    async def order(self, order_id: str) -> dict[str, Any]:
        order = await self.store.get(order_id)
        if order is None:
            raise domain.no_order(order_id)
        return present(order)

    async def orders(self, filters: OrderFilters, limit: int, cursor: str | None) -> dict[str, Any]:
        found, next_cursor = await self.store.list(filters, limit, cursor)
        return {"items": [present(o) for o in found], "next_cursor": next_cursor}

    async def monthly_sales(self, paid_from: datetime | None, paid_to: datetime | None) -> dict[str, Any]:
        """Whole months: from the month of `paid_from` to the month before `paid_to` ends."""
        first = paid_from.astimezone(UTC).strftime("%Y-%m") if paid_from else None
        last = (paid_to.astimezone(UTC) - timedelta(microseconds=1)).strftime("%Y-%m") if paid_to else None
        return {"items": await self.store.monthly_sales(first, last)}

    async def rebuild_sales(self) -> None:
        """Once, at start: monthly sales of the orders stored before they were kept."""

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            return Outcome(200, {"months": await self.store.rebuild_sales(session)})

        await self.writes.run(work)

    # --- history import -----------------------------------------------------------------

    async def import_ndjson(self, raw: bytes) -> dict[str, Any]:
        """Validate each line; store accepted orders with their events (historical times) in
        chunks; report rejects by line number. Re-importing an order is a duplicate, not a
        second copy."""
        report: dict[str, Any] = {
            "lines": 0,
            "accepted": 0,
            "duplicates": 0,
            "rejected": 0,
            "events": 0,
            "rejects": [],
        }
        pending: list[tuple[Order, list[dict[str, Any]]]] = []
        for number, line in enumerate(raw.split(b"\n"), 1):
            if not line.strip():
                continue
            report["lines"] += 1
            try:
                order, facts = history(ImportLine.model_validate_json(line))
            except ValidationError as exc:
                self._reject(report, number, describe_validation_errors(exc.errors(include_url=False))[0])
                continue
            except OrderError as exc:
                self._reject(report, number, exc.detail)
                continue
            pending.append((order, events_for(order, facts)))
            if len(pending) >= IMPORT_CHUNK:
                await self._store_chunk(pending, report)
                pending = []
        if pending:
            await self._store_chunk(pending, report)
        return report

    @staticmethod
    def _reject(report: dict[str, Any], line: int, error: str) -> None:
        report["rejected"] += 1
        if len(report["rejects"]) < MAX_REPORTED_REJECTS:
            report["rejects"].append({"line": line, "error": error})

    async def _store_chunk(
        self, chunk: list[tuple[Order, list[dict[str, Any]]]], report: dict[str, Any]
    ) -> None:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            seen = await self.store.existing_ids([o.order_id for o, _ in chunk], session)
            fresh, events = [], []
            for order, order_events in chunk:
                if order.order_id in seen:
                    continue
                seen.add(order.order_id)
                fresh.append(order)
                events.extend(order_events)
            await self.store.insert(fresh, session)
            await self.store.count_sales([domain.sales_change(None, o) for o in fresh], session)
            return Outcome(200, {"accepted": len(fresh), "duplicates": len(chunk) - len(fresh)}, events)

        outcome = await self.writes.run(work)
        report["accepted"] += outcome.body["accepted"]
        report["duplicates"] += outcome.body["duplicates"]
        report["events"] += len(outcome.events)
        count(outcome.events)


def history(line: ImportLine) -> tuple[Order, list[tuple[str, dict[str, Any]]]]:
    """One import line as the order it became and every event fact of its life."""
    order = domain.new_order(
        order_id=line.order_id,
        customer_id=line.customer_id,
        items=[i.model_dump() for i in line.items],
        currency=line.currency,
        channel=line.channel,
        discount_cents=line.discount_cents,
        placed_at=line.placed_at,
        promised_delivery_date=line.promised_delivery_date,
        amount_cents=line.amount_cents,
        by="import",
    )
    times = {
        Action.PAY: line.paid_at,
        Action.SHIP: line.shipped_at,
        Action.DELIVER: line.delivered_at,
        Action.RETURN: line.returned_at,
        Action.CANCEL: line.cancelled_at,
    }
    return domain.rebuild_history(order, times, line.return_reason)
