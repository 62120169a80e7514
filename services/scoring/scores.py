"""Every score of the live profile (docs/architecture.md, "Scores"), from a customer's
facts, the population's parameters and "now". Pure."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from services.common.vocabulary import ChurnAction, ChurnLevel, LifecycleStage, Segment

from . import facts as F
from .model import BgNbd, GammaGamma, clv

WEEK = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Population:
    """What the population job refreshes off the hot path."""

    recency_bounds: tuple[float, ...] = (30.0, 60.0, 120.0, 240.0)  # days; ascending quintile cuts
    frequency_bounds: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0)
    monetary_bounds: tuple[float, ...] = (5_000.0, 10_000.0, 20_000.0, 50_000.0)
    abc_a_min_cents: int = 1 << 62  # trailing-365-day net spend that makes A (top 75 % of revenue)
    abc_b_min_cents: int = 1 << 62
    median_gap_days: float = 60.0
    median_clv_cents: float = 0.0
    bgnbd: BgNbd = field(default_factory=lambda: BgNbd(0.243, 4.414, 0.793, 2.426))
    # Spend is modelled in minor units; Gamma-Gamma is scale-equivariant, so CDNOW's published
    # dollar fit (v 15.45) is v 1545 in cents until the population has its own.
    gamma_gamma: GammaGamma = field(default_factory=lambda: GammaGamma(6.25, 3.74, 1545.0))
    fitted_at: datetime | None = None
    customers: int = 0


def quintile(value: float, bounds: tuple[float, ...], higher_is_better: bool = True) -> int:
    """1 to 5 against four ascending cut points (a value on a cut counts as the better side
    when lower is better: 10 days with a cut at 10 is a 5)."""
    return bisect_right(bounds, value) + 1 if higher_is_better else 5 - bisect_left(bounds, value)


# The RFM map of docs/architecture.md ("Scores"), first match wins: (R from, R to, F from, F to, segment).
SEGMENT_RULES = (
    (1, 2, 1, 2, Segment.HIBERNATING),
    (1, 2, 3, 4, Segment.AT_RISK),
    (1, 2, 5, 5, Segment.CANT_LOSE_THEM),
    (3, 3, 1, 2, Segment.ABOUT_TO_SLEEP),
    (3, 3, 3, 3, Segment.NEED_ATTENTION),
    (3, 4, 4, 5, Segment.LOYAL),
    (4, 4, 1, 1, Segment.PROMISING),
    (5, 5, 1, 1, Segment.NEW),
    (4, 5, 2, 3, Segment.POTENTIAL_LOYALIST),
    (5, 5, 4, 5, Segment.CHAMPIONS),
)


def _span(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


@lru_cache(maxsize=64)
def segment_rule(r: int | None, f: int | None) -> tuple[Segment, str]:
    """(segment, the rule that placed the customer there, e.g. "R 1-2 & F 3-4")."""
    if r is None or f is None:
        return Segment.PROSPECT, "no purchase yet"
    for r_low, r_high, f_low, f_high, name in SEGMENT_RULES:
        if r_low <= r <= r_high and f_low <= f <= f_high:
            return name, f"R {_span(r_low, r_high)} & F {_span(f_low, f_high)}"
    raise ValueError(f"R {r} F {f} outside 1 to 5")


def segment(r: int | None, f: int | None) -> Segment:
    return segment_rule(r, f)[0]


def abc_class(trailing_cents: int, population: Population) -> str:
    if trailing_cents > 0 and trailing_cents >= population.abc_a_min_cents:
        return "A"
    if trailing_cents > 0 and trailing_cents >= population.abc_b_min_cents:
        return "B"
    return "C"


# The per-customer results are named tuples: built for every customer of every batch, where a
# frozen dataclass's construction (object.__setattr__ per field) is a measurable share.
class Purchases(NamedTuple):
    count: int
    first: datetime | None
    last: datetime | None
    net_cents: int
    trailing_cents: int
    days: tuple[datetime, ...]  # distinct purchase days (first purchase time of each day)
    mean_gap_days: float | None
    recency_days: float | None = None  # now since the last purchase
    tenure_days: float | None = None  # now since the first purchase

    @property
    def average_order_cents(self) -> float | None:
        return self.net_cents / self.count if self.count else None


NOTHING_BOUGHT = Purchases(0, None, None, 0, 0, (), None)


def summarize(facts: F.Facts, now: datetime) -> Purchases:
    paid = F.purchases(facts, until=now)
    if not paid:
        return NOTHING_BOUGHT
    year_ago = F.horizon(now).year
    if len(paid) == 1:  # most customers of a batch
        at, cents = paid[0]
        since = (now - at).total_seconds() / 86400
        return Purchases(1, at, at, cents, cents if at > year_ago else 0, (at,), None, since, since)
    days: list[datetime] = []  # paid is in time order, so each day's first purchase comes first
    day = None
    net = trailing = 0
    for at, cents in paid:
        if (this_day := at.date()) != day:
            day = this_day
            days.append(at)
        net += cents
        if at > year_ago:
            trailing += cents
    span_days = (days[-1] - days[0]).total_seconds() / 86400  # the sum of the gaps between days
    return Purchases(
        len(paid),
        paid[0][0],
        paid[-1][0],
        net,
        trailing,
        tuple(days),
        span_days / (len(days) - 1) if len(days) > 1 else None,
        (now - paid[-1][0]).total_seconds() / 86400,
        (now - paid[0][0]).total_seconds() / 86400,
    )


class Value(NamedTuple):
    p_alive: float
    expected_90d: float
    p_no_purchase_90d: float
    clv_12m_cents: int


def value(p: Purchases, now: datetime, population: Population) -> Value | None:
    return values([p], now, population)[0]


def values(batch: list[Purchases], now: datetime, population: Population) -> list[Value | None]:
    """The model's view of many customers at once: one array evaluation per quantity instead
    of a dozen scalar scipy calls per customer."""
    buyers = [p for p in batch if p.days]
    if not buyers:
        return [None] * len(batch)
    # The model's inputs in weeks, one purchase per customer-day: x repeat purchase days, t_x
    # the last purchase day since the first, T now since the first.
    first = np.array([p.days[0].timestamp() for p in buyers])
    x = np.array([len(p.days) - 1 for p in buyers], float)
    t_x = (np.array([p.days[-1].timestamp() for p in buyers]) - first) / WEEK
    T = (now.timestamp() - first) / WEEK
    spend = np.array([max(p.net_cents, 0) / p.count for p in buyers], float)
    bg, gg = population.bgnbd, population.gamma_gamma
    expected = bg.expected_purchases(90 / 7, x, t_x, T).tolist()
    alive = bg.p_alive(x, t_x, T).tolist()
    worth = np.nan_to_num(clv(bg, gg, x, t_x, T, spend)).astype(np.int64).tolist()
    # P(no purchase in 90 days) as a Poisson count with the model's expected number. Measured on
    # CDNOW it ranks future non-buyers better (AUC 0.763) than the exact BG/NBD mixture
    # probability (0.758), under which every one-time buyer sits near the top.
    modelled = iter(map(Value, alive, expected, [math.exp(-e) for e in expected], worth))
    return [next(modelled) if p.days else None for p in batch]


OVERDUE_FACTOR = 2.0


def overdue(p: Purchases, now: datetime, population: Population) -> tuple[bool, float, float]:
    """(overdue, days since last purchase, the cadence it is measured against): the customer's
    own mean gap, or the population's median gap for one-time buyers."""
    cadence = p.mean_gap_days if p.mean_gap_days else population.median_gap_days
    silent = p.recency_days
    return silent > OVERDUE_FACTOR * cadence, silent, cadence


