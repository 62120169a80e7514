"""Folding a customer's events into facts. Pure.

Facts are keyed by the entity each event is about (order, return, refund, complaint, survey,
interaction), and each field keeps the value of the latest event time, so applying the same
events twice, or in another order, gives the same facts: that is what makes the profile
exact under redelivery and reordering.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from services.common.clock import parse_rfc3339
from services.common.erasure import ERASED

Facts = dict[str, Any]
ENGAGEMENT_WINDOW = timedelta(days=30)
YEAR = timedelta(days=365)
PERSONAL = ("name", "email", "phone", "gender", "birth_date", "city")
# The keys whose values are times, wherever they appear in facts (how stored facts are revived).
TIME_KEYS = frozenset(
    ("_at", "at", "placed_at", "paid_at", "cancelled_at", "opened_at", "last_seen_before_window")
)


@dataclass(frozen=True)
class Horizon:
    """The cut-offs every score measures back from "now": computed once per clock reading,
    not once per customer and comparison."""

    engagement: datetime  # the start of the engagement window
    d90: datetime
    d180: datetime
    d360: datetime
    year: datetime


@lru_cache(maxsize=16)
def horizon(now: datetime) -> Horizon:
    return Horizon(now - ENGAGEMENT_WINDOW, *(now - timedelta(days=d) for d in (90, 180, 360)), now - YEAR)


def empty(customer_id: str) -> Facts:
    return {
        "customer_id": customer_id,
        "identity": {},
        "orders": {},
        "complaints": {},
        "surveys": {},
        "interactions": {},
        "loyalty": {},
        "erased": False,
    }


def _latest(record: dict[str, Any], at: datetime, **values: Any) -> None:
    """Set values unless a later event already set this record."""
    if record.get("_at") is None or at >= record["_at"]:
        record.update(values)
        record["_at"] = at


def apply(facts: Facts, event: dict[str, Any]) -> Facts:
    """Fold one event in (mutates and returns `facts`)."""
    kind, data, at = event["type"], event["data"], parse_rfc3339(event["time"])
    family = kind.split(".")[1]
    if family == "order":
        _order(facts, kind, data, at)
    elif family in ("complaint", "survey"):
        _complaint(facts, kind, data, at)
    elif family == "customer":
        _customer(facts, kind, data, at)
    elif family == "interaction":
        facts["interactions"][data["interaction_id"]] = {"kind": data["kind"], "at": at}
    elif family in ("message", "coupon"):
        _engagement(facts, kind, data, at)
    elif family == "loyalty":
        loyalty = facts["loyalty"]
        if kind == "crm.loyalty.tier_changed":
            _latest(loyalty.setdefault("tier", {}), at, value=data["to_tier"])
        if "balance" in data:
            _latest_balance(loyalty.setdefault("balance", {}), at, data.get("sequence"), data["balance"])
    return facts


def _latest_balance(record: dict[str, Any], at: datetime, sequence: int | None, balance: int) -> None:
    """The balance loyalty reached last: by its ledger sequence when this event and the one that
    set the record both have one (an earn is stamped with the order's paid time, and may be
    applied after a redemption stamped later), else by time (events from before entries were
    numbered)."""
    if sequence is not None and record.get("_sequence") is not None:
        later = sequence >= record["_sequence"]
    else:
        later = record.get("_at") is None or at >= record["_at"]
    if later:
        record.update(value=balance, _at=at, _sequence=sequence)


def _engagement(facts: Facts, kind: str, data: dict[str, Any], at: datetime) -> None:
    """Messages and coupons from engagement, keyed by their ids (a redelivery changes
    nothing): what reached the customer and what they did with it."""
    if kind.startswith("crm.message."):
        message = facts.setdefault("messages", {}).setdefault(data["message_id"], {"at": at})
        message[kind.rsplit(".", 1)[1]] = True  # sent, delivered, failed, opened, clicked
    else:
        coupon = facts.setdefault("coupons", {}).setdefault(data["coupon_id"], {"at": at})
        coupon[kind.rsplit(".", 1)[1]] = kind != "crm.coupon.released"  # issued, redeemed
        if kind == "crm.coupon.released":
            coupon["redeemed"] = False


def _order(facts: Facts, kind: str, data: dict[str, Any], at: datetime) -> None:
    order = facts["orders"].get(data["order_id"])
    if order is None:
        order = facts["orders"][data["order_id"]] = {"returns": {}, "refunds": {}}
    if kind == "crm.order.placed":
        order["placed_at"] = at
        # what was bought, for the profile's category and brand affinity
        order["lines"] = [
            [i["category"], i["brand"], i["qty"] * i["unit_price_cents"]] for i in data["items"]
        ]
    elif kind == "crm.order.paid":
        order["paid_at"], order["amount_cents"], order["currency"] = (
            at,
            data["amount_cents"],
            data["currency"],
        )
    elif kind == "crm.order.returned":
        order["returns"][data["return_id"]] = data["amount_cents"]
    elif kind == "crm.order.refunded":
        order["refunds"][data["refund_id"]] = [data["amount_cents"], data["reason"]]
    elif kind == "crm.order.cancelled":
        order["cancelled_at"] = at
    elif kind == "crm.order.delivered":
        order["late"] = data["late"]


def _complaint(facts: Facts, kind: str, data: dict[str, Any], at: datetime) -> None:
    if kind == "crm.survey.submitted":
        facts["surveys"][data["survey_id"]] = {
            "kind": data["kind"],
            "scores": data["scores"],
            "recommend": data.get("recommend"),
            "at": at,
        }
        return
    complaint = facts["complaints"].setdefault(data["complaint_id"], {"state": {}, "level": 0})
    if kind == "crm.complaint.opened":
        complaint.update(opened_at=at, severity=data["severity"], category=data["category"])
        _latest(complaint["state"], at, open=True)
    elif kind == "crm.complaint.escalated":
        complaint["level"] = max(complaint["level"], data["level"])
        if data["reason"] != "manual":
            complaint["breached"] = True
    elif kind in ("crm.complaint.resolved", "crm.complaint.closed"):
        _latest(complaint["state"], at, open=False)
    elif kind == "crm.complaint.reopened":
        _latest(complaint["state"], at, open=True)


def erase(facts: Facts) -> None:
    """The scorer's erasure rule. The other services follow `crm.customer.erased` with
    services/common/erasure.py; the scorer folds it like any of the customer's events, so it
    keeps its place among them: the personal fields go, and the `erased` mark keeps any that
    arrive later out (and the profile stops showing a birthday)."""
    facts["erased"] = True
    for name in PERSONAL:
        facts["identity"].pop(name, None)


def _customer(facts: Facts, kind: str, data: dict[str, Any], at: datetime) -> None:
    identity = facts["identity"]
    if kind == ERASED:
        erase(facts)
        return
    if facts["erased"]:
        return  # nothing personal comes back after erasure, whatever arrives late
    changes = data.get("changes", data) if kind == "crm.customer.updated" else data
    for name, value in changes.items():
        if name == "customer_id":
            continue
        _latest(identity.setdefault(name, {}), at, value=value)
    if kind == "crm.customer.registered":
        identity["registered_at"] = {"value": data["registered_at"], "_at": at}


def fold(
    by_customer: dict[str, list[dict[str, Any]]], stored: dict[str, Facts], now: datetime
) -> dict[str, Facts]:
    """Each customer's events folded onto their stored facts (fresh ones for a newcomer)."""
    folded = {}
    for customer_id, events in by_customer.items():
        facts = stored.get(customer_id) or empty(customer_id)
        for event in events:
            apply(facts, event)
        folded[customer_id] = prune(facts, now)
    return folded


