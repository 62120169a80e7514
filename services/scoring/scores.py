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

from services.common.vocabulary import SEGMENT_RULES, ChurnAction, ChurnLevel, LifecycleStage, Segment

from . import facts as F
from . import reasons as R
from . import warnings as W
from .model import BgNbd, GammaGamma, clv

WEEK = 7 * 24 * 3600.0
_POWERS = (1.0, 10.0, 100.0, 1_000.0, 10_000.0)


def rounded(x: float, digits: int) -> float:
    """round(x, digits), the same double in about half the time: the fold rounds a dozen
    numbers per customer, and round() with digits goes through a decimal string each time.
    The scaled value's nearest integer is round's digits unless the scaled value lies so near a
    half that the multiplication's own error could decide (then, and for zero, ints, NaN,
    infinities and large values, round itself); that integer over a power of ten, divided
    correctly rounded, is the double round parses its digits into."""
    if type(x) is float:
        y = x * _POWERS[digits]
        if -16_777_216.0 < y < 16_777_216.0:  # 2**24; False for NaN and infinities
            k = round(y)
            if k and 0.5 - abs(y - k) > 1e-8:  # the product's error is below 2**24 * 2**-53
                return k / _POWERS[digits]
    return round(x, digits)


@dataclass(frozen=True)
class Population:
    """What the population job refreshes off the hot path."""

    recency_bounds: tuple[float, ...] = (30.0, 60.0, 120.0, 240.0)  # days; ascending quintile cuts
    frequency_bounds: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0)
    monetary_bounds: tuple[float, ...] = (5_000.0, 10_000.0, 20_000.0, 50_000.0)
    abc_a_min_cents: int = 1 << 62  # trailing-365-day net spend that makes A (top 75 % of revenue)
    abc_b_min_cents: int = 1 << 62
    median_gap_days: float = 60.0
    # How soon this shop's repeat buyers come back: the 75th percentile of their first gaps.
    repeat_gap_days: float = 90.0
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
    # The trailing 365 days' net spend as of the last purchase (what made them A, B or C then).
    trailing_at_last_cents: int = 0

    @property
    def average_order_cents(self) -> float | None:
        return self.net_cents / self.count if self.count else None

    @property
    def first_gap_days(self) -> float | None:
        """Days from the first purchase day to the second."""
        return (self.days[1] - self.days[0]).total_seconds() / 86400 if len(self.days) > 1 else None


NOTHING_BOUGHT = Purchases(0, None, None, 0, 0, (), None)


def summarize(facts: F.Facts, now: datetime) -> Purchases:
    paid = F.purchases(facts, until=now)
    if not paid:
        return NOTHING_BOUGHT
    year_ago = F.horizon(now).year
    if len(paid) == 1:  # most customers of a batch
        at, cents = paid[0]
        since = (now - at).total_seconds() / 86400
        return Purchases(1, at, at, cents, cents if at > year_ago else 0, (at,), None, since, since, cents)
    days: list[datetime] = []  # paid is in time order, so each day's first purchase comes first
    day = None
    net = trailing = trailing_at_last = 0
    year_before_last = paid[-1][0] - F.YEAR
    for at, cents in paid:
        if (this_day := at.date()) != day:
            day = this_day
            days.append(at)
        net += cents
        if at > year_ago:
            trailing += cents
        if at > year_before_last:
            trailing_at_last += cents
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
        trailing_at_last,
    )


class Value(NamedTuple):
    p_alive: float
    expected_90d: float
    p_no_purchase_90d: float
    clv_12m_cents: int


def value(p: Purchases, now: datetime, population: Population) -> Value | None:
    return values([p], now, population)[0]


