"""An evaluation of churn warnings, not only of the ranking: CDNOW replayed from its first day,
day by day, through the very scoring code the platform runs (the facts fold, the scores, the
warning rule, the population job every REFIT_DAYS) on an event-time clock, with every warning
recorded on the day it fired, beside two baselines computed in the same run:

- `gap_2x`: warn when the time since the last purchase exceeds twice the customer's mean gap
  (one-time buyers: the population's median gap, as the lifecycle's overdue rule has it);
- `p_alive`: BG/NBD P(alive) crossing below 0.5.

Every rule warns only customers the platform deems worth keeping, once per episode; a
baseline's episode closes when its condition no longer holds.

Measured per rule: precision (the share of warnings after which the customer bought nothing
for 90 days), coverage (the share of valuable customers who lapsed, bought nothing for 180
days, who were warned before they lapsed) and the median lead time, warnings per 1,000
customers per month, and warnings within 14 days after a purchase. Beside them, at the end of
CDNOW's calibration period, the ranking AUC and the 90-day totals, and pooled over monthly
snapshots a reliability table of the risk against the observed no-purchase rate (Brier score),
beside BG/NBD's own probability.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from services.common.cdnow import purchases
from services.common.clock import to_rfc3339

from . import facts as F
from . import population as P
from . import scores as S
from . import warnings as W
from .evaluate import CALIBRATION_END, HOLDOUT_END, auc

REFIT_DAYS = 30  # the population job, in event time
SNAPSHOT_DAYS = 30  # reliability snapshots
PRECISION_DAYS = 90
LAPSE_DAYS = 180
AFTER_PURCHASE_DAYS = 14
RULES = ("platform", "gap_2x", "p_alive")


@dataclass
class Ledger:
    """What one rule did over the replay."""

    open: dict[str, bool] = field(default_factory=dict)
    warnings: list[tuple[str, date, float]] = field(
        default_factory=list
    )  # customer, day, days since purchase


def _paid(customer: str, order: str, day: date, cents: int) -> dict[str, Any]:
    at = to_rfc3339(datetime(day.year, day.month, day.day, 12, tzinfo=UTC))
    return {
        "type": "crm.order.paid",
        "time": at,
        "data": {"order_id": order, "customer_id": customer, "amount_cents": cents, "currency": "USD"},
    }


def load(sample: int | None, seed: int = 19) -> dict[str, list[tuple[date, int]]]:
    """Each customer's purchases (day, cents) in time order; a random sample of customers."""
    bought: dict[str, list[tuple[date, int]]] = {}
    for p in purchases():
        bought.setdefault(p.customer, []).append((p.day, p.cents))
    if sample is not None and sample < len(bought):
        keep = random.Random(seed).sample(sorted(bought), sample)
        bought = {c: bought[c] for c in sorted(keep)}
    for history in bought.values():
        history.sort()
    return bought


def _reliability(pred: np.ndarray, observed: np.ndarray) -> dict[str, Any]:
    tenth = np.minimum((pred * 10).astype(int), 9)
    rows = []
    for k in range(10):
        inside = tenth == k
        if inside.any():
            rows.append(
                {
                    "bin": f"{k / 10:.1f}-{(k + 1) / 10:.1f}",
                    "customers": int(inside.sum()),
                    "predicted": round(float(pred[inside].mean()), 3),
                    "observed": round(float(observed[inside].mean()), 3),
                }
            )
    return {"brier": round(float(((pred - observed) ** 2).mean()), 4), "table": rows}


