"""The 360 view's read model without I/O: events folded into one customer's activity document,
redelivered, reordered, past the window, and erased. Every event is built and validated
against its JSON Schema, as the consumer receives it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from services.common.contracts import build_event
from services.profiles import activity
from services.profiles.models import present_activity

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
C = "c-000123"
SCRUBBED = "[erased]"


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def event(event_type: str, hours: float, **data) -> dict:
    return build_event(
        event_type, {"customer_id": C, **data}, source="/test", time=T0 + timedelta(hours=hours)
    )


def placed(order_id: str, hours: float, cents: int = 12_900) -> dict:
    item = {"sku": "SKU-1", "category": "shoes", "brand": "Acme", "qty": 1, "unit_price_cents": cents}
    return event(
        "crm.order.placed",
        hours,
        order_id=order_id,
        items=[item],
        amount_cents=cents,
        discount_cents=0,
        currency="CNY",
        channel="app",
        promised_delivery_date="2026-11-25",
        placed_at=at(hours),
    )


def paid(order_id: str, hours: float, cents: int = 12_900) -> dict:
    return event(
        "crm.order.paid", hours, order_id=order_id, amount_cents=cents, currency="CNY", paid_at=at(hours)
    )


def numbered(sequence: int | None) -> dict:
    """Loyalty's ledger sequence, absent from events published before entries were numbered."""
    return {} if sequence is None else {"sequence": sequence}


def earned(entry_id: str, hours: float, points: int, balance: int, sequence: int | None = None) -> dict:
    return event(
        "crm.loyalty.points_earned",
        hours,
        entry_id=entry_id,
        points=points,
        reason="purchase",
        order_id="o-1",
        expires_at=at(hours + 24 * 365),
        balance=balance,
        **numbered(sequence),
        earned_at=at(hours),
    )


def redeemed(
    entry_id: str, hours: float, points: int, balance: int, reason: str, sequence: int | None = None
) -> dict:
    return event(
        "crm.loyalty.points_redeemed",
        hours,
        entry_id=entry_id,
        points=points,
        reason=reason,
        balance=balance,
        **numbered(sequence),
        redeemed_at=at(hours),
    )


def opened(complaint_id: str, hours: float) -> dict:
    return event(
        "crm.complaint.opened",
        hours,
        complaint_id=complaint_id,
        category="product",
        severity="low",
        channel="web",
        order_id="o-1",
        opened_at=at(hours),
        first_response_due=at(hours + 8),
        resolution_due=at(hours + 72),
        vip=False,
    )


def resolved(complaint_id: str, hours: float, resolution: str) -> dict:
    return event(
        "crm.complaint.resolved",
        hours,
        complaint_id=complaint_id,
        resolved_at=at(hours),
        resolution=resolution,
        within_sla=True,
        resolution_hours=hours,
    )


def history() -> list[dict]:
    """One customer's month, in the order the services published it."""
    return [
        event(
            "crm.customer.registered",
            0,
            **dict.fromkeys(("name", "email", "phone", "gender", "birth_date", "city", "city_tier")),
            channel="app",
            referred_by=None,
            marketing_consent=False,
            registered_at=at(0),
        ),
        placed("o-1", 1),
        paid("o-1", 1.5),
        earned("le-1", 1.5, 129, 129),
        event(
            "crm.order.shipped", 20, order_id="o-1", shipped_at=at(20), carrier="SF", tracking_number="SF1"
        ),
        opened("cp-1", 30),
        event("crm.complaint.reopened", 40, complaint_id="cp-1", reopened_at=at(40), reason="still broken"),
        event(
            "crm.complaint.escalated",
            38,
            complaint_id="cp-1",
            level=1,
            reason="resolution_breach",
            escalated_at=at(38),
        ),
        resolved("cp-1", 35, "replaced the heel"),
        resolved("cp-1", 45, "refunded the pair"),
        event(
            "crm.survey.submitted",
            46,
            survey_id="s-1",
            complaint_id="cp-1",
            kind="csat",
            scores={"service": 4},
            recommend=None,
            submitted_at=at(46),
        ),
        redeemed("le-2", 50, 100, 29, "gift for her sister"),
        event(
            "crm.loyalty.tier_changed",
            50,
            from_tier="member",
            to_tier="silver",
            direction="up",
            trailing_spend_cents=12_900,
            changed_at=at(50),
        ),
        placed("o-2", 60, 5_000),
        event(
            "crm.order.cancelled",
            61,
            order_id="o-2",
            cancelled_at=at(61),
            reason="changed mind",
            was_paid=False,
        ),
    ]


def folded(events: list[dict], stored: dict | None = None) -> dict:
    return activity.fold(stored, C, events, SCRUBBED)