def values(
    batch: list[Purchases], now: datetime | list[datetime], population: Population
) -> list[Value | None]:
    """The model's view of many customers at once: one array evaluation per quantity instead
    of a dozen scalar scipy calls per customer. `now` is one moment for all, or one per
    customer (each as of their own moment, see `scored`)."""
    moments = now if isinstance(now, list) else None
    buyers = [p for p in batch if p.days]
    if not buyers:
        return [None] * len(batch)
    # The model's inputs in weeks, one purchase per customer-day: x repeat purchase days, t_x
    # the last purchase day since the first, T now since the first.
    first = np.array([p.days[0].timestamp() for p in buyers])
    x = np.array([len(p.days) - 1 for p in buyers], float)
    t_x = (np.array([p.days[-1].timestamp() for p in buyers]) - first) / WEEK
    if moments is None:
        T = (now.timestamp() - first) / WEEK
    else:
        T = (np.array([m.timestamp() for p, m in zip(batch, moments, strict=True) if p.days]) - first) / WEEK
    spend = np.array([max(p.net_cents, 0) / p.count for p in buyers], float)
    bg, gg = population.bgnbd, population.gamma_gamma
    with np.errstate(all="ignore"):
        # nan (inf/inf) when P(alive) underflows (a long-gone regular under a fit on few
        # customers): no purchase expected.
        expected = np.nan_to_num(bg.expected_purchases(90 / 7, x, t_x, T), nan=0.0, posinf=np.inf)
        alive = bg.p_alive(x, t_x, T)
        worth = clv(bg, gg, x, t_x, T, spend)
    # Anything else non-finite (parameters the population job should have kept out) leaves the
    # customer without a model value, as before their first purchase: no P(alive), expected
    # purchases, CLV or model churn risk; lifecycle from the rule-based part alone.
    finite = (np.isfinite(expected) & np.isfinite(alive) & np.isfinite(worth)).tolist()
    worth = np.where(np.isfinite(worth), worth, 0.0).astype(np.int64).tolist()
    expected, alive = expected.tolist(), alive.tolist()
    # P(no purchase in 90 days) as a Poisson count with the model's expected number. Measured on
    # CDNOW it ranks future non-buyers better (AUC 0.763) than the exact BG/NBD mixture
    # probability (0.758), under which every one-time buyer sits near the top.
    modelled = iter(
        map(Value, alive, expected, [math.exp(-e) if e < math.inf else 0.0 for e in expected], worth)
    )
    modelled_if_finite = (v if ok else None for v, ok in zip(modelled, finite, strict=True))
    return [next(modelled_if_finite) if p.days else None for p in batch]


OVERDUE_FACTOR = 2.0


def overdue(p: Purchases, now: datetime, population: Population) -> tuple[bool, float, float]:
    """(overdue, days since last purchase, the cadence it is measured against): the customer's
    own mean gap, or the population's median gap for one-time buyers."""
    cadence = p.mean_gap_days if p.mean_gap_days else population.median_gap_days
    silent = p.recency_days
    return silent > OVERDUE_FACTOR * cadence, silent, cadence


def lifecycle(p: Purchases, v: Value | None, now: datetime, population: Population) -> LifecycleStage:
    """v None for a buyer (no finite model value, see `values`): the rule-based part alone."""
    if p.count == 0:
        return LifecycleStage.PROSPECT
    late, silent, _ = overdue(p, now, population)
    alive = v.p_alive if v is not None else 1.0
    if alive < 0.1 or silent > 365:
        return LifecycleStage.LOST
    if late or alive < 0.5:
        return LifecycleStage.DECLINE
    if p.count == 1:
        return LifecycleStage.EXPLORATION
    span = (p.last - p.first).total_seconds() / 86400
    return LifecycleStage.STABLE if p.count >= 4 and span >= 180 else LifecycleStage.GROWTH


# --- churn risk ---------------------------------------------------------------------------------

# The model's P(no purchase in 90 days) recalibrated in log-odds: scaled, and shifted for
# one-time buyers. Fitted on CDNOW at the end of calibration (1997-09-30) against the next 90
# days: the Poisson-count probability is overconfident at both ends and too low for one-time
# buyers (a fresh buyer: 0.59, where 71 % of CDNOW's first purchases saw no second within 90
# days; recalibrated 0.72). Ranking (AUC) 0.763 -> 0.768, Brier score 0.1169 -> 0.1162.
RISK_SCALE = 0.767
ONE_TIME_BUYER_SHIFT = 0.66
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


class Churn(NamedTuple):
    risk: float
    level: ChurnLevel
    reasons: list[dict[str, Any]]
    action: ChurnAction


