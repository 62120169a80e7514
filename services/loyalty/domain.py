"""Loyalty rules: earning in lots that expire (each announced ahead of its expiry), FIFO redemption, reversal on returns, tiers by
trailing spend, referral bonuses. Pure; no I/O.

Every change yields ledger entries (append-only, each with a unique source so a replayed
cause changes nothing) and facts to publish. The balance is the sum of the open lots, which is
also the sum of the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from services.common.errors import Kind, RuleBroken
from services.common.vocabulary import LoyaltyTier

TIERS = tuple(LoyaltyTier)  # ascending


class LoyaltyError(RuleBroken):
    """A loyalty rule was broken."""


def no_account(customer_id: str) -> LoyaltyError:
    return LoyaltyError(f"no loyalty account for {customer_id}", Kind.NOT_FOUND)


@dataclass(frozen=True)
class Tier:
    name: str
    threshold_cents: int  # trailing 12-month net spend that reaches it
    earn_multiplier: float
    discount_percent: float
    free_shipping: bool


@dataclass(frozen=True)
class Programme:
    tiers: tuple[Tier, ...] = (
        Tier(LoyaltyTier.MEMBER, 0, 1.0, 0, False),
        Tier(LoyaltyTier.SILVER, 100_000, 1.25, 3, False),
        Tier(LoyaltyTier.GOLD, 500_000, 1.5, 5, True),
        Tier(LoyaltyTier.PLATINUM, 2_000_000, 2.0, 8, True),
    )
    points_per_unit: float = 1.0  # per major currency unit spent
    points_per_unit_by_currency: dict[str, float] = field(default_factory=dict)
    # Spend in other currencies counts toward tiers at these weights (default 1).
    spend_weight_by_currency: dict[str, float] = field(default_factory=dict)
    lot_lifetime: timedelta = timedelta(days=365)
    spend_window: timedelta = timedelta(days=365)
    referral_bonus: int = 500
    # Points expiring this close are shown as "expiring soon", and each lot is announced
    # (crm.loyalty.points_expiring) once when it comes this close.
    expiring_soon: timedelta = timedelta(days=30)

    def tier(self, name: str) -> Tier:
        return next(t for t in self.tiers if t.name == name)

    def tier_for(self, spend_cents: int) -> Tier:
        return [t for t in self.tiers if spend_cents >= t.threshold_cents][-1]

    def points_for(self, amount_cents: int, currency: str, tier: str) -> int:
        rate = self.points_per_unit_by_currency.get(currency, self.points_per_unit)
        return int(amount_cents / 100 * rate * self.tier(tier).earn_multiplier)

    def weighted(self, amount_cents: int, currency: str) -> int:
        return round(amount_cents * self.spend_weight_by_currency.get(currency, 1.0))


@dataclass(frozen=True)
class Lot:
    lot_id: str
    points: int
    remaining: int
    earned_at: datetime
    expires_at: datetime
    order_id: str | None
    announced: bool = False  # its coming expiry was announced (crm.loyalty.points_expiring)


@dataclass(frozen=True)
class OrderPoints:
    """What an order earned, and how much of it has been taken back."""

    order_id: str
    paid_cents: int
    currency: str
    earned: int
    paid_at: datetime
    taken_back_cents: int = 0
    reversed: int = 0


@dataclass(frozen=True)
class Account:
    customer_id: str
    tier: str = LoyaltyTier.MEMBER
    lots: tuple[Lot, ...] = ()  # open lots, oldest first
    spend: tuple[tuple[datetime, int], ...] = ()  # (when, weighted cents): trailing-window entries
    orders: tuple[OrderPoints, ...] = ()  # paid orders within the window, for reversals
    referred_by: str | None = None
    first_paid_at: datetime | None = None
    referral_paid: bool = False
    lifetime_earned: int = 0
    closed: bool = False
    version: int = 0
    entries: int = 0  # ledger entries written: the sequence of the last one

    @property
    def balance(self) -> int:
        return sum(lot.remaining for lot in self.lots)


@dataclass(frozen=True)
class Entry:
    """One ledger line. `source` is unique across the ledger: the cause's identity."""

    entry_id: str
    source: str
    customer_id: str
    kind: str  # earn, redeem, expire, reverse, adjust
    points: int  # signed
    balance: int  # after this entry
    at: datetime
    reason: str
    order_id: str | None = None
    lots: tuple[tuple[str, int], ...] = ()  # (lot id, points taken) for debits
    expires_at: datetime | None = None
    # Its place in the account's ledger (1, 2, ...): the order loyalty applied the entries in,
    # which their times need not follow (an earn is stamped with the order's paid time).
    sequence: int = 0