def lifecycle(p: Purchases, v: Value | None, now: datetime, population: Population) -> LifecycleStage:
    if p.count == 0 or v is None:
        return LifecycleStage.PROSPECT
    late, silent, _ = overdue(p, now, population)
    if v.p_alive < 0.1 or silent > 365:
        return LifecycleStage.LOST
    if late or v.p_alive < 0.5:
        return LifecycleStage.DECLINE
    if p.count == 1:
        return LifecycleStage.EXPLORATION
    span = (p.last - p.first).total_seconds() / 86400
    return LifecycleStage.STABLE if p.count >= 4 and span >= 180 else LifecycleStage.GROWTH


# --- churn risk --------------------------------------------------------------------------------

HIGH, MEDIUM, RECOVERED = 0.7, 0.4, 0.5
# Log-odds added to the model's probability by each service signal.
WEIGHTS = {
    "open_complaint": 0.6,
    "sla_breached": 0.5,
    "low_csat": 0.5,
    "detractor": 0.4,
    "high_returns": 0.3,
    "falling_frequency": 0.1,
    "late_delivery": 0.2,
}
# Silence: the share of the customer's tenure since the last purchase, in log-odds per unit.
# On CDNOW it lifts the ranking of future non-buyers from 0.763 to 0.765; falling frequency,
# by contrast, marks former regulars who still buy more than one-time buyers, so it weighs
# little and serves mostly as an explanation.
SILENCE_WEIGHT = 2.0
SILENCE_REASON = 0.5  # listed as a reason from half the tenure on


class Churn(NamedTuple):
    risk: float
    level: ChurnLevel
    reasons: list[dict[str, Any]]
    action: ChurnAction


def _reason(code: str, value: Any, threshold: float | None, detail: str) -> dict[str, Any]:
    return {"code": code, "value": value, "threshold": threshold, "detail": detail}


