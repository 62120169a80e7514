"""The 360 view's read model: each customer's recent orders, complaints, surveys and loyalty,
folded from the events the other services publish. Rules only, no I/O.

One document per customer. Each event sets the fields its own type is about on the entity it
names (an order, complaint, survey or ledger entry, by id); a value that several events touch
keeps the one with the latest time (a tier, a resolution), the balance of the ledger entry
loyalty applied last (by its `sequence`), or the union (returns, refunds, reopenings). So a
redelivered event changes nothing, and one customer's events folded in another order give the
same document. Each section keeps its RECENT newest entities; its `horizon` is the latest time
of anything dropped, so an old event delivered again for a dropped entity stays out. `as_of`
holds, per section, the latest event time folded: how fresh the section is. After
`crm.customer.erased` the document keeps no free text, whatever arrives late (as the scorer's
facts: services/scoring/facts.py).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from services.common.clock import parse_rfc3339

RECENT = 20  # entities per section: what the 360 view shows
SECTIONS = ("orders", "complaints", "surveys", "ledger")
ID_OF = {"orders": "order_id", "complaints": "complaint_id", "surveys": "survey_id", "ledger": "entry_id"}
# Event type -> (section, the data field with its time). Sections "loyalty" and "customer" are
# the ledger plus the account, and the document itself.
FOLDED: dict[str, tuple[str, str | None]] = {
    "crm.order.placed": ("orders", "placed_at"),
    "crm.order.paid": ("orders", "paid_at"),
    "crm.order.shipped": ("orders", "shipped_at"),
    "crm.order.delivered": ("orders", "delivered_at"),
    "crm.order.cancelled": ("orders", "cancelled_at"),
    "crm.order.returned": ("orders", "returned_at"),
    "crm.order.refunded": ("orders", "refunded_at"),
    "crm.complaint.opened": ("complaints", "opened_at"),
    "crm.complaint.escalated": ("complaints", "escalated_at"),
    "crm.complaint.reopened": ("complaints", "reopened_at"),
    "crm.complaint.resolved": ("complaints", "resolved_at"),
    "crm.complaint.closed": ("complaints", "closed_at"),
    "crm.survey.submitted": ("surveys", "submitted_at"),
    "crm.loyalty.points_earned": ("loyalty", "earned_at"),
    "crm.loyalty.points_redeemed": ("loyalty", "redeemed_at"),
    "crm.loyalty.points_expired": ("loyalty", "expired_at"),
    "crm.loyalty.points_reversed": ("loyalty", "reversed_at"),
    "crm.loyalty.tier_changed": ("loyalty", "changed_at"),
    "crm.customer.registered": ("customer", "registered_at"),
    "crm.customer.erased": ("customer", None),  # the envelope's time
}
AS_OF = ("orders", "complaints", "surveys", "loyalty")


def stamp(text: str) -> str:
    """An RFC 3339 time in one fixed form (UTC, microseconds), so stored times compare as
    strings and survive a database that keeps milliseconds in its own date type."""
    return parse_rfc3339(text).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def empty(customer_id: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        **{section: [] for section in SECTIONS},
        "loyalty": None,
        "horizon": {},
        "as_of": {},
        "erased": False,
        "version": 0,
    }


def fold(
    stored: dict[str, Any] | None, customer_id: str, events: Iterable[dict[str, Any]], scrubbed: str
) -> dict[str, Any]:
    """`stored` (None for a customer not seen yet) with `events` folded in; `stored` is left
    as it was, so the caller can tell whether anything changed. `scrubbed` replaces free text
    once the customer is erased."""
    activity = copy.deepcopy(stored) if stored is not None else empty(customer_id)
    for event in events:
        apply(activity, event, scrubbed)
    for section in SECTIONS:
        _trim(activity, section)
    return activity


def apply(activity: dict[str, Any], event: dict[str, Any], scrubbed: str) -> None:
    kind, data = event["type"], event["data"]
    if kind not in FOLDED:
        return
    section, time_field = FOLDED[kind]
    at = stamp(data[time_field] if time_field else event["time"])
    if section == "customer":
        if kind == "crm.customer.erased":
            erase(activity, scrubbed)
        return  # a registration: the customer is known, with nothing to show yet
    if section in AS_OF:
        activity["as_of"][section] = max(activity["as_of"].get(section, at), at)
    if kind == "crm.loyalty.tier_changed":
        _latest_account(activity, "tier", (at,), tier=data["to_tier"], tier_changed_at=at)
        return
    if section == "loyalty":
        _ledger(activity, kind, data, at, scrubbed)
        return
    entity = _entity(activity, section, data[ID_OF[section]], at)
    if entity is None:
        return
    if section == "orders":
        _order(entity, kind, data, at, scrubbed if activity["erased"] else None)
    elif section == "complaints":
        _complaint(entity, kind, data, at, scrubbed if activity["erased"] else None)
    else:
        entity.update(
            complaint_id=data.get("complaint_id"),
            kind=data["kind"],
            scores=data["scores"],
            recommend=data.get("recommend"),
            submitted_at=at,
        )


def erase(activity: dict[str, Any], scrubbed: str) -> None:
    """What agents or customers wrote (reasons, resolutions) may describe the person: it goes,
    and stays out of whatever is folded later. Amounts, items and scores stay, as in the
    services that own them."""
    activity["erased"] = True
    for order in activity["orders"]:
        if order.get("cancel_reason") is not None:
            order["cancel_reason"] = scrubbed
        for returned in order.get("returns", ()):
            returned["reason"] = scrubbed
    for complaint in activity["complaints"]:
        if complaint.get("resolution") is not None:
            complaint["resolution"] = scrubbed
    for entry in activity["ledger"]:
        if entry["kind"] in WRITTEN_BY_AGENTS:
            entry["reason"] = scrubbed


# --- entities -------------------------------------------------------------------------------


def _entity(activity: dict[str, Any], section: str, entity_id: str, at: str) -> dict[str, Any] | None:
    """The entity this event is about, new if unseen; None when it was dropped from the window
    (an event no later than the horizon, for an entity not kept)."""
    key = ID_OF[section]
    for entity in activity[section]:
        if entity[key] == entity_id:
            entity["first"] = min(entity["first"], at)
            entity["last"] = max(entity["last"], at)
            return entity
    horizon = activity["horizon"].get(section)
    if horizon is not None and at <= horizon:
        return None
    entity = {key: entity_id, "first": at, "last": at}
    activity[section].append(entity)
    return entity


def _trim(activity: dict[str, Any], section: str) -> None:
    """Keep the RECENT entities that began last (then by id, for a total order)."""
    key = ID_OF[section]
    ranked = sorted(activity[section], key=lambda e: (e["first"], e[key]), reverse=True)
    kept, dropped = ranked[:RECENT], ranked[RECENT:]
    if dropped:
        latest = max(e["last"] for e in dropped)
        activity["horizon"][section] = max(activity["horizon"].get(section, latest), latest)
    activity[section] = kept


def _merge(items: list[dict[str, Any]], key: str, item: dict[str, Any]) -> None:
    """Add or replace by id: the same event twice leaves one copy."""
    items[:] = [i for i in items if i[key] != item[key]] + [item]
    items.sort(key=lambda i: (i["at"], i[key]))


def _order(order: dict[str, Any], kind: str, data: dict[str, Any], at: str, scrubbed: str | None) -> None:
    if kind == "crm.order.placed":
        order.update(
            placed_at=at,
            items=[
                {k: item[k] for k in ("sku", "category", "brand", "qty", "unit_price_cents")}
                for item in data["items"]
            ],
            amount_cents=data["amount_cents"],
            discount_cents=data["discount_cents"],
            currency=data["currency"],
            channel=data["channel"],
            promised_delivery_date=data.get("promised_delivery_date"),
        )
    elif kind == "crm.order.paid":
        order.update(paid_at=at, paid_cents=data["amount_cents"], currency=data["currency"])
    elif kind == "crm.order.shipped":
        order.update(shipped_at=at, carrier=data.get("carrier"), tracking_number=data.get("tracking_number"))
    elif kind == "crm.order.delivered":
        order.update(delivered_at=at, late=data["late"])
    elif kind == "crm.order.cancelled":
        order.update(cancelled_at=at, cancel_reason=scrubbed or data["reason"], was_paid=data["was_paid"])
    elif kind == "crm.order.returned":
        returned = {
            "return_id": data["return_id"],
            "amount_cents": data["amount_cents"],
            "full": data["full"],
            "reason": scrubbed or data["reason"],
            "at": at,
        }
        _merge(order.setdefault("returns", []), "return_id", returned)
    elif kind == "crm.order.refunded":
        refund = {
            "refund_id": data["refund_id"],
            "amount_cents": data["amount_cents"],
            "reason": data["reason"],  # one of a fixed set, nobody's words
            "return_id": data.get("return_id"),
            "at": at,
        }
        _merge(order.setdefault("refunds", []), "refund_id", refund)


def _complaint(
    complaint: dict[str, Any], kind: str, data: dict[str, Any], at: str, scrubbed: str | None
) -> None:
    if kind == "crm.complaint.opened":
        complaint.update(
            category=data["category"],
            severity=data["severity"],
            channel=data["channel"],
            order_id=data.get("order_id"),
            vip=data["vip"],
            opened_at=at,
            first_response_due=stamp(data["first_response_due"]),
            resolution_due=stamp(data["resolution_due"]),
        )
    elif kind == "crm.complaint.escalated":
        complaint["escalation_level"] = max(complaint.get("escalation_level", 0), data["level"])
        if data["reason"] != "manual":  # first_response_breach or resolution_breach
            complaint["breaches"] = sorted({*complaint.get("breaches", ()), data["reason"]})
    elif kind == "crm.complaint.reopened":
        complaint["reopened"] = sorted({*complaint.get("reopened", ()), at})
    elif kind == "crm.complaint.resolved":
        if at >= complaint.get("resolved_at", at):
            complaint.update(
                resolved_at=at,
                resolution=scrubbed or data["resolution"],
                resolved_within_sla=data["within_sla"],
                resolution_hours=data["resolution_hours"],
            )
    elif kind == "crm.complaint.closed":
        complaint["closed_at"] = max(complaint.get("closed_at", at), at)


# --- loyalty ----------------------------------------------------------------------------------

# Ledger kinds as loyalty names them; redemptions and adjustments carry an agent's words.
WRITTEN_BY_AGENTS = ("redeem", "adjust")
ADJUSTMENT = "adjustment"


def _ledger(activity: dict[str, Any], kind: str, data: dict[str, Any], at: str, scrubbed: str) -> None:
    reason = data.get("reason")
    if kind == "crm.loyalty.points_earned":
        entry_kind, sign = ("adjust" if reason == ADJUSTMENT else "earn"), 1
    elif kind == "crm.loyalty.points_redeemed":
        entry_kind, sign = ("adjust" if reason.startswith(ADJUSTMENT + ":") else "redeem"), -1
    elif kind == "crm.loyalty.points_expired":
        entry_kind, sign, reason = "expire", -1, data.get("reason", "expired")
    else:
        entry_kind, sign = "reverse", -1
    if activity["erased"] and entry_kind in WRITTEN_BY_AGENTS:
        reason = scrubbed
    when = (at, data["entry_id"], *([data["sequence"]] if "sequence" in data else []))
    _latest_account(activity, "balance", when, balance=data["balance"])
    entry = _entity(activity, "ledger", data["entry_id"], at)
    if entry is not None:
        entry.update(
            kind=entry_kind,
            points=sign * data["points"],
            balance=data["balance"],
            reason=reason,
            order_id=data.get("order_id"),
            at=at,
            expires_at=stamp(data["expires_at"]) if data.get("expires_at") else None,
        )


def _latest_account(activity: dict[str, Any], part: str, when: tuple[Any, ...], **values: Any) -> None:
    """The account's balance and tier: each the value of the latest event that set it (the
    balance after the ledger entry loyalty applied last: see `_later`)."""
    account = activity["loyalty"] or {}
    marks = account.setdefault("marks", {})
    if part in marks and not _later(when, marks[part]):
        activity["loyalty"] = account
        return
    marks[part] = list(when)
    account.update(values)
    activity["loyalty"] = account


def _later(when: tuple[Any, ...], mark: list[Any]) -> bool:
    """Whether an event at `when` (time, entry id, then loyalty's ledger sequence if it has
    one) comes after the one that left `mark`: by the sequence when both have one (an earn is
    stamped with the order's paid time, and may be applied after a redemption stamped later),
    else by time then entry id (a tier change, or an event from before entries were numbered)."""
    if len(when) == len(mark) == 3:
        return when[2] > mark[2]
    return when[:2] > tuple(mark[:2])


# --- what the 360 view shows -----------------------------------------------------------------


def order_status(order: dict[str, Any]) -> str:
    """The order's state as far as its events tell, in the orders service's words."""
    paid = order.get("paid_cents", 0)
    returns = order.get("returns", ())
    if order.get("cancelled_at"):
        return "cancelled"
    if paid and sum(r["amount_cents"] for r in order.get("refunds", ())) >= paid:
        return "refunded"
    if any(r["full"] for r in returns):
        return "returned"
    if returns:
        return "partially_returned"
    for status in ("delivered", "shipped", "paid", "placed"):
        if order.get(f"{status}_at"):
            return status
    return "unknown"  # only later events seen, of an order placed before the window


def complaint_status(complaint: dict[str, Any]) -> str:
    """open, resolved or closed: the latest of the complaint's transitions (its events do not
    tell assignment or waiting for the customer apart from open)."""
    moves = [(at, "open") for at in (complaint.get("opened_at"), *complaint.get("reopened", ())) if at]
    moves += [
        (complaint[f], s) for f, s in (("resolved_at", "resolved"), ("closed_at", "closed")) if f in complaint
    ]
    if not moves:
        return "unknown"
    rank = {"open": 0, "resolved": 1, "closed": 2}  # the same instant: the later state wins
    return max(moves, key=lambda m: (m[0], rank[m[1]]))[1]


def erased(stored: dict[str, Any] | None, customer_id: str, scrubbed: str) -> dict[str, Any]:
    """The document as erasure leaves it, at once, in the request that erases (the event
    folds the same when it comes back)."""
    activity = copy.deepcopy(stored) if stored is not None else empty(customer_id)
    erase(activity, scrubbed)
    return activity