def value(facts: Facts, section: str, name: str) -> Any:
    return (facts[section].get(name) or {}).get("value")


def values(facts: Facts, section: str, names: tuple[str, ...]) -> dict[str, Any]:
    records = facts[section]
    if not records:
        return dict.fromkeys(names)
    return {name: (records.get(name) or {}).get("value") for name in names}


def order_net(order: dict[str, Any]) -> int:
    """A paid order's value after returns and non-return refunds (a refund for a return repays
    what the return already took off)."""
    net = order["amount_cents"]
    if order["returns"]:
        net -= sum(order["returns"].values())
    if order["refunds"]:
        net -= sum(cents for cents, reason in order["refunds"].values() if reason != "return")
    return net


def purchases(facts: Facts, until: datetime | None = None) -> list[tuple[datetime, int]]:
    """(paid time, net cents) of every order paid by `until`, in time order: returns and
    non-return refunds come off; a refund for a return repays what the return already took off."""
    out = []
    for order in facts["orders"].values():
        paid_at = order.get("paid_at")
        if paid_at is None or (until is not None and paid_at > until):
            continue
        net = order_net(order)
        out.append((paid_at, net))
    out.sort()
    return out


def interactions_since(facts: Facts, since: datetime) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in facts["interactions"].values():
        if item["at"] >= since:
            counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    return counts


def prune(facts: Facts, now: datetime) -> Facts:
    """Interactions older than the engagement window no longer count; keep the last seen.
    Messages and coupons count for 180 days."""
    for name in ("messages", "coupons"):
        held = facts.get(name)
        if held:
            for key in [k for k, v in held.items() if v["at"] < horizon(now).d180]:
                del held[key]
    if not facts["interactions"]:
        return facts
    since = horizon(now).engagement
    old = [k for k, v in facts["interactions"].items() if v["at"] < since]
    if old:
        last = max(facts["interactions"][k]["at"] for k in old)
        facts["last_seen_before_window"] = max(last, facts.get("last_seen_before_window", last))
        for key in old:
            del facts["interactions"][key]
    return facts
