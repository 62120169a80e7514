"""Profiles use cases: registration and consent, interactions from other systems, the live
profile and the 360 view, search and summaries, the churn-warning workflow, export and
erasure. Every change stores its record and its events (outbox) in one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import date, datetime
from typing import Any

import structlog
from motor.motor_asyncio import AsyncIOMotorClientSession
from prometheus_client import Counter
from pydantic import ValidationError
from pymongo.errors import DuplicateKeyError

from services.common import kafka
from services.common.auth import Principal
from services.common.clock import Clock, bounded_period, parse_rfc3339, to_rfc3339
from services.common.contracts import EventValidationError, jsonable, registry
from services.common.erasure import SCRUBBED, forget_answers
from services.common.errors import ConcurrentChange, Kind
from services.common.fields import new_id
from services.common.peers import Answer, Peers, Unavailable
from services.common.settings import Settings
from services.common.writes import IdempotencyKey, Outcome, Writes

from . import activity, domain
from .domain import ChurnWarning, Customer, ProfileFilters, ProfilesError, WarningFilters
from .events import ACTIVITY_GROUP, CONSUMED, FOLDED_INTO_ACTIVITY, GROUP, events_of
from .models import (
    MAX_INTERACTIONS,
    ActionIn,
    ConsentIn,
    CustomerIn,
    InteractionIn,
    present_activity,
    present_customer,
    present_warning,
)
from .store import ProfilesStore

log = structlog.get_logger(__name__)

INTERACTIONS = Counter(
    "crm_interactions_received_total", "Interactions received from other systems, by outcome.", ["outcome"]
)
WARNING_UPDATES = Counter(
    "crm_churn_warning_updates_total", "Churn-warning workflow changes, by what happened.", ["what"]
)


class ProfilesService:
    def __init__(self, store: ProfilesStore, writes: Writes, clock: Clock, peers: Peers) -> None:
        self.store = store
        self.writes = writes
        self.clock = clock
        self.peers = peers

    # --- customers --------------------------------------------------------------------------

    async def register(self, body: CustomerIn, key: IdempotencyKey | None) -> Outcome:
        attributes = body.model_dump(exclude={"registered_at"})
        attributes["customer_id"] = body.customer_id or new_id("c")
        if body.birth_date is not None:
            attributes["birth_date"] = body.birth_date.isoformat()
        change = domain.register(attributes, body.registered_at or self.clock.now())

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            if await self.erased(change.customer.customer_id, session):
                raise ProfilesError(
                    f"customer {change.customer.customer_id} was erased; use a new id", Kind.CONFLICT
                )
            try:
                await self.store.insert_customer(change.customer, session)
            except DuplicateKeyError:
                raise ProfilesError(
                    f"customer {change.customer.customer_id} is already registered", Kind.CONFLICT
                ) from None
            return Outcome(
                201,
                present_customer(change.customer),
                events_of(change.customer.customer_id, change.facts, change.customer.registered_at),
            )

        return await self.writes.run(work, key)

    async def _change(
        self, customer_id: str, apply: Callable[[Customer], domain.Change], key: IdempotencyKey | None
    ) -> Outcome:
        now = self.clock.now()

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            current = await self.store.get_customer(customer_id, session)
            if current is None:
                raise ProfilesError(f"no registered customer {customer_id}", Kind.NOT_FOUND)
            change = apply(current)
            saved = await self.store.replace_customer(change.customer, session) if change.facts else current
            return Outcome(200, present_customer(saved), events_of(customer_id, change.facts, now))

        return await self.writes.run(work, key)

    async def update(self, customer_id: str, changes: dict[str, Any], key: IdempotencyKey | None) -> Outcome:
        if isinstance(changes.get("birth_date"), date):
            changes["birth_date"] = changes["birth_date"].isoformat()
        return await self._change(customer_id, lambda c: domain.update(c, changes), key)

    async def set_consent(
        self, customer_id: str, body: ConsentIn, by: str, key: IdempotencyKey | None
    ) -> Outcome:
        now = self.clock.now()
        channels = body.channels.model_dump(exclude_none=True) if body.channels else None
        return await self._change(
            customer_id,
            lambda c: domain.set_consent(c, body.marketing_consent, channels, body.source, by, now),
            key,
        )

    async def consent(self, customer_id: str) -> dict[str, Any]:
        """Marketing consent per channel and every change to it (when, how, by whom)."""
        customer = await self.store.get_customer(customer_id)
        if customer is None:
            raise ProfilesError(f"no registered customer {customer_id}", Kind.NOT_FOUND)
        shown = present_customer(customer)
        keys = (
            "customer_id",
            "marketing_consent",
            "consent_channels",
            "consent_changed_at",
            "consent_history",
        )
        return {k: shown[k] for k in keys}

    async def erased(self, customer_id: str, session: AsyncIOMotorClientSession | None = None) -> dict | None:
        return await self.store.erasure(customer_id, session)

    async def erase(self, customer_id: str, reason: str | None, by: str) -> Outcome:
        """Remove the person here and publish `crm.customer.erased` so every service does."""
        now = self.clock.now()

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            done = await self.erased(customer_id, session)
            if done is not None:
                return Outcome(200, _erasure_answer(done, already=True))
            customer = await self.store.get_customer(customer_id, session)
            if customer is None and await self.store.profile(customer_id) is None:
                raise domain.no_customer(customer_id)
            if customer is not None:
                await self.store.replace_customer(domain.erase(customer, now), session)
            for warning in await self.store.warnings_of(customer_id):
                await self.store.replace_warning(domain.scrub_notes(warning, SCRUBBED), session)
            stored = await self.store.activity_of(customer_id, session)
            scrubbed = activity.erased(stored, customer_id, SCRUBBED)
            if scrubbed != stored:
                await self.store.save_activities([scrubbed], session)
            await forget_answers(self.store.db, customer_id, session)
            record = await self.store.record_erasure(customer_id, now, by, reason, session)
            data = {"requested_by": by, **({"reason": reason} if reason else {})}
            return Outcome(
                202, _erasure_answer(record), events_of(customer_id, [("crm.customer.erased", data)], now)
            )

        return await self.writes.run(work)

    # --- interactions from other systems --------------------------------------------------------

    async def record_interactions(self, items: list[Any], key: IdempotencyKey | None) -> Outcome:
        if len(items) > MAX_INTERACTIONS:
            raise ProfilesError(
                f"{len(items)} interactions in one batch; at most {MAX_INTERACTIONS}", Kind.TOO_LARGE
            )
        now = self.clock.now()
        schemas = registry()
        accepted: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for position, raw in enumerate(items):
            try:
                item = InteractionIn.model_validate(raw)
                data = item.model_dump(exclude_none=True)
                data["interaction_id"] = item.interaction_id or new_id("i")
                data["occurred_at"] = item.occurred_at or now
                event = events_of(item.customer_id, [("crm.interaction.recorded", data)], now)[0]
                schemas.validate(event)
            except ValidationError as exc:
                rejected.append({"index": position, "errors": _errors(exc)})
                continue
            except EventValidationError as exc:
                rejected.append({"index": position, "errors": [{"field": exc.field, "detail": exc.reason}]})
                continue
            accepted.append(event)

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            body = {
                "received": len(items),
                "accepted": len(accepted),
                "rejected": rejected,
                "interaction_ids": [e["data"]["interaction_id"] for e in accepted],
            }
            return Outcome(200 if accepted or not items else 422, body, accepted)

        outcome = await self.writes.run(work, key)
        if not outcome.replayed:
            INTERACTIONS.labels("accepted").inc(len(accepted))
            INTERACTIONS.labels("rejected").inc(len(rejected))
        return outcome

    # --- reading ----------------------------------------------------------------------------------

    async def customer_view(self, customer_id: str) -> dict[str, Any]:
        customer, profile = await asyncio.gather(
            self.store.get_customer(customer_id), self.store.profile(customer_id)
        )
        if customer is None and profile is None:
            raise domain.no_customer(customer_id)
        out = profile or {"customer_id": customer_id, "computed_at": None}
        out["status"] = "scored" if profile else "awaiting its first score"
        out["registration"] = present_customer(customer) if customer else None
        return out

    async def view_360(
        self, customer_id: str, authorization: str | None, source: str = "read_model"
    ) -> dict[str, Any]:
        """Everything an agent needs on one screen, in one read of the read model the other
        services' events keep (activity.py), each section with `as_of`, the latest event time
        folded into it; the churn warnings are read only for a customer the scorer has warned
        about. A customer the read model has never seen (or `source="services"`) is
        read through: the other services are asked at once, and a service that is down makes
        the answer partial, never an error."""
        profile, stored = await asyncio.gather(
            self.customer_view(customer_id),
            self.store.activity_of(customer_id) if source == "read_model" else _nothing(),
        )
        warnings = await self.store.warnings_of(customer_id) if domain.ever_warned(profile) else []
        if stored is not None:
            sections, unavailable = present_activity(stored), []
        else:
            sections, unavailable = await self._read_through(customer_id, authorization)
        return {
            "customer_id": customer_id,
            "source": "read_model" if stored is not None else "services",
            "partial": bool(unavailable),
            "unavailable": unavailable,
            "profile": profile,
            **sections,
            "churn_warnings": [
                present_warning(w) for w in sorted(warnings, key=lambda w: w.warned_at, reverse=True)
            ],
        }

    async def _read_through(
        self, customer_id: str, authorization: str | None
    ) -> tuple[dict[str, Any], list[str]]:
        """The 360 view's sections asked of the services that own them, as of now."""
        recent = activity.RECENT
        orders, complaints, surveys, account, ledger = await asyncio.gather(
            self.peers.get("orders", "/orders", authorization, customer_id=customer_id, limit=recent),
            self.peers.get("complaints", "/complaints", authorization, customer_id=customer_id, limit=recent),
            self.peers.get("complaints", "/surveys", authorization, customer_id=customer_id, limit=recent),
            self.peers.get("loyalty", f"/accounts/{customer_id}", authorization),
            self.peers.get("loyalty", f"/accounts/{customer_id}/ledger", authorization, limit=recent),
        )
        now = to_rfc3339(self.clock.now())
        answers = [orders, complaints, surveys, account, ledger]
        unavailable = sorted({a.service for a in answers if a.status == "unavailable"})
        loyalty_up = "loyalty" not in unavailable
        sections = {
            "orders": _section(orders, now),
            "complaints": _section(complaints, now),
            "surveys": _section(surveys, now),
            "loyalty": {
                "status": "ok" if loyalty_up else "unavailable",
                "account": account.body if account.ok else None,
                "ledger": ledger.body["items"] if ledger.ok else [],
                "as_of": now if loyalty_up else None,
            },
        }
        return sections, unavailable

    async def export(self, customer_id: str, authorization: str | None) -> dict[str, Any]:
        """Everything the platform holds about one customer, from every service. All or nothing:
        an export with a service missing would look complete and not be."""
        profile = await self.customer_view(customer_id)
        try:
            orders, complaints, surveys, ledger, account = await asyncio.gather(
                self.peers.every_page("orders", "/orders", authorization, customer_id=customer_id),
                self.peers.every_page("complaints", "/complaints", authorization, customer_id=customer_id),
                self.peers.every_page("complaints", "/surveys", authorization, customer_id=customer_id),
                self.peers.every_page("loyalty", f"/accounts/{customer_id}/ledger", authorization),
                self.peers.get("loyalty", f"/accounts/{customer_id}", authorization),
            )
        except Unavailable as exc:
            raise ProfilesError(
                f"export incomplete: {exc}; try again when it is back", Kind.UNAVAILABLE
            ) from None
        if account.status == "unavailable":
            raise ProfilesError(
                f"export incomplete: loyalty is unavailable: {account.error}", Kind.UNAVAILABLE
            )
        erasure = await self.erased(customer_id)
        return {
            "customer_id": customer_id,
            "exported_at": to_rfc3339(self.clock.now()),
            "registration": profile.pop("registration"),
            "profile": profile,
            "churn_warnings": [present_warning(w) for w in await self.store.warnings_of(customer_id)],
            "erasure": _erasure_answer(erasure) if erasure else None,
            "orders": orders,
            "complaints": complaints,
            "surveys": surveys,
            "loyalty": {"account": account.body if account.ok else None, "ledger": ledger},
        }

    async def search(
        self, filters: ProfileFilters, sort: str, order: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        filters = domain.on_day(filters, self.clock.now().date())
        rows, next_cursor = await self.store.search(
            filters, sort, domain.ascending(sort, order), limit, cursor
        )
        return {"items": rows, "next_cursor": next_cursor}

    async def search_all(
        self, filters: ProfileFilters, sort: str, order: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every search row, page after page (the CSV export)."""
        cursor = None
        ascending = domain.ascending(sort, order)
        filters = domain.on_day(filters, self.clock.now().date())
        while True:
            rows, cursor = await self.store.search(filters, sort, ascending, 1000, cursor)
            for row in rows:
                yield row
            if not cursor:
                return

    async def record_export(
        self, principal: Principal, filters: ProfileFilters, sort: str, order: str | None
    ) -> None:
        """A bulk export of personal data is recorded before it starts: who, when, what filter."""
        await self.store.record_export(
            domain.export_record(
                new_id("ex"), principal.label, principal.role, self.clock.now(), filters, sort, order
            )
        )

    async def segments(self, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for dimension in ("segment", "lifecycle_stage", "abc_class", "tier"):
            out[f"by_{dimension}"] = domain.group_summary(await self.store.group_totals(dimension))
        out["customers"] = sum(v["customers"] for v in out["by_segment"].values())
        since, until = bounded_period(since, until, self.clock.now())
        out["moves"] = {
            "from": to_rfc3339(since),
            "to": to_rfc3339(until),
            **domain.moves_summary(await self.store.moves_between(since, until)),
        }
        return out

    async def seasonality(
        self, currency: str | None, since: datetime | None, until: datetime | None, authorization: str | None
    ) -> dict[str, Any]:
        answer = await self.peers.get(
            "orders",
            "/sales/monthly",
            authorization,
            **{"from": to_rfc3339(since) if since else None, "to": to_rfc3339(until) if until else None},
        )
        if not answer.ok:
            raise ProfilesError(f"orders is unavailable: {answer.error}", Kind.UNAVAILABLE)
        rows = answer.body["items"]
        by_currency: dict[str, int] = {}
        for row in rows:
            by_currency[row["currency"]] = by_currency.get(row["currency"], 0) + row["orders"]
        currency = currency or domain.main_currency(by_currency)
        chosen = [r for r in rows if r["currency"] == currency]
        monthly = {(int(r["month"][:4]), int(r["month"][5:7])): r["net_sales_cents"] for r in chosen}
        return {
            "currency": currency,
            "currencies": sorted(by_currency),
            **domain.seasonal_index(monthly),
            "monthly": chosen,
        }

    # --- the churn-warning workflow ---------------------------------------------------------------

    async def warnings(self, filters: WarningFilters, limit: int, cursor: str | None) -> dict[str, Any]:
        """A page of the worklist, each warning with its customer's registered name (one read for
        the page, so a list of warnings names its people without a request per row)."""
        found, next_cursor = await self.store.warnings_page(filters, limit, cursor)
        names = await self.store.names_of(sorted({w.customer_id for w in found})) if found else {}
        return {
            "items": [{**present_warning(w), "customer_name": names.get(w.customer_id)} for w in found],
            "next_cursor": next_cursor,
        }

    async def warning(self, warning_id: str) -> ChurnWarning:
        found = await self.store.get_warning(warning_id)
        if found is None:
            raise domain.no_warning(warning_id)
        return found

    async def change_warning(
        self,
        warning_id: str,
        apply: Callable[[ChurnWarning], tuple[ChurnWarning, domain.Facts]],
        what: str,
        key: IdempotencyKey | None,
    ) -> Outcome:
        now = self.clock.now()

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            current = await self.store.get_warning(warning_id, session)
            if current is None:
                raise domain.no_warning(warning_id)
            changed, facts = apply(current)
            saved = await self.store.replace_warning(changed, session)
            return Outcome(200, present_warning(saved), events_of(saved.customer_id, facts, now))

        outcome = await self.writes.run(work, key)
        if not outcome.replayed:
            WARNING_UPDATES.labels(what).inc()
        return outcome

    async def assign(self, warning_id: str, assignee: str, by: str, key: IdempotencyKey | None) -> Outcome:
        now = self.clock.now()
        return await self.change_warning(
            warning_id, lambda w: (domain.assign(w, assignee, by, now), []), "assigned", key
        )

    async def act(
        self,
        warning_id: str,
        body: ActionIn,
        by: str,
        key: IdempotencyKey | None,
        authorization: str | None = None,
    ) -> Outcome:
        now = self.clock.now()
        interaction_id = new_id("i")
        outcome = await self.change_warning(
            warning_id,
            lambda w: domain.act(w, body.action, body.note, by, now, interaction_id, body.channel),
            "action",
            key,
        )
        if body.action in domain.SENT_BY_ENGAGEMENT and not outcome.replayed:
            # The coupon is issued and the message sent by engagement (one per warning and
            # action there); the action stays recorded if engagement is down, and says so.
            answer = await self.peers.send(
                "engagement",
                "/churn-actions",
                authorization,
                {"customer_id": outcome.body["customer_id"], "action": body.action, "episode_id": warning_id},
            )
            sent = answer.body if answer.ok else {"status": answer.status, "error": answer.error}
            outcome = replace(outcome, body={**outcome.body, "engagement": sent})
        return outcome

    async def close_warning(
        self, warning_id: str, outcome: str, by: str, key: IdempotencyKey | None
    ) -> Outcome:
        now = self.clock.now()
        return await self.change_warning(
            warning_id, lambda w: (domain.close(w, outcome, by, now), []), outcome, key
        )

    # --- following the scorer's signals -----------------------------------------------------------

    async def warned(self, customer_id: str, data: dict[str, Any]) -> None:
        """A churn warning opens a worklist entry, once per episode."""
        data = {**data, "warned_at": parse_rfc3339(data["warned_at"])}
        if await self.store.add_warning(domain.warning_from_signal(data, customer_id)):
            WARNING_UPDATES.labels("opened").inc()

    async def segment_moved(self, event_id: str, customer_id: str, data: dict[str, Any]) -> None:
        await self.store.add_move(event_id, customer_id, data, parse_rfc3339(data["changed_at"]))

    async def recovered(self, episode_id: str, at: datetime, ended_by: str | None = None) -> None:
        """The scorer saw the episode end (ended_by: purchase, reasons_cleared, erased): it closes
        as recovered unless already closed."""
        for _ in range(5):
            current = await self.store.get_warning(episode_id)
            if current is None:
                return
            closed = domain.recovered(current, at, ended_by)
            if closed == current:
                return
            try:
                await self.store.replace_warning(closed)
                WARNING_UPDATES.labels("recovered").inc()
                return
            except ConcurrentChange:
                continue  # an agent changed it in between: read again
        raise ConcurrentChange(episode_id)  # the batch is retried

    # --- the 360 view's read model ----------------------------------------------------------------

    async def fold_activity(self, batch: list[kafka.Delivered]) -> list[kafka.Refused]:
        """Each customer's events in the batch folded onto their document: one read and one
        bulk write per batch; a document the batch leaves as it was (a redelivery) is not
        written. A document changed meanwhile (an erasure) fails the batch, which comes again."""
        by_customer: dict[str, list[dict[str, Any]]] = {}
        refused: list[kafka.Refused] = []
        for delivered in batch:
            await FOLDED_INTO_ACTIVITY.dispatch(by_customer, delivered, refused=refused)
        if not by_customer:
            return refused
        stored = await self.store.activities_of(list(by_customer))
        changed = []
        for customer_id, events in by_customer.items():
            folded = activity.fold(stored.get(customer_id), customer_id, events, SCRUBBED)
            if folded != stored.get(customer_id):
                changed.append(folded)
        await self.store.save_activities(changed)
        return refused

    async def follow_activity(self, settings: Settings, stop: asyncio.Event) -> None:
        await kafka.consume(settings, ACTIVITY_GROUP, FOLDED_INTO_ACTIVITY.topics, self.fold_activity, stop)

    async def follow_signals(self, settings: Settings, stop: asyncio.Event) -> None:
        """Idempotent per signal: episodes and moves are keyed by their ids."""
        await kafka.consume(settings, GROUP, CONSUMED.topics, CONSUMED.one_by_one(self), stop)


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or None, "detail": e["msg"]}
        for e in exc.errors(include_url=False)
    ]


def _section(answer: Answer, now: str) -> dict[str, Any]:
    if answer.ok:
        return {"status": "ok", "items": answer.body["items"], "as_of": now}
    if answer.status == "not_found":
        return {"status": "ok", "items": [], "as_of": now}
    return {"status": "unavailable", "error": answer.error, "items": [], "as_of": None}


async def _nothing() -> None:
    return None


def _erasure_answer(record: dict[str, Any], already: bool = False) -> dict[str, Any]:
    return jsonable(
        {
            "customer_id": record["customer_id"],
            "erased_at": record["erased_at"],
            "requested_by": record.get("requested_by"),
            "status": "already erased"
            if already
            else "erased here; crm.customer.erased published for every other service",
        }
    )
