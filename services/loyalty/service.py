"""Loyalty use cases: folding order and customer events into accounts, the expiry and tier
job, redemptions and adjustments. Every change stores the account, its ledger entries, the
consumed event's id and the events to publish in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from motor.motor_asyncio import AsyncIOMotorClientSession
from prometheus_client import Counter, Gauge

from services.common import kafka
from services.common.clock import Clock, parse_rfc3339
from services.common.erasure import SCRUBBED
from services.common.kafka import Delivered, Refused
from services.common.problems import Problem
from services.common.settings import Settings
from services.common.writes import IdempotencyKey, Outcome, Writes

from . import domain
from .domain import Account, Change, Programme, Tier
from .events import CONSUMED, GROUP, change_events
from .models import present_account, present_entry, present_tiers
from .store import LoyaltyStore

log = structlog.get_logger(__name__)

POINTS = Counter(
    "crm_loyalty_points_total", "Points moved, by event (points_earned, points_redeemed, ...).", ["kind"]
)
ACCOUNTS = Gauge("crm_loyalty_accounts", "Loyalty accounts by tier.", ["tier"])


def load_programme(path: Path | None) -> Programme:
    if path is None:
        return Programme()
    config = tomllib.loads(path.read_text()).get("loyalty", {})
    base = Programme()
    tiers = base.tiers
    if "tiers" in config:
        tiers = tuple(
            Tier(
                t["name"],
                int(t["threshold_cents"]),
                float(t["earn_multiplier"]),
                float(t.get("discount_percent", 0)),
                bool(t.get("free_shipping", False)),
            )
            for t in config["tiers"]
        )
        if [t.name for t in tiers] != list(domain.TIERS) or tiers[0].threshold_cents != 0:
            raise ValueError(f"tiers must be {', '.join(domain.TIERS)} in order, the first from 0")
    return Programme(
        tiers=tiers,
        points_per_unit=float(config.get("points_per_unit", base.points_per_unit)),
        points_per_unit_by_currency=dict(config.get("points_per_unit_by_currency", {})),
        spend_weight_by_currency=dict(config.get("spend_weight_by_currency", {})),
        lot_lifetime=timedelta(days=float(config.get("points_expire_after_days", 365))),
        expiring_soon=timedelta(days=float(config.get("expiry_notice_days", 30))),
        referral_bonus=int(config.get("referral_bonus", base.referral_bonus)),
    )


def count_points(events: list[dict[str, Any]]) -> None:
    """After the commit, so a retried transaction is counted once."""
    for event in events:
        if event["type"] not in ("crm.loyalty.tier_changed", "crm.loyalty.points_expiring"):
            POINTS.labels(event["type"].rsplit(".", 1)[1]).inc(event["data"]["points"])


class LoyaltyService:
    def __init__(self, store: LoyaltyStore, writes: Writes, clock: Clock, programme: Programme) -> None:
        self.store = store
        self.writes = writes
        self.clock = clock
        self.programme = programme

    async def _commit(self, change: Change, session: AsyncIOMotorClientSession) -> tuple[Account, list[dict]]:
        """The account (saved only on the version read), its entries numbered next in its
        ledger and the events telling them, in the caller's transaction."""
        change = domain.numbered(change)
        saved = await self.store.save(change.account, session)
        await self.store.append(change.entries, session)
        return saved, change_events(Change(saved, change.entries, change.facts))

    async def _run(
        self,
        work: Callable[[AsyncIOMotorClientSession], Awaitable[Outcome]],
        key: IdempotencyKey | None = None,
    ) -> Outcome:
        outcome = await self.writes.run(work, key)
        if not outcome.replayed:
            count_points(outcome.events)
        return outcome

    # --- consuming order and customer events (events.CONSUMED says which) -------------------------

    async def handle(self, batch: list[Delivered]) -> list[Refused]:
        """One transaction per batch; a redelivered event (already in processed_events) is skipped."""
        refused: list[Refused] = []

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            refused.clear()  # the transaction may run again
            published: list[dict[str, Any]] = []
            done = await self.store.seen_among([d.event["id"] for d in batch], session)  # one read per batch
            for delivered in batch:
                event = delivered.event
                if event["id"] in done:
                    continue
                done.add(event["id"])
                refused_before = len(refused)
                with structlog.contextvars.bound_contextvars(event_id=event["id"]):
                    published += await CONSUMED.dispatch(self, delivered, session, refused=refused) or []
                # A refused event is not taken: its replay from the dead letters after a fix must be.
                if len(refused) == refused_before:
                    await self.store.remember(event["id"], parse_rfc3339(event["time"]), session)
            return Outcome(200, None, published)

        await self._run(work)
        return refused

    async def earn(
        self,
        customer_id: str,
        order_id: str,
        amount_cents: int,
        currency: str,
        at: datetime,
        event_id: str,
        session: AsyncIOMotorClientSession,
    ) -> list[dict[str, Any]]:
        account = await self.store.get_or_new(customer_id, session)
        change = domain.order_paid(account, order_id, amount_cents, currency, at, event_id, self.programme)
        saved, published = await self._commit(change, session)
        return published + await self._referral(saved, at, session)

    async def reverse(
        self,
        customer_id: str,
        order_id: str,
        cents: int,
        reason: str,
        at: datetime,
        event_id: str,
        session: AsyncIOMotorClientSession,
    ) -> list[dict[str, Any]]:
        account = await self.store.get(customer_id, session)
        if account is None:
            return []
        change = domain.reverse_share(account, order_id, cents, at, reason, event_id, self.programme)
        return (await self._commit(change, session))[1]

    async def registered(
        self, customer_id: str, referrer: str | None, at: datetime, session: AsyncIOMotorClientSession
    ) -> list[dict[str, Any]]:
        account = await self.store.get_or_new(customer_id, session)
        saved = await self.store.save(domain.referred(account, referrer), session)
        return await self._referral(saved, at, session)

    async def _referral(
        self, referred: Account, at: datetime, session: AsyncIOMotorClientSession
    ) -> list[dict]:
        if not domain.referral_due(referred):
            return []
        referrer = await self.store.get_or_new(referred.referred_by, session)
        change, referred = domain.pay_referral(referrer, referred, at, self.programme)
        await self.store.save(referred, session)
        if referrer.closed:
            return []
        return (await self._commit(change, session))[1]

    async def consume(self, settings: Settings, stop: asyncio.Event) -> None:
        await kafka.consume(settings, GROUP, CONSUMED.topics, self.handle, stop)

    async def forget(self, customer_id: str) -> None:
        """Erasure (followed by services/common/erasure.py, apart from the events above): the
        account closes, and stays closed even if it did not exist yet, so whatever of the
        person's arrives after the erasure earns nothing and links no referral. Its points
        lapse through the ledger and a crm.loyalty event like any other change."""

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            account = await self.store.get_or_new(customer_id, session)
            published: list[dict[str, Any]] = []
            if not account.closed:
                change = domain.close(account, self.clock.now(), f"le-e-{customer_id}")
                published = (await self._commit(change, session))[1]
            await self.store.scrub_reasons(customer_id, SCRUBBED, session)
            return Outcome(200, None, published)

        await self._run(work)

    # --- expiry and tier reviews -----------------------------------------------------------------

    async def sweep(self) -> int:
        """Expire lots past their date, move tiers whose spend left the window, and announce
        lots coming within the expiry notice. Returns the accounts changed."""
        now = self.clock.now()
        changed = 0
        for customer_id in await self.store.due(now):

            async def work(session: AsyncIOMotorClientSession, customer_id: str = customer_id) -> Outcome:
                account = await self.store.get(customer_id, session)
                stamp = int(now.timestamp())
                expired = domain.expire(
                    account, now, f"expire:{customer_id}:{stamp}", f"le-x-{customer_id}-{stamp}"
                )
                retiered = domain.retier(expired.account, now, self.programme)
                announced = domain.announce_expiring(retiered.account, now, self.programme)
                change = domain.combine(expired, retiered, announced)
                return Outcome(200, None, (await self._commit(change, session))[1])

            try:
                await self._run(work)
                changed += 1
            except Problem:
                continue  # busy; the next sweep takes it
        for tier, n in (await self.store.tier_counts()).items():
            ACCOUNTS.labels(tier).set(n)
        return changed

    async def run_sweeper(self, stop: asyncio.Event, every: float) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:
                log.exception("loyalty sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    # --- the API's use cases -----------------------------------------------------------------------

    def present(self, account: Account) -> dict[str, Any]:
        return present_account(account, self.programme, self.clock.now())

    def tiers(self) -> dict[str, Any]:
        return present_tiers(self.programme)

    async def account(self, customer_id: str) -> dict[str, Any]:
        account = await self.store.get(customer_id)
        if account is None:
            raise domain.no_account(customer_id)
        return self.present(account)

    async def ledger(self, customer_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
        entries, next_cursor = await self.store.ledger_page(customer_id, limit, cursor)
        return {"items": [present_entry(e) for e in entries], "next_cursor": next_cursor}

    async def _account_change(
        self, customer_id: str, rule: Callable[[Account], Change], key: IdempotencyKey | None
    ) -> Outcome:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            account = await self.store.get(customer_id, session)
            if account is None:
                raise domain.no_account(customer_id)
            change = rule(account)
            saved, published = await self._commit(change, session)
            entry = change.entries[0]
            return Outcome(
                201,
                {
                    "entry_id": entry.entry_id,
                    "points": entry.points,
                    "balance": saved.balance,
                    "account": self.present(saved),
                },
                published,
            )

        return await self._run(work, key)

    async def redeem(self, customer_id: str, points: int, reason: str, key: IdempotencyKey | None) -> Outcome:
        now, entry = self.clock.now(), uuid.uuid4().hex[:20]
        return await self._account_change(
            customer_id,
            lambda a: domain.redeem(a, points, reason, now, f"redeem:{entry}", f"le-{entry}"),
            key,
        )

    async def adjust(
        self, customer_id: str, points: int, reason: str, by: str, key: IdempotencyKey | None
    ) -> Outcome:
        now, entry = self.clock.now(), uuid.uuid4().hex[:20]
        return await self._account_change(
            customer_id,
            lambda a: domain.adjust(
                a, points, f"{reason} (by {by})", now, f"adjust:{entry}", f"le-{entry}", self.programme
            ),
            key,
        )