@dataclass(frozen=True)
class Change:
    account: Account
    entries: list[Entry]
    facts: list[tuple[str, dict[str, Any]]]


def _credit(
    account: Account,
    points: int,
    at: datetime,
    source: str,
    entry_id: str,
    reason: str,
    programme: Programme,
    order_id: str | None = None,
) -> Change:
    expires = at + programme.lot_lifetime
    lot = Lot(entry_id, points, points, at, expires, order_id)
    lots = tuple(sorted((*account.lots, lot), key=lambda x: (x.earned_at, x.lot_id)))
    credited = replace(account, lots=lots, lifetime_earned=account.lifetime_earned + points)
    entry = Entry(
        entry_id,
        source,
        account.customer_id,
        "earn" if reason != "adjustment" else "adjust",
        points,
        credited.balance,
        at,
        reason,
        order_id,
        expires_at=expires,
    )
    fact = (
        "crm.loyalty.points_earned",
        {
            "entry_id": entry_id,
            "points": points,
            "reason": reason,
            "order_id": order_id,
            "expires_at": expires,
            "balance": credited.balance,
            "earned_at": at,
        },
    )
    return Change(credited, [entry], [fact])


def _debit(account: Account, points: int, at: datetime) -> tuple[Account, tuple[tuple[str, int], ...]]:
    """Take points from the oldest unexpired lots first."""
    left = points
    taken: list[tuple[str, int]] = []
    lots = []
    for lot in account.lots:
        if left and lot.expires_at > at and lot.remaining:
            take = min(lot.remaining, left)
            left -= take
            taken.append((lot.lot_id, take))
            lot = replace(lot, remaining=lot.remaining - take)
        if lot.remaining:
            lots.append(lot)
    assert left == 0, "debit beyond the balance"
    return replace(account, lots=tuple(lots)), tuple(taken)


def available(account: Account, at: datetime) -> int:
    return sum(lot.remaining for lot in account.lots if lot.expires_at > at)


def redeem(account: Account, points: int, reason: str, at: datetime, source: str, entry_id: str) -> Change:
    if account.closed:
        raise LoyaltyError("the account is closed", Kind.CONFLICT)
    if points <= 0:
        raise LoyaltyError("points must be positive", field="points")
    have = available(account, at)
    if points > have:
        raise LoyaltyError(
            f"not enough points: {points} asked, {have} available", Kind.CONFLICT, available=have
        )
    debited, taken = _debit(account, points, at)
    entry = Entry(
        entry_id, source, account.customer_id, "redeem", -points, debited.balance, at, reason, lots=taken
    )
    return Change(
        debited,
        [entry],
        [
            (
                "crm.loyalty.points_redeemed",
                {
                    "entry_id": entry_id,
                    "points": points,
                    "reason": reason,
                    "balance": debited.balance,
                    "redeemed_at": at,
                },
            )
        ],
    )


def adjust(
    account: Account, points: int, reason: str, at: datetime, source: str, entry_id: str, programme: Programme
) -> Change:
    """An admin's correction: a credit is a new lot; a debit cannot take the balance below zero."""
    if points == 0:
        raise LoyaltyError("an adjustment of 0 points changes nothing", field="points")
    if points > 0:
        change = _credit(account, points, at, source, entry_id, "adjustment", programme)
        return replace(change, entries=[replace(change.entries[0], reason=reason)])
    have = available(account, at)
    if -points > have:
        raise LoyaltyError(f"cannot take {-points} points: {have} available", Kind.CONFLICT, available=have)
    debited, taken = _debit(account, -points, at)
    entry = Entry(
        entry_id, source, account.customer_id, "adjust", points, debited.balance, at, reason, lots=taken
    )
    return Change(
        debited,
        [entry],
        [
            (
                "crm.loyalty.points_redeemed",
                {
                    "entry_id": entry_id,
                    "points": -points,
                    "reason": f"adjustment: {reason}",
                    "balance": debited.balance,
                    "redeemed_at": at,
                },
            )
        ],
    )


def expire(account: Account, at: datetime, source: str, entry_id: str) -> Change:
    """Remove what is left of every lot past its expiry."""
    gone = [lot for lot in account.lots if lot.expires_at <= at and lot.remaining]
    if not gone:
        return Change(account, [], [])
    points = sum(lot.remaining for lot in gone)
    kept = replace(account, lots=tuple(lot for lot in account.lots if lot.expires_at > at))
    entry = Entry(
        entry_id,
        source,
        account.customer_id,
        "expire",
        -points,
        kept.balance,
        at,
        "expired",
        lots=tuple((lot.lot_id, lot.remaining) for lot in gone),
    )
    return Change(
        kept,
        [entry],
        [
            (
                "crm.loyalty.points_expired",
                {"entry_id": entry_id, "points": points, "balance": kept.balance, "expired_at": at},
            )
        ],
    )


