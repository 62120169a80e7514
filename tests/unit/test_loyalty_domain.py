"""Loyalty rules without I/O: earning, FIFO redemption, expiry, reversal, tiers, referrals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import Kind
from services.loyalty import domain
from services.loyalty.domain import Account, LoyaltyError, Programme

P = Programme()
T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def paid(account, order_id, cents, at=T0, event="e"):
    return domain.order_paid(account, order_id, cents, "CNY", at, f"{event}-{order_id}", P)


def test_points_per_currency_unit_at_the_tier_multiplier():
    change = paid(Account("c-1"), "o-1", 12_999)
    assert change.account.balance == 129
    assert [t for t, _ in change.facts] == ["crm.loyalty.points_earned"]
    gold = paid(Account("c-1", tier="gold"), "o-1", 10_000)
    assert gold.account.balance == 150


def test_the_same_order_paid_twice_earns_once():
    first = paid(Account("c-1"), "o-1", 10_000).account
    again = paid(first, "o-1", 10_000, event="other")
    assert again.account.balance == 100 and again.entries == []


def test_redemption_takes_the_oldest_lots_first_and_never_overdraws():
    acc = paid(Account("c-1"), "o-1", 10_000).account
    acc = paid(acc, "o-2", 5_000, at=T0 + timedelta(days=30)).account
    change = domain.redeem(acc, 120, "coupon", T0 + timedelta(days=31), "r1", "le-r1")
    assert change.entries[0].lots == ((acc.lots[0].lot_id, 100), (acc.lots[1].lot_id, 20))
    assert change.account.balance == 30
    with pytest.raises(LoyaltyError) as caught:
        domain.redeem(change.account, 31, "coupon", T0 + timedelta(days=31), "r2", "le-r2")
    assert caught.value.kind == Kind.CONFLICT and caught.value.extra["available"] == 30


def test_lots_expire_after_their_lifetime_and_expired_points_cannot_be_spent():
    acc = paid(Account("c-1"), "o-1", 10_000).account
    acc = paid(acc, "o-2", 5_000, at=T0 + timedelta(days=100)).account
    later = T0 + timedelta(days=366)
    assert domain.available(acc, later) == 50
    with pytest.raises(LoyaltyError):
        domain.redeem(acc, 60, "x", later, "r", "le-r")
    expired = domain.expire(acc, later, "x", "le-x")
    assert expired.facts[0][1]["points"] == 100 and expired.account.balance == 50
    assert domain.expire(expired.account, later, "y", "le-y").facts == []


def test_each_lot_is_announced_once_within_the_notice_period_and_not_after_it_expired():
    acc = paid(Account("c-1"), "o-1", 10_000).account  # expires T0 + 365 days
    acc = paid(acc, "o-2", 5_000, at=T0 + timedelta(days=20)).account
    first_notice = T0 + timedelta(days=365) - P.expiring_soon
    assert domain.next_announcement(acc, P) == first_notice
    assert domain.announce_expiring(acc, first_notice - timedelta(seconds=1), P).facts == []

    change = domain.announce_expiring(acc, first_notice, P)
    assert change.facts == [
        (
            "crm.loyalty.points_expiring",
            {
                "lot_id": acc.lots[0].lot_id,
                "points": 100,
                "expires_at": T0 + timedelta(days=365),
                "balance": 150,
                "announced_at": first_notice,
            },
        )
    ]
    assert change.entries == [] and change.account.balance == 150  # nothing moves in the ledger
    assert domain.announce_expiring(change.account, first_notice + timedelta(days=1), P).facts == []
    assert domain.next_announcement(change.account, P) == first_notice + timedelta(days=20)

    late = domain.expire(change.account, T0 + timedelta(days=390), "x", "le-x").account
    assert domain.announce_expiring(late, T0 + timedelta(days=390), P).facts == []  # both lots gone


def test_partial_returns_reverse_exactly_what_the_order_earned():
    acc = paid(Account("c-1"), "o-1", 9_999).account  # 99 points
    total = 0
    for k in range(3):
        change = domain.reverse_share(acc, "o-1", 3_333, T0 + timedelta(days=k + 1), "return", f"ret{k}", P)
        total += sum(-e.points for e in change.entries)
        acc = change.account
    assert total == 99 and acc.balance == 0
    assert domain.reverse_share(acc, "o-1", 100, T0, "refund", "again", P).entries == []


def test_reversal_never_takes_the_balance_below_zero():
    acc = paid(Account("c-1"), "o-1", 10_000).account
    acc = domain.redeem(acc, 90, "x", T0, "r", "le-r").account
    change = domain.reverse_share(acc, "o-1", 10_000, T0 + timedelta(days=1), "return", "ret", P)
    assert change.account.balance == 0 and change.entries[0].points == -10


def test_tiers_move_up_with_spend_and_down_when_it_leaves_the_window():
    change = paid(Account("c-1"), "o-1", 600_000)
    assert change.account.tier == "gold"
    assert change.facts[-1] == (
        "crm.loyalty.tier_changed",
        {
            "from_tier": "member",
            "to_tier": "gold",
            "direction": "up",
            "trailing_spend_cents": 600_000,
            "changed_at": T0,
        },
    )
    review = domain.tier_review_at(change.account, P)
    assert review == T0 + timedelta(days=365)
    down = domain.retier(change.account, review + timedelta(seconds=1), P)
    assert down.account.tier == "member" and down.facts[0][1]["direction"] == "down"


def test_a_return_can_drop_the_tier():
    acc = paid(Account("c-1"), "o-1", 120_000).account
    assert acc.tier == "silver"
    back = domain.reverse_share(acc, "o-1", 50_000, T0 + timedelta(days=2), "return", "r", P)
    assert back.account.tier == "member"


def test_referral_bonus_once_for_the_first_paid_order():
    referred = Account("c-2", referred_by="c-1")
    referred = paid(referred, "o-1", 1_000).account
    assert domain.referral_due(referred)
    change, referred = domain.pay_referral(Account("c-1"), referred, T0, P)
    assert change.account.balance == P.referral_bonus and change.entries[0].source == "referral:c-2"
    assert not domain.referral_due(paid(referred, "o-2", 1_000).account)


def test_closing_an_account_removes_the_link_and_the_points_through_the_ledger():
    earned = paid(Account("c-1", referred_by="c-9"), "o-1", 10_000)
    change = domain.close(earned.account, T0, "le-e")
    closed = change.account
    assert closed.closed and closed.referred_by is None and closed.balance == 0
    assert sum(e.points for e in earned.entries + change.entries) == 0  # balance = ledger sum
    (lapsed,) = change.entries
    assert (lapsed.kind, lapsed.reason, lapsed.points) == ("expire", "erased", -earned.account.balance)
    assert change.facts == [
        (
            "crm.loyalty.points_expired",
            {
                "entry_id": "le-e",
                "points": earned.account.balance,
                "balance": 0,
                "expired_at": T0,
                "reason": "erased",
            },
        )
    ]
    assert domain.close(Account("c-2"), T0, "le-e2").entries == []  # nothing to lapse
    assert paid(closed, "o-2", 10_000).account.balance == 0
    with pytest.raises(LoyaltyError):
        domain.redeem(closed, 1, "x", T0, "r", "le")


def test_the_first_referrer_counts_and_nobody_refers_themselves():
    fresh = Account("c-new")
    assert domain.referred(fresh, None).referred_by is None
    assert domain.referred(fresh, "c-new").referred_by is None
    first = domain.referred(fresh, "c-friend")
    assert first.referred_by == "c-friend"
    assert domain.referred(first, "c-other").referred_by == "c-friend"
    assert domain.referred(domain.close(fresh, T0, "le").account, "c-friend").referred_by is None  # erased


def test_refunds_take_points_back_except_those_for_returns():
    assert domain.reversal_reason("return") is None  # the return already took them back
    assert domain.reversal_reason("cancellation") == "cancellation"
    assert domain.reversal_reason("goodwill") == "refund"


def test_entries_are_numbered_in_the_order_applied_and_their_events_carry_the_number():
    earned = domain.numbered(paid(Account("c-1"), "o-1", 10_000))
    redeemed = domain.numbered(
        domain.redeem(earned.account, 60, "coupon", T0 + timedelta(hours=2), "r", "le-r")
    )
    # an order paid before the redemption, whose paid event reached loyalty after it
    late = domain.numbered(paid(redeemed.account, "o-2", 12_900, at=T0 + timedelta(hours=1)))
    assert [e.sequence for c in (earned, redeemed, late) for e in c.entries] == [1, 2, 3]
    assert late.account.entries == 3 and late.account.balance == 169
    told = {
        data["entry_id"]: (data["sequence"], data["balance"])
        for c in (earned, redeemed, late)
        for _, data in c.facts
    }
    assert told == {"le-e-o-1-e": (1, 100), "le-r": (2, 40), "le-e-o-2-e": (3, 169)}
    # an announcement tells the balance after the last entry, and is numbered with it
    announced = domain.numbered(domain.announce_expiring(late.account, T0 + timedelta(days=340), P))
    assert {data["sequence"] for _, data in announced.facts} == {3} and announced.account.entries == 3


def test_an_account_from_before_numbering_announces_without_a_number_until_its_next_entry():
    lots = paid(Account("c-1"), "o-1", 10_000).account  # as stored before entries were numbered
    announced = domain.numbered(domain.announce_expiring(lots, T0 + timedelta(days=340), P))
    assert announced.facts and all("sequence" not in data for _, data in announced.facts)
    redeemed = domain.numbered(domain.redeem(lots, 10, "coupon", T0 + timedelta(days=1), "r", "le-r"))
    assert redeemed.facts[0][1]["sequence"] == 1 and redeemed.account.entries == 1