def model_risk(p_no_purchase_90d: float, one_time_buyer: bool) -> float:
    """The model's probability of no purchase in 90 days, recalibrated (RISK_SCALE)."""
    base = min(max(p_no_purchase_90d, 1e-6), 1 - 1e-6)
    logit = RISK_SCALE * math.log(base / (1 - base)) + (ONE_TIME_BUYER_SHIFT if one_time_buyer else 0.0)
    return 1 / (1 + math.exp(-logit))


def overdue_reason(p: Purchases, population: Population) -> dict[str, Any] | None:
    """Silent for longer than the customer's usual gap allows (W.OVERDUE_FACTOR of it); a
    one-time buyer, for longer than this shop's repeat buyers usually take to come back."""
    if not p.days or p.recency_days < W.QUIET_DAYS:
        return None
    days = p.recency_days
    if len(p.days) >= 2:
        usual = p.mean_gap_days
        if days <= W.OVERDUE_FACTOR * usual:
            return None
        code, limit = "overdue", rounded(W.OVERDUE_FACTOR * usual, 1)
        usual = rounded(usual, 1)
        detail = "days since the last purchase vs the customer's mean gap between purchases"
    else:
        usual = population.repeat_gap_days
        if days <= usual:
            return None
        code, limit = "no_second_purchase", rounded(usual, 1)
        usual = limit
        detail = "days since the only purchase vs how soon this shop's repeat buyers come back"
    days = rounded(days, 1)
    return R.reason(code, days, limit, detail, days_since_last_purchase=days, usual_gap_days=usual)