def trailing_spend(account: Account, at: datetime, programme: Programme) -> int:
    since = at - programme.spend_window
    return sum(cents for when, cents in account.spend if since < when <= at)


def retier(account: Account, at: datetime, programme: Programme) -> Change:
    """Move to the tier the trailing spend reaches, up or down."""
    spend = trailing_spend(account, at, programme)
    target = programme.tier_for(max(spend, 0)).name
    pruned = replace(
        account, spend=tuple((w, c) for w, c in account.spend if w > at - programme.spend_window)
    )
    if target == account.tier:
        return Change(pruned, [], [])
    direction = "up" if TIERS.index(target) > TIERS.index(account.tier) else "down"
    return Change(
        replace(pruned, tier=target),
        [],
        [
            (
                "crm.loyalty.tier_changed",
                {
                    "from_tier": account.tier,
                    "to_tier": target,
                    "direction": direction,
                    "trailing_spend_cents": max(spend, 0),
                    "changed_at": at,
                },
            )
        ],
    )


def tier_review_at(account: Account, programme: Programme) -> datetime | None:
    """When the oldest spend leaves the window (the tier may drop then without any event)."""
    if not account.spend:
        return None
    return min(when for when, _ in account.spend) + programme.spend_window


def next_expiry(account: Account) -> datetime | None:
    return min((lot.expires_at for lot in account.lots if lot.remaining), default=None)


def next_announcement(account: Account, programme: Programme) -> datetime | None:
    """When the next lot not yet announced comes within the notice period."""
    return min(
        (
            lot.expires_at - programme.expiring_soon
            for lot in account.lots
            if lot.remaining and not lot.announced
        ),
        default=None,
    )


def announce_expiring(account: Account, at: datetime, programme: Programme) -> Change:
    """Each lot with points left that expires within the notice period is announced once
    (crm.loyalty.points_expiring), so a reminder can go out while the points can still be
    spent. Nothing moves in the ledger: the lot only remembers it was announced."""
    soon = at + programme.expiring_soon
    due = {
        lot.lot_id
        for lot in account.lots
        if lot.remaining and not lot.announced and at < lot.expires_at <= soon
    }
    if not due:
        return Change(account, [], [])
    announced = replace(
        account,
        lots=tuple(replace(lot, announced=True) if lot.lot_id in due else lot for lot in account.lots),
    )
    facts = [
        (
            "crm.loyalty.points_expiring",
            {
                "lot_id": lot.lot_id,
                "points": lot.remaining,
                "expires_at": lot.expires_at,
                "balance": announced.balance,
                "announced_at": at,
            },
        )
        for lot in announced.lots
        if lot.lot_id in due
    ]
    return Change(announced, [], facts)


def combine(*changes: Change) -> Change:
    return Change(
        changes[-1].account, [e for c in changes for e in c.entries], [f for c in changes for f in c.facts]
    )


def numbered(change: Change) -> Change:
    """The change with each ledger entry numbered next in its account, and every fact that
    tells a balance carrying the number of the last entry that balance includes (the entry's
    own for the fact announcing it), so a mirror of the balance keeps the one loyalty reached
    last, whatever the entries' times (an earn is stamped with the order's paid time)."""
    start = change.account.entries
    last = start + len(change.entries)
    sequences = {e.entry_id: start + n for n, e in enumerate(change.entries, 1)}

    def told(data: dict[str, Any]) -> dict[str, Any]:
        number = sequences.get(data.get("entry_id"), last)
        # 0: an account whose entries all predate numbering; its events go without, as theirs did
        return {**data, "sequence": number} if "balance" in data and number else data

    return Change(
        replace(change.account, entries=last),
        [replace(e, sequence=sequences[e.entry_id]) for e in change.entries],
        [(kind, told(data)) for kind, data in change.facts],
    )


