"""Engagement rules: who may be sent what (consent, pacing, quiet hours), who is held out as
the control group, how a coupon discounts an order, how a send is retried, and how a
campaign's uplift is measured. Pure: no I/O, the caller passes the clock."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import tomllib
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from scipy.stats import norm

from services.common.errors import Kind, RuleBroken

CHANNELS = ("email", "sms", "push")
LOCALES = ("zh-CN", "en")
# The signals a triggered campaign can follow: trigger -> the event type that fires it.
TRIGGERS = {
    "churn_warning": "crm.profile.churn_warning",
    "care_due": "crm.profile.care_due",
    "lifecycle_decline": "crm.profile.lifecycle_changed",
    "tier_changed": "crm.loyalty.tier_changed",
    "points_expiring": "crm.loyalty.points_expiring",
}
DEFAULT_CONTROL_SHARE = 0.10
DEFAULT_ATTRIBUTION_DAYS = 7
DEFAULT_CAP = 3  # marketing messages per customer ...
DEFAULT_CAP_DAYS = 7  # ... per this many days
QUIET_START = time(21, 0)  # no marketing from 21:00 ...
QUIET_END = time(9, 0)  # ... to 09:00 in the customer's time zone
MAX_ATTEMPTS = 8  # a message that failed this often is failed for good
# Unambiguous upper-case letters and digits (no 0/O, 1/I/L): 31 symbols, 12 of them ≈ 59 bits.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 12


class EngagementError(RuleBroken):
    """An engagement rule was broken."""


class Purpose(StrEnum):
    MARKETING = "marketing"  # needs the customer's consent for the channel
    SERVICE = "service"  # about something the customer asked for (a complaint update)


class State(StrEnum):
    PENDING = "pending"  # to be sent when due
    SENDING = "sending"  # claimed by a sender
    SENT = "sent"  # accepted by the relay or provider
    FAILED = "failed"  # given up, with the reason
    HELD_OUT = "held_out"  # in the control group: measured, never sent
    SUPPRESSED = "suppressed"  # not sent: no consent, no address, capped, erased


class Receipt(StrEnum):
    """What the SMS and push provider reports about a message it accepted."""

    DELIVERED = "delivered"  # it reached the customer's phone or app
    FAILED = "failed"  # it never will (the reason comes with it)


def receipt_moves(state: State, delivered: bool, receipt: Receipt) -> Receipt | None:
    """What a provider's delivery receipt does to a message: moves a sent one to delivered
    or failed, or changes nothing (None) when the message already has its final word, so a
    repeated or late receipt is harmless. The first final word stands: a delivered message is
    not failed, nor a failed one delivered, because its event is published and counted (the
    campaign report, the scorer's profile) and an event cannot be taken back. A message the
    provider was never handed, or not yet recorded as handed, is a conflict (the provider
    retries a receipt it had refused)."""
    if state in (State.PENDING, State.SENDING):
        raise EngagementError(f"the message is {state.value}, not sent yet", Kind.CONFLICT)
    if state in (State.HELD_OUT, State.SUPPRESSED):
        raise EngagementError(f"the message was never sent ({state.value})", Kind.CONFLICT)
    if state is State.FAILED or delivered:
        return None
    return receipt


# --- contacts and consent ------------------------------------------------------------------------


@dataclass(frozen=True)
class Contact:
    """What engagement knows about a customer to reach them (from crm.customers.v1)."""

    customer_id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    city: str | None = None
    gender: str | None = None
    birth_date: str | None = None
    consent: dict[str, bool] = field(default_factory=dict)  # channel -> marketing consent
    locale: str | None = None
    time_zone: str | None = None
    erased: bool = False


def consent_from(data: dict[str, Any]) -> dict[str, bool]:
    """A registration's or consent change's data -> consent per channel. The old single
    `marketing_consent` means every channel; `channels` (when present) says each one."""
    overall = bool(data.get("marketing_consent", False))
    channels = data.get("channels") or {}
    return {c: bool(channels.get(c, overall)) for c in CHANNELS}


def address(contact: Contact, channel: str) -> str | None:
    if contact.erased:
        return None
    if channel == "email":
        return contact.email
    if channel == "sms":
        return contact.phone
    return contact.customer_id  # push goes to the customer's app installation, by id


def may_send(contact: Contact, channel: str, purpose: Purpose) -> str | None:
    """None when the message may go; otherwise why not."""
    if contact.erased:
        return "erased"
    if address(contact, channel) is None:
        return f"no {channel} address"
    if purpose is Purpose.MARKETING and not contact.consent.get(channel, False):
        return f"no marketing consent for {channel}"
    return None


# --- audiences -------------------------------------------------------------------------------------

# Audience filters the profiles search does not offer: applied to each customer it returns.
LOCAL_FILTERS = ("max_risk", "last_purchase_min_days", "last_purchase_max_days")


def search_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """What the profiles search is asked."""
    return {k: v for k, v in filters.items() if k not in LOCAL_FILTERS}


def in_audience(row: dict[str, Any], filters: dict[str, Any]) -> bool:
    """A search hit (churn_risk, recency_days as last scored) against the local filters; a
    customer without the figure a filter asks about is not in the audience."""
    if (ceiling := filters.get("max_risk")) is not None:
        if row.get("churn_risk") is None or row["churn_risk"] > ceiling:
            return False
    low, high = filters.get("last_purchase_min_days"), filters.get("last_purchase_max_days")
    if low is not None or high is not None:
        days = row.get("recency_days")
        if days is None or (low is not None and days < low) or (high is not None and days > high):
            return False
    return True


# --- the control group -----------------------------------------------------------------------------


def in_control(campaign_id: str, customer_id: str, share: float) -> bool:
    """A stable coin per campaign and customer: fixed before anything is sent, the same on
    every replica and after every restart, independent between campaigns."""
    digest = hashlib.sha256(f"{campaign_id}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


# --- pacing ----------------------------------------------------------------------------------------


def within_cap(recent: list[datetime], now: datetime, cap: int, days: int) -> bool:
    """`recent`: when the customer's other marketing messages went (or are due)."""
    since = now - timedelta(days=days)
    return sum(1 for at in recent if at > since) < cap


def after_quiet_hours(now: datetime, zone: str) -> datetime:
    """The first moment at or after `now` outside the quiet hours of the customer's zone."""
    local = now.astimezone(ZoneInfo(zone))
    clock = local.timetz().replace(tzinfo=None)
    if QUIET_END <= clock < QUIET_START:
        return now
    day = local.date() if clock < QUIET_END else local.date() + timedelta(days=1)
    return datetime.combine(day, QUIET_END, tzinfo=local.tzinfo).astimezone(now.tzinfo)


def retry_at(now: datetime, attempts: int, first: float = 5.0) -> datetime:
    """Exponential backoff from `first` seconds, at most an hour apart."""
    return now + timedelta(seconds=min(first * 2 ** max(attempts - 1, 0), 3600))


# --- the holiday calendar ------------------------------------------------------------------------


def load_calendar(text: str) -> dict[str, frozenset[date]]:
    """TOML `[[holiday]] name = ..., dates = [...]` -> {name: dates}; a bad file stops the start."""
    calendar: dict[str, frozenset[date]] = {}
    for entry in tomllib.loads(text).get("holiday", []):
        name = entry["name"]
        if not isinstance(name, str) or not name or name in calendar:
            raise ValueError(f"holiday names must be unique, non-empty text: {name!r}")
        calendar[name] = frozenset(date.fromisoformat(d) for d in entry["dates"])
    return calendar


def holiday_today(calendar: dict[str, frozenset[date]], name: str, now: datetime, zone: str) -> date | None:
    """Today's date in `zone` when it is the holiday `name`, else None."""
    today = now.astimezone(ZoneInfo(zone)).date()
    return today if today in calendar.get(name, ()) else None


# --- coupons ---------------------------------------------------------------------------------------


class CouponState(StrEnum):
    ISSUED = "issued"
    RESERVED = "reserved"  # held by an unpaid order
    REDEEMED = "redeemed"  # the order was paid


@dataclass(frozen=True)
class Offer:
    kind: str  # amount | percent
    value: int  # cents off, or percent off
    min_spend_cents: int = 0
    valid_days: int = 14


@dataclass(frozen=True)
class Coupon:
    code: str
    customer_id: str
    campaign_id: str
    offer: Offer
    issued_at: datetime
    expires_at: datetime
    state: CouponState = CouponState.ISSUED
    order_id: str | None = None
    version: int = 0


def new_code() -> str:
    """Unguessable: drawn from the operating system's CSPRNG, shown in groups of four."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[k : k + 4] for k in range(0, CODE_LENGTH, 4))


def normalise_code(text: str) -> str:
    raw = "".join(ch for ch in text.upper() if ch.isalnum())
    return "-".join(raw[k : k + 4] for k in range(0, len(raw), 4))


def issue(code: str, customer_id: str, campaign_id: str, offer: Offer, now: datetime) -> Coupon:
    return Coupon(code, customer_id, campaign_id, offer, now, now + timedelta(days=offer.valid_days))


def discount_cents(offer: Offer, subtotal_cents: int) -> int:
    if offer.kind == "amount":
        return min(offer.value, subtotal_cents)
    return subtotal_cents * offer.value // 100


def reserve(coupon: Coupon, customer_id: str, order_id: str, subtotal_cents: int, now: datetime) -> Coupon:
    """Hold the coupon for an order; the discount is `discount_cents` of the subtotal."""
    if coupon.customer_id != customer_id:
        # Said as "no such coupon": another person's code must not be confirmed to exist.
        raise EngagementError(f"no coupon {coupon.code}", Kind.NOT_FOUND)
    if coupon.state is CouponState.RESERVED and coupon.order_id == order_id:
        return coupon  # the same order asking again
    if coupon.state is not CouponState.ISSUED:
        raise EngagementError(f"coupon {coupon.code} is already {coupon.state.value}", Kind.CONFLICT)
    if now >= coupon.expires_at:
        raise EngagementError(f"coupon {coupon.code} expired", Kind.CONFLICT)
    if subtotal_cents < coupon.offer.min_spend_cents:
        raise EngagementError(
            f"coupon {coupon.code} needs a spend of at least {coupon.offer.min_spend_cents} cents",
            Kind.CONFLICT,
            min_spend_cents=coupon.offer.min_spend_cents,
        )
    return replace(coupon, state=CouponState.RESERVED, order_id=order_id)


def redeem(coupon: Coupon, order_id: str) -> Coupon | None:
    """The order was paid; None when this coupon was not that order's (nothing changes)."""
    if coupon.order_id != order_id or coupon.state is not CouponState.RESERVED:
        return None
    return replace(coupon, state=CouponState.REDEEMED)


def release(coupon: Coupon, order_id: str) -> Coupon | None:
    """The order was cancelled: the code may be used again (a paid one too, if cancelled)."""
    if coupon.order_id != order_id or coupon.state is CouponState.ISSUED:
        return None
    return replace(coupon, state=CouponState.ISSUED, order_id=None)


def guess_delay(failures: int) -> float:
    """Seconds to wait before answering a caller who has guessed wrong `failures` times in
    the last minute: nothing for a typo or two, then doubling up to 5 s."""
    return 0.0 if failures < 3 else min(0.1 * 2 ** (failures - 3), 5.0)


# --- signed links ----------------------------------------------------------------------------------


def sign(secret: str, *parts: str) -> str:
    mac = hmac.new(secret.encode(), "\x00".join(parts).encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def signed(secret: str, token: str, *parts: str) -> bool:
    return hmac.compare_digest(sign(secret, *parts), token)


# --- measurement -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    customers: int
    converted: int

    @property
    def rate(self) -> float | None:
        return self.converted / self.customers if self.customers else None


@dataclass(frozen=True)
class Uplift:
    estimate: float | None  # treated rate minus control rate
    low: float | None  # 95 % interval
    high: float | None


def _wilson(arm: Arm, z: float) -> tuple[float, float]:
    n, p = arm.customers, arm.converted / arm.customers
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def uplift(treated: Arm, control: Arm, confidence: float = 0.95) -> Uplift:
    """Difference of two conversion rates with Newcombe's hybrid score interval (method 10):
    Wilson intervals of each arm combined; unlike the plain Wald interval it keeps its
    coverage with few conversions or a small control group."""
    if not treated.customers or not control.customers:
        return Uplift(None, None, None)
    z = float(norm.ppf(0.5 + confidence / 2))
    p1, p2 = treated.rate, control.rate
    l1, u1 = _wilson(treated, z)
    l2, u2 = _wilson(control, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Uplift(d, low, high)


def converted(assigned_at: datetime, paid: list[datetime], days: int) -> bool:
    """A paid order within the attribution window after the customer was assigned to an arm
    (the same rule for treated and control, so the two compare)."""
    end = assigned_at + timedelta(days=days)
    return any(assigned_at <= at < end for at in paid)