def test_a_customers_events_become_the_360_sections_with_their_freshness():
    view = present_activity(folded(history()))
    orders = view["orders"]["items"]
    assert [(o["order_id"], o["status"]) for o in orders] == [("o-2", "cancelled"), ("o-1", "shipped")]
    assert orders[1]["paid_cents"] == 12_900 and orders[1]["items"][0]["sku"] == "SKU-1"
    assert orders[1]["placed_at"] == at(1) and orders[1]["tracking_number"] == "SF1"
    assert view["orders"]["as_of"] == at(61)
    (complaint,) = view["complaints"]["items"]
    # reopened at 40, resolved again at 45: resolved, with the later resolution
    assert complaint["status"] == "resolved" and complaint["resolution"] == "refunded the pair"
    assert complaint["reopen_count"] == 1 and view["complaints"]["as_of"] == at(45)
    assert complaint["escalation_level"] == 1 and complaint["sla"]["breaches"] == ["resolution_breach"]
    assert complaint["sla"]["resolution_due"] == at(30 + 72) and complaint["sla"]["resolved_within_sla"]
    assert view["surveys"]["items"][0]["scores"] == {"service": 4}
    loyalty = view["loyalty"]
    assert loyalty["account"]["balance"] == 29 and loyalty["account"]["tier"] == "silver"
    assert [(e["entry_id"], e["points"]) for e in loyalty["ledger"]] == [("le-2", -100), ("le-1", 129)]
    assert loyalty["as_of"] == at(50)


def test_a_customer_only_registered_is_known_with_nothing_to_show():
    view = present_activity(folded(history()[:1]))
    assert view["orders"] == {"status": "ok", "items": [], "as_of": None}
    assert view["loyalty"]["account"] is None


def test_redelivered_events_change_nothing():
    events = history()
    once = folded(events)
    assert folded(events, once) == once
    assert folded(random.Random(1).sample(events, 5), once) == once


def test_the_same_events_in_another_order_give_the_same_document():
    events = history()
    expected = folded(events)
    for seed in range(20):
        shuffled = random.Random(seed).sample(events, len(events))
        assert folded(shuffled) == expected
        # and split across batches
        assert folded(shuffled[7:], folded(shuffled[:7])) == expected


def test_the_balance_is_the_one_after_the_newest_ledger_entry_whatever_the_order():
    late_first = [earned("le-9", 9, 10, 110), earned("le-1", 1, 100, 100)]
    assert folded(late_first)["loyalty"]["balance"] == 110
    assert folded(late_first[::-1])["loyalty"]["balance"] == 110


def test_the_balance_is_the_one_after_the_entry_loyalty_applied_last_though_stamped_earlier():
    # An order paid at 2h earns only when its paid event reaches loyalty, after a redemption
    # at 3h: the earn is stamped 2h but is loyalty's third entry, and its balance is the account's.
    events = [
        earned("le-1", 1, 100, 100, sequence=1),
        redeemed("le-2", 3, 60, 40, "coupon", sequence=2),
        earned("le-3", 2, 129, 169, sequence=3),
    ]
    for seed in range(6):
        assert folded(random.Random(seed).sample(events, len(events)))["loyalty"]["balance"] == 169
    assert folded([*events, events[1]])["loyalty"]["balance"] == 169  # the redemption redelivered
    # the same events without their sequence (published before entries were numbered): by time
    unnumbered = [
        earned("le-1", 1, 100, 100),
        redeemed("le-2", 3, 60, 40, "coupon"),
        earned("le-3", 2, 129, 169),
    ]
    assert folded(unnumbered)["loyalty"]["balance"] == 40


def test_each_section_keeps_the_newest_and_old_events_of_dropped_entities_stay_out():
    events = [e for k in range(30) for e in (placed(f"o-{k:02d}", k), paid(f"o-{k:02d}", k + 0.5))]
    # the oldest order, refunded after every other was placed: still the oldest, dropped
    refund = event(
        "crm.order.refunded",
        50,
        order_id="o-00",
        refund_id="rf-1",
        amount_cents=12_900,
        currency="CNY",
        reason="goodwill",
        return_id=None,
        refunded_at=at(50),
    )
    doc = folded([*events, refund])
    kept = [o["order_id"] for o in present_activity(doc)["orders"]["items"]]
    assert kept == [f"o-{k:02d}" for k in range(29, 9, -1)] and len(kept) == activity.RECENT
    # events of dropped orders delivered again, the late refund too: nothing changes
    assert folded(events[:4], doc) == doc
    assert folded([refund], doc) == doc
    # a new order still comes in and pushes the oldest kept one out
    newer = present_activity(folded([placed("o-new", 100)], doc))["orders"]["items"]
    assert [o["order_id"] for o in newer] == ["o-new", *kept[:-1]]


def test_erasure_scrubs_what_people_wrote_and_keeps_it_out_of_later_events():
    doc = folded(history())
    erasure = event("crm.customer.erased", 70, requested_by="admin")
    gone = folded([erasure], doc)
    assert activity.erased(doc, C, SCRUBBED) == gone  # the request's scrub and the event's agree
    view = present_activity(gone)
    assert view["complaints"]["items"][0]["resolution"] == SCRUBBED
    assert view["orders"]["items"][0]["cancel_reason"] == SCRUBBED
    assert {e["entry_id"]: e["reason"] for e in view["loyalty"]["ledger"]} == {
        "le-2": SCRUBBED,
        "le-1": "purchase",
    }
    assert view["loyalty"]["account"]["closed"] and view["loyalty"]["account"]["balance"] == 0
    # amounts stay, as in the services that own them
    assert view["orders"]["items"][1]["paid_cents"] == 12_900
    # a resolution arriving after the erasure (another topic, folded later) stays out too
    late = folded([resolved("cp-1", 80, "called Ms Wang back")], gone)
    assert present_activity(late)["complaints"]["items"][0]["resolution"] == SCRUBBED
    # and erased before anything else arrived: the same document as erased last
    assert folded([erasure, *history()]) == gone
