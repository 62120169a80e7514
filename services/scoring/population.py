"""The population job's arithmetic: quintile boundaries, ABC thresholds, median cadence and
value, and the models refitted from the profiles. Pure (numpy/scipy)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np

from . import scores as S
from .model import BgNbd, GammaGamma, clv, fit_bgnbd, fit_gamma_gamma

WEEK_DAYS = 7.0
# "Repeat buyers here usually come back within N days": three in four of them did.
REPEAT_GAP_PERCENTILE = 75


def _cuts(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in np.percentile(values, [20, 40, 60, 80]))


def abc_thresholds(trailing: np.ndarray) -> tuple[int, int]:
    """Minimum trailing spend of A (the customers making the first 75 % of revenue) and B
    (the next 20 %)."""
    spend = np.sort(trailing[trailing > 0])[::-1]
    if len(spend) == 0:
        return 1 << 62, 1 << 62
    share = np.cumsum(spend) / spend.sum()
    a_last = int(np.searchsorted(share, 0.75))  # the customer whose spend crosses 75 %
    b_last = int(np.searchsorted(share, 0.95))
    return int(spend[min(a_last, len(spend) - 1)]), int(spend[min(b_last, len(spend) - 1)])


def sensible(bg: BgNbd) -> bool:
    """A fit on a young population (weeks of history, few repeat buyers) can run to the edge,
    a and b near 0: every customer certain to stay or to leave at once. Such a fit is kept out,
    and the next refit starts again from the parameters in use. A fit whose own customers get
    non-finite model values (a uniform shop: every customer alike) is kept out the same way."""
    return all(1e-4 < v < 1e4 for v in (bg.r, bg.alpha, bg.a, bg.b))


def finite_on(
    bg: BgNbd, gg: GammaGamma, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, m: np.ndarray
) -> bool:
    """Whether the fitted models give every customer of the population finite values."""
    with np.errstate(all="ignore"):
        quantities = (
            bg.p_alive(x, t_x, T),
            bg.expected_purchases(90 / 7, x, t_x, T),
            gg.expected_spend(x, m),
            clv(bg, gg, x, t_x, T, m),
        )
    return all(np.all(np.isfinite(q)) for q in quantities)


def row(p: S.Purchases) -> dict[str, Any]:
    """What `compute` reads of one customer with a purchase (the store reads the same from the
    stored profiles)."""
    return {
        "first_day": p.days[0],
        "last_day": p.days[-1],
        "purchase_days": len(p.days),
        "count": p.count,
        "net_spend_cents": p.net_cents,
        "trailing_spend_cents": p.trailing_cents,
        "mean_gap_days": p.mean_gap_days,
        "first_gap_days": p.first_gap_days,
    }


def compute(rows: list[dict[str, Any]], now: datetime, previous: S.Population) -> S.Population:
    """rows: for each customer with a purchase: first_day, last_day, purchase_days, count,
    net_spend_cents, trailing_spend_cents, mean_gap_days, first_gap_days (the days from the
    first purchase day to the second), recency_days."""
    if not rows:
        return replace(previous, fitted_at=now, customers=0)
    recency = np.array([(now - r["last_day"]).total_seconds() / 86400 for r in rows])
    frequency = np.array([r["count"] for r in rows], float)
    monetary = np.array([r["net_spend_cents"] for r in rows], float)
    trailing = np.array([r["trailing_spend_cents"] for r in rows], float)
    x = np.array([r["purchase_days"] - 1 for r in rows], float)
    t_x = np.array([(r["last_day"] - r["first_day"]).total_seconds() / 86400 / WEEK_DAYS for r in rows])
    T = np.array([(now - r["first_day"]).total_seconds() / 86400 / WEEK_DAYS for r in rows])
    m = np.where(frequency > 0, np.maximum(monetary, 0) / np.maximum(frequency, 1), 0)  # cents per purchase
    gaps = np.array([r["mean_gap_days"] for r in rows if r.get("mean_gap_days")], float)
    first_gaps = np.array([r["first_gap_days"] for r in rows if r.get("first_gap_days")], float)
    bg, gg = previous.bgnbd, previous.gamma_gamma
    if len(rows) >= 50 and (x > 0).sum() >= 10:  # too few customers say nothing about the population
        # A fit that fails, runs to the edge or gives non-finite values keeps the previous model.
        try:
            fitted = fit_bgnbd(x, t_x, T, start=previous.bgnbd)
            if sensible(fitted) and finite_on(fitted, gg, x, t_x, T, m):
                bg = fitted
        except (ValueError, FloatingPointError):
            pass
        try:
            fitted_spend = fit_gamma_gamma(x, m, start=previous.gamma_gamma)
            if finite_on(bg, fitted_spend, x, t_x, T, m):
                gg = fitted_spend
        except (ValueError, FloatingPointError):
            pass
    a_min, b_min = abc_thresholds(trailing)
    values = clv(bg, gg, x, t_x, T, m)
    return S.Population(
        recency_bounds=_cuts(recency),
        frequency_bounds=_cuts(frequency),
        monetary_bounds=_cuts(monetary),
        abc_a_min_cents=a_min,
        abc_b_min_cents=b_min,
        median_gap_days=float(np.median(gaps)) if len(gaps) else previous.median_gap_days,
        repeat_gap_days=float(np.percentile(first_gaps, REPEAT_GAP_PERCENTILE))
        if len(first_gaps) >= 10
        else previous.repeat_gap_days,
        median_clv_cents=float(np.median(np.where(np.isfinite(values), values, 0.0))),
        bgnbd=bg,
        gamma_gamma=gg,
        fitted_at=now,
        customers=len(rows),
    )