def churn(facts: F.Facts, p: Purchases, v: Value | None, now: datetime) -> Churn | None:
    """The model's P(no purchase in 90 days), moved by service signals in log-odds; each signal
    that moved it is a reason, with the numbers behind it."""
    if v is None:
        return None
    h = F.horizon(now)
    base = v.p_no_purchase_90d
    base = 1e-6 if base < 1e-6 else 1 - 1e-6 if base > 1 - 1e-6 else base
    reasons: list[dict[str, Any]] = [{"code": "model_no_purchase_90d", "value": round(base, 4)}]
    weight = 0.0
    service_issue = unhappy = falling = False
    complaints = facts["complaints"].values()
    if complaints:
        still_open = sum(1 for c in complaints if c["state"].get("open"))
        if still_open:
            reasons.append(_reason("open_complaint", still_open, None, "unresolved complaints"))
            weight += WEIGHTS["open_complaint"]
            service_issue = True
        if any(c.get("breached") for c in complaints if c.get("opened_at", now) > h.d90):
            reasons.append(
                _reason("sla_breached", True, None, "a complaint breached its SLA in the last 90 days")
            )
            weight += WEIGHTS["sla_breached"]
            service_issue = True
    surveys = facts["surveys"].values()
    if surveys:
        csat = [s["scores"]["overall"] for s in surveys if s["kind"] == "csat" and "overall" in s["scores"]]
        if csat and sum(csat) / len(csat) <= 2.5:
            reasons.append(_reason("low_csat", round(sum(csat) / len(csat), 2), 2.5, "average CSAT"))
            weight += WEIGHTS["low_csat"]
            unhappy = True
        answered = sorted((s for s in surveys if s.get("recommend") is not None), key=lambda s: s["at"])
        if answered and answered[-1]["recommend"] <= 6:
            reasons.append(
                _reason("detractor", answered[-1]["recommend"], 6, "last would-you-recommend answer")
            )
            weight += WEIGHTS["detractor"]
            unhappy = True
    returned = late = 0
    for o in facts["orders"].values():
        if o["returns"]:
            returned += sum(o["returns"].values())
        if o.get("late") and o.get("paid_at", now) > h.d90:
            late += 1
    if returned:
        paid = sum(o.get("amount_cents", 0) for o in facts["orders"].values() if o.get("paid_at"))
        if paid and returned / paid >= 0.3:
            reasons.append(_reason("high_returns", round(returned / paid, 3), 0.3, "share of spend returned"))
            weight += WEIGHTS["high_returns"]
    if len(p.days) >= 2:
        recent = sum(1 for d in p.days if d > h.d180)
        before = sum(1 for d in p.days if h.d360 < d <= h.d180)
        if before >= 2 and recent < before / 2:
            reasons.append(
                _reason(
                    "falling_frequency", recent, before / 2, "purchase days in the last 180 vs the 180 before"
                )
            )
            weight += WEIGHTS["falling_frequency"]
            falling = True
    if late:
        reasons.append(_reason("late_delivery", late, None, "late deliveries in the last 90 days"))
        weight += WEIGHTS["late_delivery"]
    silence = p.recency_days / p.tenure_days if p.tenure_days else 0.0
    if silence >= SILENCE_REASON:
        reasons.append(
            _reason(
                "silence", round(silence, 3), SILENCE_REASON, "share of the tenure since the last purchase"
            )
        )
    risk = 1 / (1 + math.exp(-(math.log(base / (1 - base)) + weight + SILENCE_WEIGHT * silence)))
    level = ChurnLevel.HIGH if risk >= HIGH else ChurnLevel.MEDIUM if risk >= MEDIUM else ChurnLevel.LOW
    # Unhappy with the service (complaints or surveys) -> recover the service; a valued regular
    # buying less -> a call; otherwise an offer to come back.
    if service_issue or unhappy:
        action = ChurnAction.SERVICE_RECOVERY
    elif v.clv_12m_cents > 0 and falling:
        action = ChurnAction.CALL
    else:
        action = ChurnAction.COUPON
    return Churn(round(risk, 4), level, reasons, action)


def worth_keeping(abc: str, clv_cents: int, population: Population) -> bool:
    return abc in ("A", "B") or clv_cents > population.median_clv_cents


class Episode(NamedTuple):
    """The churn-warning state: an open episode has fired its one warning."""

    open: bool = False
    episode: int = 0


NO_EPISODE = Episode()


def warning_step(state: Episode, c: Churn | None, keep: bool) -> tuple[Episode, str | None]:
    """Fire once per episode when risk crosses the high threshold for a customer worth keeping;
    close the episode (recovered) when risk falls below RECOVERED. Hysteresis between the two
    keeps a customer hovering at the threshold from flapping."""
    if c is None:
        return state, None
    if not state.open and c.level == ChurnLevel.HIGH and keep:
        return Episode(True, state.episode + 1), "crm.profile.churn_warning"
    if state.open and c.risk < RECOVERED:
        return Episode(False, state.episode), "crm.profile.churn_recovered"
    return state, None
