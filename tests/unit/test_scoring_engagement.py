"""The scorer folds engagement's message and coupon events into the profile's engagement:
how responsive the customer is to messages and how many coupons they used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.common.clock import to_rfc3339
from services.common.contracts import build_event
from services.scoring import facts as F
from services.scoring.profile import build
from services.scoring.scores import Population

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
IDS = {"customer_id": "c-1", "campaign_id": "cmp-1", "channel": "email"}


def message(kind: str, message_id: str, at: datetime, **data) -> dict:
    body = {**IDS, "message_id": message_id, **data}
    return build_event(f"crm.message.{kind}", body, source="/services/engagement", time=at)


def coupon(what: str, coupon_id: str, at: datetime, **data) -> dict:
    body = {"customer_id": "c-1", "coupon_id": coupon_id, "campaign_id": "cmp-1", **data}
    return build_event(f"crm.coupon.{what}", body, source="/services/engagement", time=at)


def test_messages_opened_and_coupons_used_become_responsiveness_once_each():
    at = NOW - timedelta(days=3)
    stamp = to_rfc3339(at)
    events = [
        message("sent", "m-1", at, purpose="marketing", sent_at=stamp),
        message("sent", "m-2", at, purpose="marketing", sent_at=stamp),
        message("opened", "m-1", at, opened_at=stamp),
        message("opened", "m-1", at, opened_at=stamp),  # a redelivery changes nothing
        message("sent", "m-old", NOW - timedelta(days=200), purpose="marketing", sent_at=stamp),
        coupon(
            "issued",
            "cp-1",
            at,
            kind="amount",
            value=100,
            min_spend_cents=0,
            expires_at=stamp,
            issued_at=stamp,
        ),
        coupon(
            "issued",
            "cp-2",
            at,
            kind="amount",
            value=100,
            min_spend_cents=0,
            expires_at=stamp,
            issued_at=stamp,
        ),
        coupon("redeemed", "cp-1", at, order_id="o-1", discount_cents=100, redeemed_at=stamp),
        coupon("redeemed", "cp-2", at, order_id="o-2", discount_cents=100, redeemed_at=stamp),
        coupon("released", "cp-2", at, order_id="o-2", released_at=stamp),
    ]
    facts = F.empty("c-1")
    for event in events:
        F.apply(facts, event)
    F.prune(facts, NOW)
    engagement = build(facts, NOW, Population(), None)[0]["engagement"]
    assert engagement["messages_180d"] == 2 and engagement["messages_answered_180d"] == 1
    assert engagement["responsiveness"] == 0.5
    assert (engagement["coupons_issued_180d"], engagement["coupons_used_180d"]) == (2, 1)
    assert engagement["coupon_use_rate"] == 0.5
    assert build(F.empty("c-2"), NOW, Population(), None)[0]["engagement"]["responsiveness"] is None


def test_a_message_the_provider_reported_failed_after_sending_did_not_reach_the_customer():
    at = NOW - timedelta(days=3)
    stamp = to_rfc3339(at)
    events = [
        message("sent", "m-1", at, purpose="marketing", sent_at=stamp),
        message("delivered", "m-1", at, delivered_at=stamp),
        message("opened", "m-1", at, opened_at=stamp),
        message("sent", "m-2", at, purpose="marketing", sent_at=stamp),
        message("failed", "m-2", at, reason="provider: handset switched off", attempts=1, failed_at=stamp),
    ]
    facts = F.empty("c-1")
    for event in events:
        F.apply(facts, event)
    engagement = build(facts, NOW, Population(), None)[0]["engagement"]
    assert (engagement["messages_180d"], engagement["messages_answered_180d"]) == (1, 1)
    assert engagement["responsiveness"] == 1.0
