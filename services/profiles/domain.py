"""Profiles rules: customer registration and its changes, the churn-warning workflow, and the
arithmetic of the segment summary and the seasonal index. Pure. The 360 view's read model (the
other services' events folded into one document per customer) has its rules beside this file,
in activity.py."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from services.common.errors import Kind, RuleBroken
from services.common.vocabulary import AGE_BANDS, ChurnAction

Facts = list[tuple[str, dict[str, Any]]]  # (event type, data) to publish

# What erasure removes everywhere (docs/architecture.md, "Topics and events":
# crm.customer.registered).
PERSONAL = ("name", "email", "phone", "gender", "birth_date", "city")
# What PATCH /customers/{id} may change: the personal attributes, the city tier, and the
# language and time zone messages to the customer keep to.
CHANGEABLE = (*PERSONAL, "city_tier", "locale", "time_zone")


class ProfilesError(RuleBroken):
    """A customer or warning-workflow rule was broken."""


def no_customer(customer_id: str) -> ProfilesError:
    return ProfilesError(f"no customer {customer_id}", Kind.NOT_FOUND)


def no_warning(warning_id: str) -> ProfilesError:
    return ProfilesError(f"no churn warning {warning_id}", Kind.NOT_FOUND)


@dataclass(frozen=True)
class Customer:
    customer_id: str
    registered_at: datetime
    channel: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    gender: str | None = None
    birth_date: str | None = None  # ISO date
    city: str | None = None
    city_tier: int | None = None
    locale: str | None = None
    time_zone: str | None = None
    referred_by: str | None = None
    marketing_consent: bool = False  # for some channel (each one in `consent_channels`)
    consent_changed_at: datetime | None = None
    erased_at: datetime | None = None
    version: int = 0
    # Marketing consent per channel; absent: the registration's `marketing_consent` for all.
    consent_channels: dict[str, bool] | None = None
    # Every change: when, the channels after it, how (source) and by whom.
    consent_history: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Change:
    customer: Customer
    facts: Facts


def register(attributes: dict[str, Any], at: datetime) -> Change:
    if attributes.get("referred_by") == attributes["customer_id"]:
        raise ProfilesError("a customer cannot refer themselves", field="referred_by")
    customer = Customer(registered_at=at, **attributes)
    data = {
        "customer_id": customer.customer_id,
        **{name: getattr(customer, name) for name in (*CHANGEABLE, "channel", "referred_by")},
        "marketing_consent": customer.marketing_consent,
        "registered_at": at,
    }
    return Change(customer, [("crm.customer.registered", data)])


def _live(customer: Customer) -> None:
    if customer.erased_at is not None:
        raise ProfilesError(
            f"customer {customer.customer_id} was erased; nothing about them may change", Kind.CONFLICT
        )


def update(customer: Customer, changes: dict[str, Any]) -> Change:
    """Only what really changes is applied and published; an empty difference publishes nothing."""
    _live(customer)
    unknown = set(changes) - set(CHANGEABLE)
    if unknown:
        raise ProfilesError(f"cannot change {', '.join(sorted(unknown))}")
    changed = {k: v for k, v in changes.items() if getattr(customer, k) != v}
    if not changed:
        return Change(customer, [])
    return Change(
        replace(customer, **changed),
        [("crm.customer.updated", {"customer_id": customer.customer_id, "changes": changed})],
    )


CONSENT_CHANNELS = ("email", "sms", "push")


def channel_consent(customer: Customer) -> dict[str, bool]:
    if customer.consent_channels is not None:
        return dict(customer.consent_channels)
    return dict.fromkeys(CONSENT_CHANNELS, customer.marketing_consent)


def set_consent(
    customer: Customer,
    consent: bool | None,
    channels: dict[str, bool] | None,
    source: str | None,
    by: str,
    at: datetime,
) -> Change:
    """`consent` gives or withdraws every channel (the old single switch); `channels` sets
    the ones it names. Only a real change is recorded and published."""
    _live(customer)
    before = channel_consent(customer)
    after = dict.fromkeys(CONSENT_CHANNELS, consent) if consent is not None else dict(before)
    after.update(channels or {})
    if after == before:
        return Change(customer, [])
    overall = any(after.values())
    data: dict[str, Any] = {
        "customer_id": customer.customer_id,
        "marketing_consent": overall,
        "channels": after,
    }
    if source:
        data["source"] = source
    entry = {"at": at, "channels": after, "source": source, "by": by}
    return Change(
        replace(
            customer,
            marketing_consent=overall,
            consent_channels=after,
            consent_changed_at=at,
            consent_history=(*customer.consent_history, entry),
        ),
        [("crm.customer.consent_changed", data)],
    )


def erase(customer: Customer, at: datetime) -> Customer:
    """The registration keeps its id, channel and dates (not personal), nothing else."""
    return replace(
        customer,
        **dict.fromkeys(PERSONAL),
        referred_by=None,
        marketing_consent=False,
        consent_channels=None,
        consent_history=(),
        erased_at=customer.erased_at or at,
    )


# --- the churn-warning workflow -------------------------------------------------------------


class WarningStatus(StrEnum):
    OPEN = "open"  # fired by the scorer, nobody on it yet
    ASSIGNED = "assigned"
    ACTIONED = "actioned"  # at least one retention action taken
    CLOSED = "closed"  # outcome known: retained, lost, or recovered on its own


ACTIONS = tuple(ChurnAction)  # also what the scorer recommends
# Actions engagement carries out (a real coupon, a real message), besides recording them here.
SENT_BY_ENGAGEMENT = (ChurnAction.COUPON, ChurnAction.EMAIL)
OUTCOMES = ("retained", "lost")
RECOVERED = "recovered"  # the scorer closed the episode before anyone recorded an outcome


@dataclass(frozen=True)
class ChurnWarning:
    episode_id: str
    customer_id: str
    risk: float
    level: str
    reasons: tuple[dict[str, Any], ...]
    recommended_action: str | None
    abc_class: str | None
    clv_cents: int
    warned_at: datetime
    status: WarningStatus = WarningStatus.OPEN
    assignee: str | None = None
    actions: tuple[dict[str, Any], ...] = ()
    outcome: str | None = None
    closed_at: datetime | None = None
    recovered_at: datetime | None = None
    history: tuple[dict[str, Any], ...] = field(default=())
    version: int = 0
    # What the shop stood to lose when the warning opened: the next year's value times the
    # chance of losing it (the worklist's order).
    value_at_risk_cents: int = 0
    ended_by: str | None = None  # how the scorer saw the episode end: purchase, reasons_cleared, erased

    @property
    def is_open(self) -> bool:
        return self.status is not WarningStatus.CLOSED


def ever_warned(profile: dict[str, Any] | None) -> bool:
    """Whether the customer may have churn warnings: the scorer counts the warning episodes it
    fired in the profile, and a worklist entry only ever comes from one of those."""
    warning = ((profile or {}).get("churn") or {}).get("warning") or {}
    return warning.get("episode", 0) > 0


def warning_from_signal(data: dict[str, Any], customer_id: str) -> ChurnWarning:
    return ChurnWarning(
        episode_id=data["episode_id"],
        customer_id=customer_id,
        risk=data["risk"],
        level=data["level"],
        reasons=tuple(data.get("reasons", ())),
        recommended_action=data.get("recommended_action"),
        abc_class=data.get("abc_class"),
        clv_cents=data.get("clv_cents", 0),
        warned_at=data["warned_at"],
        value_at_risk_cents=data.get("value_at_risk_cents", round(data.get("clv_cents", 0) * data["risk"])),
    )


def _open_only(w: ChurnWarning) -> None:
    if not w.is_open:
        raise ProfilesError(
            f"warning {w.episode_id} is closed ({w.outcome}); open a new one by the next episode",
            Kind.CONFLICT,
        )


def _logged(w: ChurnWarning, at: datetime, by: str, what: str, **details: Any) -> tuple[dict[str, Any], ...]:
    return (*w.history, {"at": at, "by": by, "what": what, **details})


def assign(w: ChurnWarning, assignee: str, by: str, at: datetime) -> ChurnWarning:
    _open_only(w)
    status = WarningStatus.ACTIONED if w.status is WarningStatus.ACTIONED else WarningStatus.ASSIGNED
    return replace(
        w, assignee=assignee, status=status, history=_logged(w, at, by, "assigned", assignee=assignee)
    )


def act(
    w: ChurnWarning, action: str, note: str | None, by: str, at: datetime, interaction_id: str, channel: str
) -> tuple[ChurnWarning, Facts]:
    """Record a retention action; it is also published as an interaction so the scorer sees it."""
    _open_only(w)
    if action not in ACTIONS:
        raise ProfilesError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}", field="action")
    taken = {"action": action, "at": at, "by": by, "interaction_id": interaction_id}
    if note:
        taken["note"] = note
    acted = replace(
        w,
        status=WarningStatus.ACTIONED,
        assignee=w.assignee or by,
        actions=(*w.actions, taken),
        history=_logged(w, at, by, "action", action=action),
    )
    interaction = {
        "interaction_id": interaction_id,
        "customer_id": w.customer_id,
        "kind": "churn_action",
        "channel": channel,
        "occurred_at": at,
        "attributes": {"action": action, "episode_id": w.episode_id, "by": by},
    }
    return acted, [("crm.interaction.recorded", interaction)]


def close(w: ChurnWarning, outcome: str, by: str, at: datetime) -> ChurnWarning:
    _open_only(w)
    if outcome not in OUTCOMES:
        raise ProfilesError(f"unknown outcome {outcome!r}; one of {', '.join(OUTCOMES)}", field="outcome")
    return replace(
        w,
        status=WarningStatus.CLOSED,
        outcome=outcome,
        closed_at=at,
        history=_logged(w, at, by, "closed", outcome=outcome),
    )


def recovered(w: ChurnWarning, at: datetime, ended_by: str | None = None) -> ChurnWarning:
    """The scorer saw the episode end (the customer bought again, what had changed no longer
    holds, or the customer was erased). An outcome agents already recorded stands; otherwise
    the warning closes as recovered."""
    if w.recovered_at is not None:
        return w
    if not w.is_open:
        return replace(w, recovered_at=at, ended_by=ended_by)
    return replace(
        w,
        status=WarningStatus.CLOSED,
        outcome=RECOVERED,
        closed_at=at,
        recovered_at=at,
        ended_by=ended_by,
        history=_logged(w, at, "scorer", "recovered", **({"ended_by": ended_by} if ended_by else {})),
    )


def scrub_notes(w: ChurnWarning, text: str) -> ChurnWarning:
    """Erasure: notes agents wrote about the person go."""
    return replace(w, actions=tuple({**a, "note": text} if a.get("note") else a for a in w.actions))


# --- summaries ---------------------------------------------------------------------------------


def group_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """rows: {key, customers, revenue_cents, clv_cents} per group -> counts, shares, averages."""
    customers = sum(r["customers"] for r in rows)
    revenue = sum(r["revenue_cents"] for r in rows)
    out = {}
    for r in sorted(rows, key=lambda r: (-r["customers"], str(r["key"]))):
        out[str(r["key"])] = {
            "customers": r["customers"],
            "customer_share": round(r["customers"] / customers, 4) if customers else 0.0,
            "revenue_cents": r["revenue_cents"],
            "revenue_share": round(r["revenue_cents"] / revenue, 4) if revenue else 0.0,
            "average_clv_cents": round(r["clv_cents"] / r["customers"]) if r["customers"] else 0,
        }
    return out


def moves_summary(moves: list[tuple[str, str]]) -> dict[str, Any]:
    """(from, to) segment moves -> total and counts by pair, largest first."""
    pairs: dict[tuple[str, str], int] = defaultdict(int)
    for pair in moves:
        pairs[pair] += 1
    return {
        "total": len(moves),
        "by_move": [
            {"from": a, "to": b, "customers": n}
            for (a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }


@dataclass(frozen=True)
class WarningFilters:
    """Which churn warnings a list asks for; None leaves a criterion out."""

    status: WarningStatus | None = None
    assignee: str | None = None
    customer_id: str | None = None


# --- searching live profiles ------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileFilters:
    """What a profile search asks for; None leaves a criterion out."""

    segment: str | None = None
    lifecycle_stage: str | None = None
    abc_class: str | None = None
    tier: str | None = None
    churn_level: str | None = None
    min_risk: float | None = None
    city: str | None = None
    registered_from: datetime | None = None
    registered_to: datetime | None = None
    gender: str | None = None
    age_band: str | None = None
    city_tier: int | None = None
    channel: str | None = None
    marketing_consent: bool | None = None
    category: str | None = None  # bought in the last 12 months, at least min_affinity of the spend
    brand: str | None = None
    min_affinity: float | None = None
    born: tuple[str, str] | None = None  # (after, up to): the age band on the search's day


def on_day(filters: ProfileFilters, today: date) -> ProfileFilters:
    """The filters with the age band turned into birth dates as of `today`."""
    if filters.age_band is None:
        return filters
    return replace(filters, born=born_within(filters.age_band, today))


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a year without one
        return day.replace(year=day.year - years, day=28)


def born_within(band: str, today: date) -> tuple[str, str]:
    """The birth dates (ISO text, after, up to and including) of customers whose age today is
    in the band."""
    low, high = next((lo, hi) for lo, hi, label in AGE_BANDS if label == band)
    return _years_before(today, high).isoformat(), _years_before(today, low).isoformat()


def export_record(
    export_id: str,
    by: str,
    role: str,
    at: datetime,
    filters: ProfileFilters,
    sort: str,
    order: str | None,
) -> dict[str, Any]:
    """What is kept about one bulk export of profiles: who asked, when, for which customers."""
    return {
        "export_id": export_id,
        "by": by,
        "role": role,
        "at": at,
        "format": "csv",
        "filters": {name: value for name, value in asdict(filters).items() if value is not None},
        "sort": sort,
        "order": order,
    }


# Search orders, and the direction each quantity reads best in by default: most valuable,
# riskiest, biggest spender first; recency (days since the last purchase) smallest first.
SEARCH_ORDERS = {"clv": "desc", "risk": "desc", "spend": "desc", "recency": "asc"}


def ascending(sort: str, order: str | None) -> bool:
    """Whether a search sorted by `sort` runs ascending: as asked, else the quantity's default."""
    return (order or SEARCH_ORDERS[sort]) == "asc"


