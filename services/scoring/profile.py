"""The live profile of one customer: every section of docs/architecture.md ("The live
profile"), and the outbound signals that follow from comparing it with the previous one.
Pure."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from services.common.clock import parse_rfc3339
from services.common.contracts import SATISFACTION_DIMENSIONS
from services.common.vocabulary import LoyaltyTier, Segment

from . import facts as F
from . import scores as S
from . import warnings as W

SATISFACTION_FIELDS = (*SATISFACTION_DIMENSIONS, "overall")
IDENTITY = (*F.PERSONAL, "city_tier", "channel", "referred_by")
# Identity fields the profile reads besides the ones it shows.
IDENTITY_READ = (*IDENTITY, "registered_at", "marketing_consent")


def _service(facts: F.Facts, now: datetime) -> dict[str, Any]:
    if not facts["complaints"] and not facts["surveys"]:  # most customers: nothing to count
        return {
            "complaints_total": 0,
            "complaints_open": 0,
            "complaints_90d": 0,
            "sla_breaches": 0,
            "csat_average": None,
            "satisfaction": dict.fromkeys(SATISFACTION_FIELDS),
            "last_nps": None,
        }
    complaints = facts["complaints"].values()
    surveys = sorted(facts["surveys"].values(), key=lambda s: s["at"])
    csat = [s["scores"]["overall"] for s in surveys if s["kind"] == "csat" and "overall" in s["scores"]]
    general = [s for s in surveys if s["kind"] == "general"]
    answered = [s for s in surveys if s.get("recommend") is not None]
    since = F.horizon(now).d90
    return {
        "complaints_total": len(complaints),
        "complaints_open": sum(1 for c in complaints if c["state"].get("open")),
        "complaints_90d": sum(1 for c in complaints if c.get("opened_at") and c["opened_at"] > since),
        "sla_breaches": sum(1 for c in complaints if c.get("breached")),
        "csat_average": round(sum(csat) / len(csat), 3) if csat else None,
        "satisfaction": {d: general[-1]["scores"].get(d) if general else None for d in SATISFACTION_FIELDS},
        "last_nps": answered[-1]["recommend"] if answered else None,
    }


NOT_ENGAGED = {
    "messages_180d": 0,
    "messages_answered_180d": 0,
    "responsiveness": None,
    "coupons_issued_180d": 0,
    "coupons_used_180d": 0,
    "coupon_use_rate": None,
}


def _responsiveness(facts: F.Facts) -> dict[str, Any]:
    """Over 180 days: messages that reached the customer and the share they opened or
    clicked; coupons issued and the share used."""
    if not facts.get("messages") and not facts.get("coupons"):  # most customers: nothing sent
        return dict(NOT_ENGAGED)
    # A message the provider's receipt reported failed after it was sent never reached them.
    sent = [m for m in facts.get("messages", {}).values() if m.get("sent") and not m.get("failed")]
    answered = sum(1 for m in sent if m.get("opened") or m.get("clicked"))
    coupons = list(facts.get("coupons", {}).values())
    redeemed = sum(1 for c in coupons if c.get("redeemed"))
    return {
        "messages_180d": len(sent),
        "messages_answered_180d": answered,
        "responsiveness": round(answered / len(sent), 3) if sent else None,
        "coupons_issued_180d": len(coupons),
        "coupons_used_180d": redeemed,
        "coupon_use_rate": round(redeemed / len(coupons), 3) if coupons else None,
    }


AFFINITY_TOP = 5  # categories and brands kept per profile, largest share first


def _affinity(facts: F.Facts, now: datetime) -> dict[str, Any]:
    """Each category's and brand's share of the customer's net spend over the last 12 months
    (an order's net spread over its lines by their value), largest first."""
    since = F.horizon(now).year
    categories: dict[str, float] = {}
    brands: dict[str, float] = {}
    for order in facts["orders"].values():
        lines = order.get("lines")
        if not lines:
            continue
        paid_at = order.get("paid_at")
        if paid_at is None or paid_at < since:
            continue
        net = F.order_net(order)
        if len(lines) == 1:  # most orders: the whole net (net * cents / cents is exactly net)
            category, brand, cents = lines[0]
            part = float(net) if cents else 0.0
            categories[category] = categories.get(category, 0.0) + part
            brands[brand] = brands.get(brand, 0.0) + part
            continue
        gross = sum(cents for _, _, cents in lines)
        for category, brand, cents in lines:
            part = net * cents / gross if gross else 0.0
            categories[category] = categories.get(category, 0.0) + part
            brands[brand] = brands.get(brand, 0.0) + part
    return {"categories": _shares(categories), "brands": _shares(brands)}


def _shares(amounts: dict[str, float]) -> list[dict[str, Any]]:
    """The AFFINITY_TOP largest positive amounts, each as its share of all positive ones."""
    if not amounts:
        return []
    if len(amounts) == 1:  # one category or brand: all of it, when anything was spent
        (name, amount), *_ = amounts.items()
        return [{"name": name, "share": 1.0}] if amount > 0 else []
    total = sum(v for v in amounts.values() if v > 0)
    ranked = sorted(((v, k) for k, v in amounts.items() if v > 0), reverse=True)[:AFFINITY_TOP]
    return [{"name": k, "share": S.rounded(v / total, 4)} for v, k in ranked]


def _engagement(facts: F.Facts, now: datetime) -> dict[str, Any]:
    earlier = facts.get("last_seen_before_window")  # interactions pruned out of the window
    if not facts["interactions"]:
        return {"last_seen": earlier or None, "interactions_30d": {}, **_responsiveness(facts)}
    seen = max(i["at"] for i in facts["interactions"].values())
    return {
        "last_seen": max(seen, earlier) if earlier else seen,
        "interactions_30d": F.interactions_since(facts, F.horizon(now).engagement),
        **_responsiveness(facts),
    }


def _birthday_due(born: str | None, consented: bool, erased: bool, now: datetime) -> str | None:
    """This year's birthday date when it is today (UTC) and the customer consented."""
    if not born or not consented or erased:
        return None
    b = date.fromisoformat(born)
    today = now.date()
    day = 28 if (b.month, b.day) == (2, 29) and today.year % 4 else b.day
    return today.isoformat() if (today.month, today.day) == (b.month, day) else None


def build(
    facts: F.Facts,
    now: datetime,
    population: S.Population,
    previous: dict[str, Any] | None,
    scored: S.Scored | None = None,
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """(profile sections, signals) for `now`. `previous` is the stored profile, for changes;
    `scored` what the models say of the customer when the caller computed a whole batch
    (`scores.scored`)."""
    previous = previous or {}
    if scored is None:
        summary = S.summarize(facts, now)
        scored = S.scored([summary], [S.value(summary, now, population)], population)[0]
    p, v, kept_when_bought = scored
    identity = F.values(facts, "identity", IDENTITY_READ)
    consented = bool(identity.pop("marketing_consent"))
    registered = identity["registered_at"]
    if isinstance(registered, str):
        identity["registered_at"] = parse_rfc3339(registered)
    profile: dict[str, Any] = {
        "customer_id": facts["customer_id"],
        "identity": identity,
        "consent": {"marketing": consented},
        "erased": facts["erased"],
        "purchases": {
            "count": p.count,
            "first_at": p.first,
            "last_at": p.last,
            "net_spend_cents": p.net_cents,
            "average_order_cents": round(p.net_cents / p.count) if p.count else None,
            "mean_gap_days": S.rounded(p.mean_gap_days, 2) if p.mean_gap_days else None,
            "first_gap_days": S.rounded(first_gap, 2) if (first_gap := p.first_gap_days) else None,
            "purchase_days": len(p.days),
            "first_day": p.days[0] if p.days else None,
            "last_day": p.days[-1] if p.days else None,
        },
    }
    if p.count:
        recency = S.rounded(p.recency_days, 3)
        r = S.quintile(recency, population.recency_bounds, higher_is_better=False)
        f = S.quintile(p.count, population.frequency_bounds)
        m = S.quintile(p.net_cents, population.monetary_bounds)
        segment, rule = S.segment_rule(r, f)
        profile["rfm"] = {
            "recency_days": recency,
            "frequency": p.count,
            "monetary_cents": p.net_cents,
            "r": r,
            "f": f,
            "m": m,
            "code": f"{r}{f}{m}",
            "segment": segment,
            "segment_rule": rule,
        }
    else:
        profile["rfm"] = {
            "recency_days": None,
            "frequency": 0,
            "monetary_cents": 0,
            "r": None,
            "f": None,
            "m": None,
            "code": "",
            "segment": Segment.PROSPECT,
            "segment_rule": "no purchase yet",
        }
    abc = S.abc_class(p.trailing_cents, population)
    profile["value"] = {
        "abc_class": abc,
        "trailing_spend_cents": p.trailing_cents,
        "p_alive": S.rounded(v.p_alive, 4) if v else None,
        "expected_purchases_90d": S.rounded(v.expected_90d, 4) if v else None,
        "clv_12m_cents": v.clv_12m_cents if v else 0,
    }
    stage = S.lifecycle(p, v, now, population)
    before = previous.get("lifecycle") or {}
    profile["lifecycle"] = {
        "stage": stage,
        "since": before.get("since") if before.get("stage") == stage else now,
    }
    churn = S.churn(facts, p, v, now, population)
    keep = S.worth_keeping(abc, v.clv_12m_cents if v else 0, population)
    clv_cents = max(0, v.clv_12m_cents if v else 0)
    value_at_risk = round(clv_cents * churn.risk) if churn else 0
    step = W.step(
        W.episode_from((previous.get("churn") or {}).get("warning")),
        churn.level if churn else None,
        churn.reasons if churn else [],
        p.last,
        keep,
        facts["erased"],
        value_at_risk,
        now,
        lambda: kept_when_bought,
    )
    episode, fired = step.episode, step.fired
    profile["churn"] = {
        "risk": churn.risk if churn else None,
        "level": churn.level if churn else None,
        "reasons": churn.reasons if churn else [],
        "recommended_action": churn.action if churn else None,
        "value_at_risk_cents": value_at_risk,
        "warning": episode._asdict(),
    }
    profile["service"] = _service(facts, now)
    profile["engagement"] = _engagement(facts, now)
    profile["affinity"] = _affinity(facts, now)
    profile["loyalty"] = {
        "tier": F.value(facts, "loyalty", "tier") or LoyaltyTier.MEMBER,
        "points": F.value(facts, "loyalty", "balance") or 0,
    }

    signals: list[tuple[str, dict[str, Any]]] = []
    old_segment = (previous.get("rfm") or {}).get("segment")
    if old_segment and old_segment != profile["rfm"]["segment"]:
        signals.append(
            (
                "crm.profile.segment_changed",
                {
                    "from_segment": old_segment,
                    "to_segment": profile["rfm"]["segment"],
                    "rfm_code": profile["rfm"]["code"],
                    "changed_at": now,
                },
            )
        )
    if before.get("stage") and before["stage"] != stage:
        signals.append(
            (
                "crm.profile.lifecycle_changed",
                {"from_stage": before["stage"], "to_stage": stage, "changed_at": now},
            )
        )
    episode_id = f"cw-{facts['customer_id']}-{episode.episode}" if fired else ""
    if fired == W.WARNING:
        signals.append(
            (
                fired,
                {
                    "episode_id": episode_id,
                    "risk": churn.risk,
                    "level": churn.level,
                    "reasons": [{k: x for k, x in r.items() if x is not None} for r in churn.reasons],
                    "recommended_action": churn.action,
                    "abc_class": abc,
                    "clv_cents": clv_cents,
                    "value_at_risk_cents": value_at_risk,
                    "warned_at": now,
                },
            )
        )
    elif fired == W.RECOVERED:
        signals.append(
            (
                fired,
                {
                    "episode_id": episode_id,
                    "risk": churn.risk if churn else 0.0,
                    "recovered_at": now,
                    "ended_by": step.ended_by,
                },
            )
        )
    born = identity["birth_date"]
    birthday = _birthday_due(born, consented, facts["erased"], now) if born else None
    if birthday and (previous.get("care") or {}).get("birthday") != birthday:
        signals.append(("crm.profile.care_due", {"kind": "birthday", "date": birthday}))
    profile["care"] = {"birthday": birthday or (previous.get("care") or {}).get("birthday")}
    # Never-null sort keys for the profiles search (keyset pagination cannot page over nulls).
    profile["rank"] = {
        "clv": profile["value"]["clv_12m_cents"],
        "risk": churn.risk if churn else -1.0,
        "spend": p.net_cents,
        "last_purchase": p.last.timestamp() if p.last else 0.0,
    }
    return profile, signals


# Time alone changes recency, lifecycle, churn and birthdays: every profile is re-scored daily.
# Cheap to over-review, as scores are pure functions of facts and now.
REVIEW_EVERY = timedelta(days=1)