def run(sample: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    started = time.perf_counter()
    bought = load(sample)
    days_of = {c: sorted({d for d, _ in h}) for c, h in bought.items()}
    first_day = min(h[0][0] for h in bought.values())
    facts: dict[str, F.Facts] = {}
    by_day: dict[date, list[tuple[str, int, int]]] = {}
    for customer, history in bought.items():
        for k, (day, cents) in enumerate(history):
            by_day.setdefault(day, []).append((customer, k, cents))

    population = S.Population()
    episodes: dict[str, W.Episode] = {}
    ledgers = {rule: Ledger() for rule in RULES}
    valued: dict[str, W.Episode] = {}
    keep_on: dict[tuple[str, date], bool] = {}  # worth keeping, on each purchase day
    customer_days = 0
    snapshots: list[tuple[float, float, bool]] = []  # risk, BG/NBD P(no purchase), no purchase followed
    at_calibration: dict[str, tuple[float, float]] = {}  # risk, expected purchases in 90 days
    day = first_day
    while day <= HOLDOUT_END:
        for customer, k, cents in by_day.get(day, ()):
            facts.setdefault(customer, F.empty(customer))
            F.apply(facts[customer], _paid(customer, f"{customer}-{k}", day, cents))
        now = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)  # the day's end
        ids = list(facts)
        summaries = [S.summarize(facts[c], now) for c in ids]
        if (day - first_day).days % REFIT_DAYS == REFIT_DAYS - 1:
            population = P.compute([P.row(p) for p in summaries], now, population)
        values = S.values(summaries, now, population)
        snapshot = (day - first_day).days % SNAPSHOT_DAYS == 0 and day <= HOLDOUT_END - timedelta(
            days=PRECISION_DAYS
        )
        customer_days += len(ids)
        risks: list[float] = []
        for customer, p, v in zip(ids, summaries, values, strict=True):
            churn = S.churn(facts[customer], p, v, now, population)
            keep = S.worth_keeping(S.abc_class(p.trailing_cents, population), v.clv_12m_cents, population)
            last_day = p.days[-1].date()
            if last_day == day:
                keep_on[customer, day] = keep
            since = p.recency_days
            step = W.step(
                episodes.get(customer, W.NO_EPISODE),
                churn.level,
                churn.reasons,
                p.last,
                keep,
                False,
                round(max(v.clv_12m_cents, 0) * churn.risk),
                now,
            )
            episodes[customer] = step.episode
            if step.fired == W.WARNING:
                ledgers["platform"].warnings.append((customer, day, since))
            # The baselines warn the same customers worth keeping (W.worth_keeping; the replay
            # scores every day, so the day of the last purchase was judged on that day).
            worth, valued[customer] = W.worth_keeping(valued.get(customer, W.NO_EPISODE), keep, p.last, bool)
            late, _, _ = S.overdue(p, now, population)
            alive = v.p_alive < 0.5
            for rule, condition in (("gap_2x", late), ("p_alive", alive)):
                ledger = ledgers[rule]
                was = ledger.open.get(customer, False)
                if condition and worth and not was:
                    ledger.warnings.append((customer, day, since))
                ledger.open[customer] = condition and (was or worth)
            if snapshot:
                risks.append(churn.risk)
            if day == CALIBRATION_END:
                at_calibration[customer] = (churn.risk, v.expected_90d)
        if snapshot:
            x = np.array([len(p.days) - 1 for p in summaries], float)
            first = np.array([p.days[0].timestamp() for p in summaries])
            t_x = (np.array([p.days[-1].timestamp() for p in summaries]) - first) / S.WEEK
            T = (now.timestamp() - first) / S.WEEK
            exact = population.bgnbd.p_no_purchase(PRECISION_DAYS / 7, x, t_x, T).tolist()
            silent = [not _bought_within(days_of[c], day, PRECISION_DAYS) for c in ids]
            snapshots += zip(risks, exact, silent, strict=True)
        if day.day == 1:
            log(f"{day}: {len(ids)} customers, {sum(len(x.warnings) for x in ledgers.values())} warnings")
        day += timedelta(days=1)

    result: dict[str, Any] = {
        "customers": len(bought),
        "days": (HOLDOUT_END - first_day).days + 1,
        "rules": {
            rule: _measure(ledger, days_of, keep_on, customer_days) for rule, ledger in ledgers.items()
        },
    }
    result.update(_at_calibration(at_calibration, days_of))
    risk, exact, silent = (np.array(col, float) for col in zip(*snapshots, strict=True))
    result["reliability"] = {
        "snapshots": len(snapshots),
        "risk": _reliability(risk, silent),
        "bgnbd_p_no_purchase_90d": _reliability(exact, silent),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _bought_within(days: list[date], after: date, span: int) -> bool:
    """Any purchase day in (after, after + span]."""
    k = bisect_right(days, after)
    return k < len(days) and days[k] <= after + timedelta(days=span)


def _measure(
    ledger: Ledger,
    days_of: dict[str, list[date]],
    keep_on: dict[tuple[str, date], bool],
    customer_days: int,
) -> dict[str, Any]:
    judged = [w for w in ledger.warnings if w[1] <= HOLDOUT_END - timedelta(days=PRECISION_DAYS)]
    right = sum(1 for c, d, _ in judged if not _bought_within(days_of[c], d, PRECISION_DAYS))
    by_customer: dict[str, list[date]] = {}
    for c, d, _ in ledger.warnings:
        by_customer.setdefault(c, []).append(d)
    lapses = covered = 0
    leads: list[int] = []
    for customer, days in days_of.items():
        for k, last in enumerate(days):
            lapsed_on = last + timedelta(days=LAPSE_DAYS)
            if lapsed_on > HOLDOUT_END or (k + 1 < len(days) and days[k + 1] <= lapsed_on):
                continue  # came back in time, or too late in the data to tell
            if not keep_on.get((customer, last), False):
                continue  # not valuable when they last bought
            lapses += 1
            warned = [d for d in by_customer.get(customer, ()) if last <= d < lapsed_on]
            if warned:
                covered += 1
                leads.append((lapsed_on - warned[0]).days)
    months = customer_days / (365.25 / 12)
    return {
        "warnings": len(ledger.warnings),
        "precision": round(right / len(judged), 3) if judged else None,
        "judged_warnings": len(judged),
        "valuable_lapses": lapses,
        "coverage": round(covered / lapses, 3) if lapses else None,
        "median_lead_days": float(np.median(leads)) if leads else None,
        "per_1000_customers_month": round(1000 * len(ledger.warnings) / months, 2) if months else 0.0,
        "within_14d_of_purchase": sum(1 for *_, since in ledger.warnings if since <= AFTER_PURCHASE_DAYS),
    }


def _at_calibration(scored: dict[str, tuple[float, float]], days_of: dict[str, list[date]]) -> dict[str, Any]:
    customers = sorted(scored)
    silent = np.array(
        [
            not _bought_within(days_of[c], CALIBRATION_END, (HOLDOUT_END - CALIBRATION_END).days)
            for c in customers
        ]
    )
    risk = np.array([scored[c][0] for c in customers])
    predicted = float(sum(scored[c][1] for c in customers))
    actual = sum(
        1
        for c in customers
        for d in days_of[c]
        if CALIBRATION_END < d <= CALIBRATION_END + timedelta(days=90)
    )
    return {
        "auc_churn_risk": round(auc(risk, silent), 4),
        "predicted_90d": round(predicted, 1),
        "actual_90d": actual,
        "ratio_90d": round(predicted / actual, 3) if actual else None,
    }


def beats_baselines(result: dict[str, Any]) -> bool:
    """The platform's warnings are more precise than each baseline's at equal or better
    coverage, and none fires within 14 days after a purchase."""
    rules = result["rules"]
    mine = rules["platform"]
    return mine["within_14d_of_purchase"] == 0 and all(
        mine["precision"] > rules[b]["precision"] and mine["coverage"] >= rules[b]["coverage"]
        for b in RULES[1:]
    )


def tables(result: dict[str, Any]) -> str:
    """The result as the plain-text tables the closing note quotes."""
    rows = [
        ("precision (no purchase in 90 days after)", "precision"),
        ("coverage of valuable lapses (180 days)", "coverage"),
        ("median lead time, days", "median_lead_days"),
        ("warnings per 1,000 customers per month", "per_1000_customers_month"),
        ("warnings within 14 days after a purchase", "within_14d_of_purchase"),
        ("warnings", "warnings"),
    ]
    width = max(len(label) for label, _ in rows)
    out = [
        f"CDNOW replayed day by day: {result['customers']} customers, {result['days']} days, "
        f"{result['rules']['platform']['valuable_lapses']} valuable lapses",
        f"{'':{width}}  " + "  ".join(f"{r:>9}" for r in RULES),
    ]
    for label, key in rows:
        out.append(f"{label:{width}}  " + "  ".join(f"{result['rules'][r][key]!s:>9}" for r in RULES))
    out.append(
        f"at {CALIBRATION_END}: churn-risk AUC {result['auc_churn_risk']}, 90-day purchases predicted "
        f"{result['predicted_90d']} vs {result['actual_90d']} (ratio {result['ratio_90d']})"
    )
    reliability = result["reliability"]
    out.append(
        f"reliability over {reliability['snapshots']} customer snapshots (monthly): predicted vs "
        "observed share with no purchase in the next 90 days"
    )
    out.append(
        f"{'risk':>9}  {'customers':>9}  {'risk':>6}  {'observed':>8}  |  {'BG/NBD':>6}  {'observed':>8}"
    )
    bgnbd = {row["bin"]: row for row in reliability["bgnbd_p_no_purchase_90d"]["table"]}
    for row in reliability["risk"]["table"]:
        other = bgnbd.get(row["bin"])
        tail = f"{other['predicted']:>6}  {other['observed']:>8}" if other else f"{'-':>6}  {'-':>8}"
        out.append(
            f"{row['bin']:>9}  {row['customers']:>9}  {row['predicted']:>6}  {row['observed']:>8}  |  {tail}"
        )
    out.append(
        f"Brier score: risk {reliability['risk']['brier']}, "
        f"BG/NBD P(no purchase in 90 days) {reliability['bgnbd_p_no_purchase_90d']['brier']}"
    )
    return "\n".join(out)
