"""`crm model evaluate --cdnow`: replay CDNOW to the end of the calibration period through the
platform (orders import, broker, scorer), then check the live profiles against what the
customers did next. docs/architecture.md ("Replays and checks") gives the baselines."""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from scipy.stats import rankdata

from services.common.cdnow import purchases
from services.common.kafka import ensure_topics
from services.common.mongo import blocking_client, projection
from services.stack.platform import start_service, start_stack
from services.stack.replay import replay_cdnow

from .model import fit_bgnbd

CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_END = date(1998, 6, 30)


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    ranks = rankdata(score)
    n1 = int(positive.sum())
    n0 = len(positive) - n1
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def truth(calibration_end: date = CALIBRATION_END, holdout_end: date = HOLDOUT_END) -> dict[str, Any]:
    """Per customer (one purchase per customer-day): calibration summary and what followed."""
    days: dict[str, set[date]] = {}
    for p in purchases():
        days.setdefault(p.customer, set()).add(p.day)
    rows = {}
    for customer, seen in days.items():
        before = sorted(d for d in seen if d <= calibration_end)
        if not before:
            continue
        rows[customer] = {
            "x": len(before) - 1,
            "t_x": (before[-1] - before[0]).days / 7,
            "T": (calibration_end - before[0]).days / 7,
            "recency": (calibration_end - before[-1]).days,
            "holdout": sum(1 for d in seen if calibration_end < d <= holdout_end),
            "next_90d": sum(1 for d in seen if calibration_end < d <= calibration_end + timedelta(days=90)),
        }
    return rows


def baselines(rows: dict[str, Any]) -> dict[str, float]:
    x, t_x, T = (np.array([r[k] for r in rows.values()], float) for k in ("x", "t_x", "T"))
    silent = np.array([r["holdout"] == 0 for r in rows.values()])
    bg = fit_bgnbd(x, t_x, T)
    horizon = (HOLDOUT_END - CALIBRATION_END).days / 7
    expected = bg.expected_purchases(horizon, x, t_x, T)
    return {
        "auc_recency": auc(np.array([r["recency"] for r in rows.values()], float), silent),
        "auc_bgnbd_expected_holdout": auc(-expected, silent),
        "bgnbd_holdout_ratio": float(expected.sum() / sum(r["holdout"] for r in rows.values())),
        "bgnbd_90d_ratio": float(
            bg.expected_purchases(90 / 7, x, t_x, T).sum() / sum(r["next_90d"] for r in rows.values())
        ),
    }


def run(workdir: Path | None = None, timeout: float = 900.0, log=print) -> dict[str, Any]:
    started = time.perf_counter()
    rows = truth()
    stack = start_stack(workdir)
    prefix = f"eval{uuid.uuid4().hex[:6]}."
    ensure_topics(stack.settings(topic_prefix=prefix))
    common = {"CRM_TOPIC_PREFIX": prefix}
    orders = start_service(stack, "orders", **common)
    scoring = start_service(
        stack,
        "scoring",
        db_prefix=orders.env["CRM_DB_PREFIX"],
        CRM_SCORING_CLOCK="event",
        CRM_POPULATION_SECONDS="3600",
        CRM_SCORING_REVIEW_SECONDS="3600",
        CRM_DATA_DIR=str(stack.workdir / "faust"),
        **common,
    )
    try:
        with httpx.Client(timeout=600) as client:
            totals = replay_cdnow(orders.url, stack.keys["admin"], CALIBRATION_END, client=client)
        log(
            f"replayed {totals['accepted']} orders to {CALIBRATION_END} in {time.perf_counter() - started:.0f}s"
        )
        profiles = blocking_client(stack.mongo_url)[orders.env["CRM_DB_PREFIX"] + "profiles"]["profiles"]
        deadline = time.monotonic() + timeout
        while True:
            done = next(
                iter(profiles.aggregate([{"$group": {"_id": None, "n": {"$sum": "$purchases.count"}}}])),
                {"n": 0},
            )["n"]
            if done >= totals["accepted"]:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scorer folded {done} of {totals['accepted']} purchases")
            time.sleep(1)
        log(f"scored {done} purchases in {time.perf_counter() - started:.0f}s")
        refreshed = scoring.post("/population/refresh", params={"rescore": "true"}, timeout=900).json()
        log(
            f"population refit on {refreshed['customers']} customers, {refreshed['rescored']} profiles rescored"
        )
        live = {
            d["_id"]: d for d in profiles.find({}, projection("churn.risk", "value.expected_purchases_90d"))
        }
    finally:
        scoring.stop()
        orders.stop()
        stack.stop()
    customers = [c for c in rows if c in live]
    silent = np.array([rows[c]["holdout"] == 0 for c in customers])
    risk = np.array([live[c]["churn"]["risk"] for c in customers], float)
    predicted_90d = float(sum(live[c]["value"]["expected_purchases_90d"] for c in customers))
    actual_90d = sum(rows[c]["next_90d"] for c in customers)
    return {
        "customers": len(customers),
        "silent_share": float(silent.mean()),
        "auc_churn_risk": auc(risk, silent),
        "predicted_90d": predicted_90d,
        "actual_90d": actual_90d,
        "ratio_90d": predicted_90d / actual_90d,
        **baselines(rows),
        "seconds": round(time.perf_counter() - started, 1),
    }