def churn(
    facts: F.Facts, p: Purchases, v: Value | None, now: datetime, population: Population
) -> Churn | None:
    """The recalibrated model probability of no purchase in 90 days, moved by service signals
    in log-odds; each signal that moved it, and being overdue, is a reason with the numbers
    behind it and a sentence to read out. The level says how urgently to act (warnings.level)."""
    if v is None:
        return None
    h = F.horizon(now)
    model = model_risk(v.p_no_purchase_90d, len(p.days) == 1)
    reasons: list[dict[str, Any]] = [
        R.reason(
            "model_no_purchase_90d",
            rounded(model, 4),
            None,
            "the purchase model's probability of no purchase in the next 90 days",
            percent=round(100 * model),
        )
    ]
    weight = 0.0
    service_issue = unhappy = falling = False
    complaints = facts["complaints"].values()
    if complaints:
        still_open = sum(1 for c in complaints if c["state"].get("open"))
        if still_open:
            reasons.append(
                R.reason(
                    "open_complaint", still_open, None, "unresolved complaints", open_complaints=still_open
                )
            )
            weight += WEIGHTS["open_complaint"]
            service_issue = True
        breached = sum(1 for c in complaints if c.get("breached") and c.get("opened_at", now) > h.d90)
        if breached:
            reasons.append(
                R.reason(
                    "sla_breached",
                    True,
                    None,
                    "a complaint breached its SLA in the last 90 days",
                    breached_complaints=breached,
                )
            )
            weight += WEIGHTS["sla_breached"]
            service_issue = True
    surveys = facts["surveys"].values()
    if surveys:
        csat = [s["scores"]["overall"] for s in surveys if s["kind"] == "csat" and "overall" in s["scores"]]
        if csat and sum(csat) / len(csat) <= 2.5:
            average = round(sum(csat) / len(csat), 2)
            reasons.append(R.reason("low_csat", average, 2.5, "average CSAT", csat_average=average))
            weight += WEIGHTS["low_csat"]
            unhappy = True
        answered = sorted((s for s in surveys if s.get("recommend") is not None), key=lambda s: s["at"])
        if answered and answered[-1]["recommend"] <= 6:
            score = answered[-1]["recommend"]
            reasons.append(
                R.reason("detractor", score, 6, "last would-you-recommend answer", recommend=score)
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
            share = round(returned / paid, 3)
            reasons.append(
                R.reason("high_returns", share, 0.3, "share of spend returned", percent=round(100 * share))
            )
            weight += WEIGHTS["high_returns"]
    if len(p.days) >= 2:
        recent = sum(1 for d in p.days if d > h.d180)
        before = sum(1 for d in p.days if h.d360 < d <= h.d180)
        if before >= 2 and recent < before / 2:
            reasons.append(
                R.reason(
                    "falling_frequency",
                    recent,
                    before / 2,
                    "purchase days in the last 180 vs the 180 before",
                    recent_days=recent,
                    earlier_days=before,
                )
            )
            weight += WEIGHTS["falling_frequency"]
            falling = True
    if late:
        reasons.append(
            R.reason("late_delivery", late, None, "late deliveries in the last 90 days", late_deliveries=late)
        )
        weight += WEIGHTS["late_delivery"]
    late_to_buy = overdue_reason(p, population)
    if late_to_buy:
        reasons.append(late_to_buy)
    risk = 1 / (1 + math.exp(-(math.log(model / (1 - model)) + weight)))
    # Unhappy with the service (complaints or surveys) -> recover the service; a valued regular
    # buying less -> a call; otherwise an offer to come back.
    if service_issue or unhappy:
        action = ChurnAction.SERVICE_RECOVERY
    elif v.clv_12m_cents > 0 and falling:
        action = ChurnAction.CALL
    else:
        action = ChurnAction.COUPON
    return Churn(rounded(risk, 4), W.level(risk, reasons, p.recency_days), reasons, action)


def worth_keeping(abc: str, clv_cents: int, population: Population) -> bool:
    return abc in ("A", "B") or clv_cents > population.median_clv_cents


class Scored(NamedTuple):
    """What `profile.build` needs from the models for one customer, computed for a whole batch
    at once: the purchases summary, the model values now, and whether the customer was worth
    keeping as of their last purchase (the warning rule asks it once per purchase, and only of
    customers not worth keeping now: for the others it is not judged and left True)."""

    purchases: Purchases
    value: Value | None
    kept_when_bought: bool


def newcomer_then(p: Purchases) -> bool:
    """One purchase day, and the last purchase is its first: as of it, x = t_x = T = 0 and spend
    does not count (Gamma-Gamma weighs a customer's own spend by their repeat purchases)."""
    return len(p.days) == 1 and p.last == p.days[0]


def scored(
    summaries: list[Purchases], now_values: list[Value | None], population: Population
) -> list[Scored]:
    """`summaries` and `now_values` as `summarize` and `values` gave them for the batch. As of
    a buyer's last purchase they bought what they have bought by now (nothing is paid after
    it), so the value then is the same summary evaluated at that moment: one more array
    evaluation for the batch's buyers not worth keeping now (a scalar one per customer cost
    the fold two thirds of its speed; a second `summarize` per customer, with a clock reading
    of its own each, half of the scoring's share of it)."""
    # W.worth_keeping asks about the last purchase only of buyers not worth keeping now
    asked = [
        p.last is not None
        and not worth_keeping(
            abc_class(p.trailing_cents, population), v.clv_12m_cents if v else 0, population
        )
        for p, v in zip(summaries, now_values, strict=True)
    ]
    then = [p for p, ask in zip(summaries, asked, strict=True) if ask]
    # As of their only purchase a buyer is the model's newcomer (no repeat purchase, no time
    # since the first): every such buyer has the same value, evaluated once.
    newcomers = [newcomer_then(p) for p in then]
    repeat = [p for p, new in zip(then, newcomers, strict=True) if not new]
    first = next((p for p, new in zip(then, newcomers, strict=True) if new), None)
    evaluated = repeat if first is None else [first, *repeat]
    found = values(evaluated, [p.last for p in evaluated], population)
    newcomer_value = found[0] if first is not None else None
    repeat_values = iter(found[1:] if first is not None else found)
    out = []
    newcomer = iter(newcomers)
    for p, v, ask in zip(summaries, now_values, asked, strict=True):
        if not ask:
            out.append(Scored(p, v, p.last is not None))
            continue
        vt = newcomer_value if next(newcomer) else next(repeat_values)
        kept = worth_keeping(
            abc_class(p.trailing_at_last_cents, population), vt.clv_12m_cents if vt else 0, population
        )
        out.append(Scored(p, v, kept))
    return out