def main_currency(orders_by_currency: dict[str, int]) -> str | None:
    """The shop's main currency: the one most orders were paid in (None with no sales)."""
    if not orders_by_currency:
        return None
    return max(orders_by_currency, key=lambda currency: orders_by_currency[currency])


def seasonal_index(monthly: dict[tuple[int, int], int]) -> dict[str, Any]:
    """The monthly seasonal index of sales from net sales by (year, month).

    For each year: each month's sales over that year's average month. Overall: the average
    of each calendar month across the years it appears in, over the average of all months.
    1.0 is an ordinary month; 1.3 sells 30 % above the average."""
    by_year: dict[int, dict[int, int]] = defaultdict(dict)
    for (year, month), cents in monthly.items():
        by_year[year][month] = cents
    per_year = {}
    for year, months in sorted(by_year.items()):
        mean = sum(months.values()) / len(months)
        per_year[str(year)] = {
            "months": len(months),
            "sales_cents": sum(months.values()),
            "index": {f"{m:02d}": round(c / mean, 4) if mean else None for m, c in sorted(months.items())},
        }
    overall_mean = sum(monthly.values()) / len(monthly) if monthly else 0
    by_month: dict[int, list[int]] = defaultdict(list)
    for (_, month), cents in monthly.items():
        by_month[month].append(cents)
    index = {
        f"{m:02d}": round((sum(v) / len(v)) / overall_mean, 4) if overall_mean else None
        for m, v in sorted(by_month.items())
    }
    return {"index": index, "by_year": per_year, "months": len(monthly)}
