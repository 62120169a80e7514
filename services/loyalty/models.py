"""Request and response shapes of the loyalty API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from services.common.clock import to_rfc3339
from services.common.fields import ShortText, Strict

from . import domain
from .domain import Account, Programme


class RedemptionIn(Strict):
    points: Annotated[int, Field(ge=1, le=10_000_000)]
    reason: ShortText


class AdjustmentIn(Strict):
    points: Annotated[int, Field(ge=-10_000_000, le=10_000_000)]
    reason: ShortText


def present_tiers(programme: Programme) -> dict[str, Any]:
    return {
        "items": [
            {
                "name": t.name,
                "threshold_cents": t.threshold_cents,
                "earn_multiplier": t.earn_multiplier,
                "discount_percent": t.discount_percent,
                "free_shipping": t.free_shipping,
            }
            for t in programme.tiers
        ],
        "spend_window_days": programme.spend_window.days,
        "points_expire_after_days": programme.lot_lifetime.days,
    }


def present_account(account: Account, programme: Programme, now: datetime) -> dict[str, Any]:
    """The account as the API shows it: balance, tier and benefits, and points expiring soon."""
    tier = programme.tier(account.tier)
    soon = now + programme.expiring_soon
    expiring: dict[str, int] = {}
    for lot in account.lots:
        if now < lot.expires_at <= soon and lot.remaining:
            day = lot.expires_at.date().isoformat()
            expiring[day] = expiring.get(day, 0) + lot.remaining
    next_expiry = domain.next_expiry(account)
    return {
        "customer_id": account.customer_id,
        "balance": domain.available(account, now),
        "tier": tier.name,
        "benefits": {
            "earn_multiplier": tier.earn_multiplier,
            "discount_percent": tier.discount_percent,
            "free_shipping": tier.free_shipping,
        },
        "trailing_spend_cents": max(0, domain.trailing_spend(account, now, programme)),
        "lifetime_earned": account.lifetime_earned,
        "expiring_soon": [{"date": d, "points": p} for d, p in sorted(expiring.items())],
        "next_expiry": to_rfc3339(next_expiry) if next_expiry else None,
        "closed": account.closed,
    }


def present_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A stored ledger entry as the API shows it."""
    return {
        **entry,
        "at": to_rfc3339(entry["at"]),
        "expires_at": to_rfc3339(entry["expires_at"]) if entry.get("expires_at") else None,
    }