def order_paid(
    account: Account,
    order_id: str,
    amount_cents: int,
    currency: str,
    at: datetime,
    event_id: str,
    programme: Programme,
) -> Change:
    """Spend counts toward the tier; points at the tier's multiplier before this order."""
    if any(o.order_id == order_id for o in account.orders):
        return Change(account, [], [])  # the same order paid twice is one purchase
    points = 0 if account.closed else programme.points_for(amount_cents, currency, account.tier)
    recent = tuple(
        o for o in account.orders if o.paid_at > at - programme.spend_window - programme.spend_window
    )
    with_spend = replace(
        account,
        spend=(*account.spend, (at, programme.weighted(amount_cents, currency))),
        first_paid_at=account.first_paid_at or at,
        orders=(*recent, OrderPoints(order_id, amount_cents, currency, points, at)),
    )
    earned = (
        _credit(
            with_spend, points, at, f"{event_id}:earn", f"le-{event_id}-e", "purchase", programme, order_id
        )
        if points > 0
        else Change(with_spend, [], [])
    )
    return combine(earned, retier(earned.account, at, programme))


def reverse_share(
    account: Account,
    order_id: str,
    cents: int,
    at: datetime,
    reason: str,
    event_id: str,
    programme: Programme,
) -> Change:
    """Take back the points matching `cents` more of an order coming back (return, refund,
    cancellation). Cumulative, so partial returns add up to exactly what the order earned;
    never below zero. An order this account never saw paid changes nothing."""
    order = next((o for o in account.orders if o.order_id == order_id), None)
    if order is None:
        return Change(account, [], [])
    back = min(order.paid_cents, order.taken_back_cents + cents)
    owed_total = order.earned if order.paid_cents <= 0 else order.earned * back // order.paid_cents
    take = min(max(0, owed_total - order.reversed), available(account, at))
    updated = replace(order, taken_back_cents=back, reversed=order.reversed + take)
    with_spend = replace(
        account,
        orders=tuple(updated if o.order_id == order_id else o for o in account.orders),
        spend=(*account.spend, (at, -programme.weighted(back - order.taken_back_cents, order.currency))),
    )
    changes = [Change(with_spend, [], [])]
    if take > 0:
        debited, taken = _debit(with_spend, take, at)
        entry_id = f"le-{event_id}-r"
        entry = Entry(
            entry_id,
            f"{event_id}:reverse",
            account.customer_id,
            "reverse",
            -take,
            debited.balance,
            at,
            reason,
            order_id,
            lots=taken,
        )
        changes.append(
            Change(
                debited,
                [entry],
                [
                    (
                        "crm.loyalty.points_reversed",
                        {
                            "entry_id": entry_id,
                            "points": take,
                            "order_id": order_id,
                            "reason": reason,
                            "balance": debited.balance,
                            "reversed_at": at,
                        },
                    )
                ],
            )
        )
    return combine(*changes, retier(changes[-1].account, at, programme))


def referred(account: Account, referrer: str | None) -> Account:
    """Registration names who referred the customer: kept if it is someone else and the
    account has no referrer yet (the first one counts). A closed account (erased) takes no
    referral link, whichever of the two came first."""
    if referrer and referrer != account.customer_id and account.referred_by is None and not account.closed:
        return replace(account, referred_by=referrer)
    return account


def reversal_reason(refund_reason: str) -> str | None:
    """Why a refund takes points back, or None when it takes nothing: a refund for a return
    repays what the return already reversed."""
    if refund_reason == "return":
        return None
    return "cancellation" if refund_reason == "cancellation" else "refund"


def referral_due(referred: Account) -> bool:
    return (
        referred.referred_by is not None and referred.first_paid_at is not None and not referred.referral_paid
    )


def pay_referral(
    referrer: Account, referred: Account, at: datetime, programme: Programme
) -> tuple[Change, Account]:
    """The referrer's bonus for the referred customer's first paid order, once."""
    source = f"referral:{referred.customer_id}"
    change = _credit(
        referrer,
        programme.referral_bonus,
        at,
        source,
        f"le-ref-{referred.customer_id}",
        "referral",
        programme,
    )
    return change, replace(referred, referral_paid=True)


def close(account: Account, at: datetime, entry_id: str) -> Change:
    """Erasure: the account closes, its points lapse with the person (a ledger entry and a
    points_expired with reason `erased`, so the balance stays the ledger's sum and every mirror
    of it drops to 0), the referral link goes."""
    closed = replace(account, closed=True, referred_by=None, lots=())
    points = account.balance
    if points == 0:
        return Change(closed, [], [])
    entry = Entry(
        entry_id,
        f"erase:{account.customer_id}",
        account.customer_id,
        "expire",
        -points,
        0,
        at,
        "erased",
        lots=tuple((lot.lot_id, lot.remaining) for lot in account.lots if lot.remaining),
    )
    lapsed = {"entry_id": entry_id, "points": points, "balance": 0, "expired_at": at, "reason": "erased"}
    return Change(closed, [entry], [("crm.loyalty.points_expired", lapsed)])
