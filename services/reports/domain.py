"""The reports' arithmetic: the shop's read model folded into a columnar snapshot (numpy
arrays, built off the request path), and every report a slice of it: composition by
dimensions, the Pareto curve and ABC thresholds, acquisition cohorts, the RFM grid and segment
moves, churn warnings, product sales and next categories, satisfaction, the seasonal index
and forecast. Pure: no I/O.

Periods are half-open [from, to) in epoch seconds. Time arrays are sorted, so a period is a
slice found by binary search and every report is a bincount over that slice."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from services.common.errors import RuleBroken
from services.common.vocabulary import AGE_BANDS, REPORT_DIMENSIONS
from services.complaints.domain import nps
from services.profiles.domain import seasonal_index
from services.scoring.population import abc_thresholds

UNKNOWN = "unknown"
DIMENSIONS = REPORT_DIMENSIONS
DIMENSION_SCORES = ("website", "product", "payment", "service", "logistics", "overall")
TOP_DEFAULT = 20
FAR_PAST, FAR_FUTURE = -(1 << 62), 1 << 62


class ReportsError(RuleBroken):
    """A report was asked for in a way it cannot answer (unknown dimension, inverted period)."""


# --- request input -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """[start, end) in epoch seconds; None leaves a side open."""

    start: int | None = None
    end: int | None = None

    @property
    def lo(self) -> int:
        return FAR_PAST if self.start is None else self.start

    @property
    def hi(self) -> int:
        return FAR_FUTURE if self.end is None else self.end


def period(since: datetime | None, until: datetime | None) -> Period:
    if since is not None and until is not None and until < since:
        raise ReportsError(
            f"the period ends ({until.isoformat()}) before it starts ({since.isoformat()})", field="to"
        )
    return Period(
        None if since is None else int(since.timestamp()), None if until is None else int(until.timestamp())
    )


def dimensions(by: str | None, default: str = "segment") -> tuple[str, ...]:
    """`by`: one dimension or two joined by a comma (crossed)."""
    names = tuple(n.strip() for n in (by or default).split(",") if n.strip())
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown:
        raise ReportsError(f"unknown dimension {unknown[0]!r}; one of {', '.join(DIMENSIONS)}", field="by")
    if not 1 <= len(names) <= 2 or len(set(names)) != len(names):
        raise ReportsError("by: one dimension, or two different ones joined by a comma", field="by")
    return names


def age_band(birth_date: str | None, on: date) -> str:
    if not birth_date:
        return UNKNOWN
    born = date.fromisoformat(birth_date[:10])
    age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return next((label for lo, hi, label in AGE_BANDS if lo <= age < hi), UNKNOWN)


def month_of(epoch: int) -> str:
    at = datetime.fromtimestamp(epoch, UTC)
    return f"{at.year:04d}-{at.month:02d}"


def month_index(epoch: np.ndarray) -> np.ndarray:
    """Months since 1970-01 of each epoch second (UTC)."""
    days = (epoch // 86400).astype("datetime64[D]")
    return days.astype("datetime64[M]").astype(np.int64)


def month_label(index: int) -> str:
    return f"{1970 + index // 12:04d}-{index % 12 + 1:02d}"


# --- the read model, as the store hands it over ----------------------------------------------


@dataclass(frozen=True)
class OrderRecord:
    """A paid order: its net value after returns and refunds, and its lines' net values (the
    order's discount and non-return refunds spread over the lines by value, returns taken off
    the line of their sku)."""

    order_id: str
    customer_id: str | None  # None once the person was erased (the sale still counts)
    paid_at: int
    net_cents: int
    lines: tuple[tuple[str, str, int], ...]  # (category, brand, net cents)


def order_record(
    doc: dict[str, Any], returns: dict[str, dict[str, Any]], refunds: dict[str, dict[str, Any]]
) -> OrderRecord | None:
    """From the store's order document and its returns and refunds (by id): None unless
    paid. Net as the scorer counts it (services/scoring/facts.py `purchases`): returns and
    non-return refunds come off (a paid order's cancellation is refunded)."""
    if doc.get("paid_at") is None:
        return None
    paid = int(doc["paid_cents"])
    returned = sum(r["cents"] for r in returns.values())
    refunded = sum(r["cents"] for r in refunds.values() if r["reason"] != "return")
    net = paid - returned - refunded
    items = doc.get("items") or []
    gross = sum(i["cents"] for i in items)
    returned_by_sku: dict[str, int] = defaultdict(int)
    for r in returns.values():
        for sku, cents in r["items"]:
            returned_by_sku[sku] += cents
    lines = []
    for item in items:
        share = item["cents"] / gross if gross else 0.0
        value = item["cents"] * (paid / gross if gross else 0.0) - refunded * share
        take = min(returned_by_sku.get(item["sku"], 0), max(value, 0))
        returned_by_sku[item["sku"]] = returned_by_sku.get(item["sku"], 0) - take
        lines.append((item["category"], item["brand"], round(value - take)))
    if lines:  # rounding: the lines add up to the order exactly
        category, brand, cents = lines[0]
        lines[0] = (category, brand, cents + net - sum(c for _, _, c in lines))
    return OrderRecord(doc["_id"], doc.get("customer_id"), int(doc["paid_at"]), net, tuple(lines))


# --- the snapshot ------------------------------------------------------------------------------


class Codes:
    """Labels of one dimension numbered in order of first sight."""

    def __init__(self) -> None:
        self.labels: list[str] = []
        self._index: dict[str, int] = {}

    def code(self, label: str | None) -> int:
        label = UNKNOWN if label is None or label == "" else str(label)
        found = self._index.get(label)
        if found is None:
            found = self._index[label] = len(self.labels)
            self.labels.append(label)
        return found


def _sorted_by(times: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.argsort(times, kind="stable")
    return (times[order], *(c[order] for c in columns))


def _slice(times: np.ndarray, p: Period) -> slice:
    return slice(int(np.searchsorted(times, p.lo, "left")), int(np.searchsorted(times, p.hi, "left")))


@dataclass
class Snapshot:
    as_of: int
    built_at: int
    customer_ids: list[str]
    codes: dict[str, np.ndarray]
    labels: dict[str, list[str]]
    known_from: np.ndarray  # first registration or purchase (epoch s)
    clv: np.ndarray
    risk: np.ndarray  # nan when not scored
    r: np.ndarray  # 0 when not scored
    f: np.ndarray
    order_t: np.ndarray
    order_customer: np.ndarray  # -1: an erased person's sale
    order_net: np.ndarray
    line_t: np.ndarray
    line_customer: np.ndarray
    line_category: np.ndarray
    line_brand: np.ndarray
    line_net: np.ndarray
    categories: list[str]
    brands: list[str]
    cohorts: dict[str, Any]
    next_t: np.ndarray
    next_from: np.ndarray
    next_to: np.ndarray
    surveys: dict[str, np.ndarray]
    complaint_categories: list[str]
    moves: dict[str, np.ndarray]
    segments: list[str]
    warnings: list[dict[str, Any]]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.customer_ids)

    def freshness(self) -> dict[str, Any]:
        return {
            "as_of": _iso(self.as_of),
            "built_at": _iso(self.built_at),
            "customers": self.size,
            "orders": len(self.order_t),
        }


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(
    *,
    customers: Iterable[dict[str, Any]],
    scores: dict[str, dict[str, Any]],
    orders: Iterable[OrderRecord],
    surveys: Iterable[dict[str, Any]],
    complaints: dict[str, str],
    moves: Iterable[dict[str, Any]],
    warnings: Iterable[dict[str, Any]],
    erased: set[str],
    now: int,
) -> Snapshot:
    """customers: registration attributes (customer_id, gender, birth_date, city, city_tier,
    channel, registered_at epoch); scores: by customer id, the live profile's segment,
    lifecycle_stage, abc_class, tier, clv_12m_cents, churn_risk, rfm_code; complaints:
    complaint id → category; moves: segment changes (customer_id, at, from, to); warnings:
    the worklist with episode times, reasons, actions and outcome. Erased people are left out
    of every list and every per-person figure; their sales stay in the shop's totals."""
    today = datetime.fromtimestamp(now, UTC).date()
    index: dict[str, int] = {}
    attrs: list[dict[str, Any]] = []

    def at(customer_id: str | None) -> int:
        if customer_id is None or customer_id in erased:
            return -1
        found = index.get(customer_id)
        if found is None:
            found = index[customer_id] = len(attrs)
            attrs.append({"customer_id": customer_id})
        return found

    for c in customers:
        if c["customer_id"] not in erased:
            attrs[at(c["customer_id"])].update(c)
    order_list = sorted(orders, key=lambda o: (o.paid_at, o.order_id))
    for o in order_list:
        at(o.customer_id)
    for customer_id in scores:
        at(customer_id)
    n = len(attrs)

    order_t = np.fromiter((o.paid_at for o in order_list), np.int64, len(order_list))
    order_customer = np.fromiter((at(o.customer_id) for o in order_list), np.int64, len(order_list))
    order_net = np.fromiter((o.net_cents for o in order_list), np.float64, len(order_list))
    first_paid = np.full(n, FAR_FUTURE, np.int64)
    known = order_customer >= 0
    np.minimum.at(first_paid, order_customer[known], order_t[known])

    categories, brands = Codes(), Codes()
    lt, lc, lcat, lbr, lnet = [], [], [], [], []
    for o, customer in zip(order_list, order_customer, strict=True):
        for category, brand, cents in o.lines:
            lt.append(o.paid_at)
            lc.append(customer)
            lcat.append(categories.code(category))
            lbr.append(brands.code(brand))
            lnet.append(cents)

    dims = {d: Codes() for d in DIMENSIONS}
    codes = {d: np.zeros(n, np.int64) for d in DIMENSIONS}
    known_from = np.full(n, FAR_FUTURE, np.int64)
    clv, risk = np.zeros(n), np.full(n, np.nan)
    r, f = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i, a in enumerate(attrs):
        s = scores.get(a["customer_id"], {})
        registered = a.get("registered_at")
        known_from[i] = min(first_paid[i], registered if registered is not None else FAR_FUTURE)
        values = {
            "gender": a.get("gender"),
            "age_band": age_band(a.get("birth_date"), today),
            "city_tier": a.get("city_tier"),
            "city": a.get("city"),
            "channel": a.get("channel"),
            "acquisition_month": month_of(int(first_paid[i])) if first_paid[i] < FAR_FUTURE else "none",
            "tier": s.get("tier"),
            "segment": s.get("segment"),
            "lifecycle_stage": s.get("lifecycle_stage"),
            "abc_class": s.get("abc_class"),
        }
        for d, value in values.items():
            codes[d][i] = dims[d].code(value)
        clv[i] = s.get("clv_12m_cents") or 0
        if s.get("churn_risk") is not None:
            risk[i] = s["churn_risk"]
        code = s.get("rfm_code") or ""
        if len(code) >= 2 and code[:2].isdigit():
            r[i], f[i] = int(code[0]), int(code[1])

    line_arrays = _sorted_by(
        np.array(lt, np.int64),
        *(
            np.array(a, dtype)
            for a, dtype in ((lc, np.int64), (lcat, np.int64), (lbr, np.int64), (lnet, np.float64))
        ),
    )

    def segment_of(customer_id: str) -> str:
        found = index.get(customer_id)
        return UNKNOWN if found is None else dims["segment"].labels[codes["segment"][found]]

    next_t, next_from, next_to = _next_categories(order_list, order_customer, categories)
    survey_arrays = _surveys(surveys, complaints, erased)
    move_arrays, segment_codes = _moves(moves, index, erased)
    return Snapshot(
        as_of=now,
        built_at=now,
        customer_ids=[a["customer_id"] for a in attrs],
        codes=codes,
        labels={d: dims[d].labels for d in DIMENSIONS},
        known_from=known_from,
        clv=clv,
        risk=risk,
        r=r,
        f=f,
        order_t=order_t,
        order_customer=order_customer,
        order_net=order_net,
        line_t=line_arrays[0],
        line_customer=line_arrays[1],
        line_category=line_arrays[2],
        line_brand=line_arrays[3],
        line_net=line_arrays[4],
        categories=categories.labels,
        brands=brands.labels,
        cohorts=cohort_matrix(order_t, order_customer, order_net, first_paid, now),
        next_t=next_t,
        next_from=next_from,
        next_to=next_to,
        surveys=survey_arrays[0],
        complaint_categories=survey_arrays[1],
        moves=move_arrays,
        segments=segment_codes,
        warnings=[
            {**w, "segment": segment_of(w["customer_id"])} for w in warnings if w["customer_id"] not in erased
        ],
    )


def erase(s: Snapshot, customer_id: str) -> None:
    """Take the person out of the current snapshot at once (the next build leaves them out
    anyway): no list names them, no per-person figure counts them; their sales stay in the
    shop's totals."""
    try:
        i = s.customer_ids.index(customer_id)
    except ValueError:
        return
    s.customer_ids[i] = ""
    s.known_from[i] = FAR_FUTURE
    s.clv[i], s.risk[i], s.r[i], s.f[i] = 0, np.nan, 0, 0
    s.order_customer[s.order_customer == i] = -1
    s.line_customer[s.line_customer == i] = -1
    keep = s.moves["customer"] != i
    s.moves = {k: v[keep] for k, v in s.moves.items()}
    s.warnings = [w for w in s.warnings if w["customer_id"] != customer_id]


def _next_categories(
    orders: Sequence[OrderRecord], customers: np.ndarray, categories: Codes
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each customer's consecutive paid orders: (time of the earlier order, each category
    in it, each category of the next order), sorted by time."""
    last: dict[int, OrderRecord] = {}
    t, a, b = [], [], []
    for o, customer in zip(orders, customers, strict=True):
        if customer < 0:
            continue
        before = last.get(int(customer))
        if before is not None:
            for x in {c for c, _, _ in before.lines}:
                for y in {c for c, _, _ in o.lines}:
                    t.append(before.paid_at)
                    a.append(categories.code(x))
                    b.append(categories.code(y))
        last[int(customer)] = o
    return _sorted_by(np.array(t, np.int64), np.array(a, np.int64), np.array(b, np.int64))


def _surveys(
    surveys: Iterable[dict[str, Any]], complaints: dict[str, str], erased: set[str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    cats = Codes()
    rows = sorted(
        (s for s in surveys if s["customer_id"] not in erased),
        key=lambda s: (s["submitted_at"], s["survey_id"]),
    )
    out: dict[str, np.ndarray] = {
        "t": np.array([s["submitted_at"] for s in rows], np.int64),
        "csat": np.array([s["kind"] == "csat" for s in rows], bool),
        "recommend": np.array([np.nan if s.get("recommend") is None else s["recommend"] for s in rows]),
        "category": np.array(
            [cats.code(complaints.get(s.get("complaint_id") or "", "none")) for s in rows], np.int64
        ),
    }
    for name in DIMENSION_SCORES:
        out[name] = np.array([s["scores"].get(name, np.nan) for s in rows], np.float64)
    return out, cats.labels


def _moves(
    moves: Iterable[dict[str, Any]], index: dict[str, int], erased: set[str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    segments = Codes()
    rows = sorted(
        (m for m in moves if m["customer_id"] not in erased and m["customer_id"] in index),
        key=lambda m: (index[m["customer_id"]], m["at"]),
    )
    return {
        "customer": np.array([index[m["customer_id"]] for m in rows], np.int64),
        "t": np.array([m["at"] for m in rows], np.int64),
        "from": np.array([segments.code(m["from"]) for m in rows], np.int64),
        "to": np.array([segments.code(m["to"]) for m in rows], np.int64),
    }, segments.labels


def cohort_matrix(
    order_t: np.ndarray, customer: np.ndarray, net: np.ndarray, first_paid: np.ndarray, now: int
) -> dict[str, Any]:
    """Customers by the month of their first purchase (the cohort) and months since it: how
    many bought in that month and their net sales."""
    known = customer >= 0
    if not known.any():
        return {
            "months": np.zeros(0, np.int64),
            "size": np.zeros(0),
            "active": np.zeros((0, 0)),
            "revenue": np.zeros((0, 0)),
        }
    cohort_of = month_index(first_paid[customer[known]])
    since = month_index(order_t[known]) - cohort_of
    first, last = int(cohort_of.min()), int(month_index(np.array([now]))[0])
    rows, cols = last - first + 1, last - first + 1
    row = cohort_of - first
    span = int(since.max()) + 1
    bought = np.unique(customer[known] * span + since)
    bought = np.stack([bought // span, bought % span])
    bought_row = month_index(first_paid[bought[0]]) - first
    active = np.zeros((rows, cols))
    np.add.at(active, (bought_row, bought[1]), 1)
    revenue = np.zeros((rows, cols))
    np.add.at(revenue, (row, since), net[known])
    payers = np.unique(customer[known])
    size = np.bincount(month_index(first_paid[payers]) - first, minlength=rows).astype(float)
    return {"months": np.arange(first, last + 1), "size": size, "active": active, "revenue": revenue}


# --- reports ----------------------------------------------------------------------------------


def spend_in(s: Snapshot, p: Period) -> np.ndarray:
    """Net sales per customer in the period."""
    window = _slice(s.order_t, p)
    customers, net = s.order_customer[window], s.order_net[window]
    keep = customers >= 0
    return np.bincount(customers[keep], weights=net[keep], minlength=s.size)


def composition(s: Snapshot, p: Period, by: tuple[str, ...]) -> dict[str, Any]:
    """Customers known by the period's end (registered or buying), those buying in it, their
    net sales, and average CLV and churn risk, by one dimension or two crossed."""
    spend = spend_in(s, p)
    window = _slice(s.order_t, p)
    buyers = np.zeros(s.size, bool)
    c = s.order_customer[window]
    buyers[c[c >= 0]] = True
    member = s.known_from < p.hi
    key = np.zeros(s.size, np.int64)
    width = 1
    for d in reversed(by):
        key = key + s.codes[d] * width
        width *= max(len(s.labels[d]), 1)
    key, width = key[member], max(width, 1)
    customers = np.bincount(key, minlength=width)
    count_buyers = np.bincount(key, weights=buyers[member], minlength=width)
    revenue = np.bincount(key, weights=spend[member], minlength=width)
    clv = np.bincount(key, weights=s.clv[member], minlength=width)
    scored = ~np.isnan(s.risk[member])
    risk_sum = np.bincount(key[scored], weights=s.risk[member][scored], minlength=width)
    risk_n = np.bincount(key[scored], minlength=width)
    total = float(revenue.sum())
    rows = []
    for k in np.flatnonzero(customers):
        labels, rest = {}, int(k)
        for d in reversed(by):
            size = max(len(s.labels[d]), 1)
            labels[d] = s.labels[d][rest % size]
            rest //= size
        rows.append(
            {
                **{d: labels[d] for d in by},
                "customers": int(customers[k]),
                "buyers": int(count_buyers[k]),
                "revenue_cents": int(round(revenue[k])),
                "revenue_share": round(revenue[k] / total, 4) if total else 0.0,
                "avg_clv_cents": int(round(clv[k] / customers[k])),
                "avg_churn_risk": round(risk_sum[k] / risk_n[k], 4) if risk_n[k] else None,
            }
        )
    rows.sort(key=lambda row: (-row["revenue_cents"], -row["customers"], [str(row[d]) for d in by]))
    return {"by": list(by), "rows": rows, "customers": int(member.sum()), "revenue_cents": int(round(total))}


def pareto(spend: np.ndarray, points: int = 100) -> dict[str, Any]:
    """The cumulative share of revenue made by the top x % of customers (buyers in the
    period, best first), at `points` evenly spaced customer shares, and the ABC classes cut
    the scorer's way (A: the customers making the first 75 % of revenue, B the next 20 %)."""
    paying = np.sort(spend[spend > 0])[::-1]
    if len(paying) == 0:
        return {"buyers": 0, "revenue_cents": 0, "curve": [], "classes": {}, "top_20_percent_share": None}
    cum = np.cumsum(paying) / paying.sum()
    curve = []
    for i in range(1, points + 1):
        upto = max(1, math.ceil(len(paying) * i / points))
        curve.append(
            {"customer_share": round(i / points, 4), "revenue_share": round(float(cum[upto - 1]), 4)}
        )
    a_min, b_min = abc_thresholds(paying)
    classes = {}
    for name, keep in (
        ("A", paying >= a_min),
        ("B", (paying < a_min) & (paying >= b_min)),
        ("C", paying < b_min),
    ):
        classes[name] = {
            "customers": int(keep.sum()),
            "customer_share": round(float(keep.mean()), 4),
            "revenue_cents": int(round(paying[keep].sum())),
            "revenue_share": round(float(paying[keep].sum() / paying.sum()), 4),
            "min_spend_cents": int(round(paying[keep].min())) if keep.any() else None,
        }
    top20 = float(cum[max(1, math.ceil(len(paying) * 0.2)) - 1])
    return {
        "buyers": len(paying),
        "revenue_cents": int(round(paying.sum())),
        "curve": curve,
        "classes": classes,
        "thresholds": {"a_min_cents": int(round(a_min)), "b_min_cents": int(round(b_min))},
        "top_20_percent_share": round(top20, 4),
    }


def contribution(s: Snapshot, p: Period, top: int = TOP_DEFAULT) -> dict[str, Any]:
    spend = spend_in(s, p)
    by_spend = [i for i in np.argsort(-spend, kind="stable")[:top] if spend[i] > 0]
    by_clv = [i for i in np.argsort(-s.clv, kind="stable")[:top] if s.clv[i] > 0]
    return {
        **pareto(spend),
        "top_by_net_spend": [_person(s, i, spend) for i in by_spend],
        "top_by_clv": [_person(s, i, spend) for i in by_clv],
    }


def _person(s: Snapshot, i: int, spend: np.ndarray) -> dict[str, Any]:
    return {
        "customer_id": s.customer_ids[i],
        "net_spend_cents": int(round(spend[i])),
        "clv_12m_cents": int(round(s.clv[i])),
        "segment": s.labels["segment"][s.codes["segment"][i]],
        "abc_class": s.labels["abc_class"][s.codes["abc_class"][i]],
    }


def retention(s: Snapshot, p: Period) -> dict[str, Any]:
    """Cohorts (month of the first purchase) starting in the period, by months since then:
    the share of the cohort buying in that month, and net sales per cohort customer."""
    m = s.cohorts
    rows = []
    for r, month in enumerate(m["months"]):
        start = int(np.datetime64(month_label(int(month)) + "-01", "s").astype(np.int64))
        if not (p.lo <= start < p.hi) or m["size"][r] == 0:
            continue
        size = m["size"][r]
        span = len(m["months"]) - r
        rows.append(
            {
                "cohort": month_label(int(month)),
                "customers": int(size),
                "retention": [round(float(v / size), 4) for v in m["active"][r, :span]],
                "revenue_per_customer_cents": [int(round(v / size)) for v in m["revenue"][r, :span]],
            }
        )
    return {"cohorts": rows, "average": _average_retention(rows)}


def _average_retention(rows: list[dict[str, Any]]) -> list[float]:
    """Months since the first purchase: the share buying, weighted by cohort size, over the
    cohorts old enough to have that month."""
    width = max((len(r["retention"]) for r in rows), default=0)
    out = []
    for k in range(width):
        have = [r for r in rows if len(r["retention"]) > k]
        size = sum(r["customers"] for r in have)
        out.append(round(sum(r["retention"][k] * r["customers"] for r in have) / size, 4) if size else 0.0)
    return out


def rfm_grid(s: Snapshot, p: Period) -> dict[str, Any]:
    """Customers and their net sales in the period in each cell of R (rows) by F (columns),
    the live profiles' scores 1 to 5."""
    spend = spend_in(s, p)
    scored = (s.r > 0) & (s.f > 0) & (s.known_from < p.hi)
    cell = (s.r[scored] - 1) * 5 + (s.f[scored] - 1)
    customers = np.bincount(cell, minlength=25).reshape(5, 5)
    revenue = np.bincount(cell, weights=spend[scored], minlength=25).reshape(5, 5)
    return {
        "rows": "r 1..5",
        "columns": "f 1..5",
        "customers": customers.astype(int).tolist(),
        "revenue_cents": np.round(revenue).astype(int).tolist(),
        "cells": [
            {
                "r": r + 1,
                "f": f + 1,
                "customers": int(customers[r, f]),
                "revenue_cents": int(round(revenue[r, f])),
            }
            for r in range(5)
            for f in range(5)
        ],
    }


def segment_at(s: Snapshot, t: int) -> np.ndarray:
    """Each customer's segment code at time t (-1 when none known): the last move's target
    at or before t, else the first later move's origin."""
    m = s.moves
    out = np.full(s.size, -1, np.int64)
    if len(m["t"]) == 0:
        return out
    later = m["t"] > t
    # moves are sorted by (customer, time): the first later move of each customer, written
    # first and then overwritten by the last earlier move
    rev = np.flatnonzero(later)[::-1]
    out[m["customer"][rev]] = m["from"][rev]
    early = np.flatnonzero(~later)
    out[m["customer"][early]] = m["to"][early]
    return out


def movement(s: Snapshot, start: int, end: int) -> dict[str, Any]:
    """Customers by their segment at `start` (rows) and at `end` (columns)."""
    a, b = segment_at(s, start), segment_at(s, end)
    keep = (a >= 0) & (b >= 0)
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for x, y in zip(a[keep].tolist(), b[keep].tolist(), strict=True):
        counts[(x, y)] += 1
    matrix = [
        {"from": s.segments[x], "to": s.segments[y], "customers": n}
        for (x, y), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return {
        "from_date": _iso(start),
        "to_date": _iso(end),
        "customers": int(keep.sum()),
        "moved": sum(n for (x, y), n in counts.items() if x != y),
        "matrix": matrix,
    }


def churn(s: Snapshot, p: Period) -> dict[str, Any]:
    """Warnings opened and closed in the period by reason and by segment, value at risk
    (CLV times risk of those still open at the period's end), value lost (CLV of those closed
    as lost), and outcomes by the actions taken."""
    opened_reason: dict[str, int] = defaultdict(int)
    opened_segment: dict[str, int] = defaultdict(int)
    closed_reason: dict[str, int] = defaultdict(int)
    closed_segment: dict[str, int] = defaultdict(int)
    outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    opened = closed = at_risk = lost = 0
    open_at_end = 0
    for w in s.warnings:
        segment = w.get("segment") or UNKNOWN
        if p.lo <= w["warned_at"] < p.hi:
            opened += 1
            opened_segment[segment] += 1
            for reason in w["reasons"]:
                opened_reason[reason] += 1
        closed_at = w.get("closed_at")
        if closed_at is not None and p.lo <= closed_at < p.hi:
            closed += 1
            closed_segment[segment] += 1
            for reason in w["reasons"]:
                closed_reason[reason] += 1
            if w.get("outcome") == "lost":
                lost += w["clv_cents"]
            actions = "+".join(sorted(set(w.get("actions") or []))) or "none"
            outcomes[actions][w.get("outcome") or "closed"] += 1
        if w["warned_at"] < p.hi and (closed_at is None or closed_at >= p.hi):
            open_at_end += 1
            at_risk += round(w["clv_cents"] * w["risk"])
    return {
        "opened": opened,
        "closed": closed,
        "open_at_end": open_at_end,
        "opened_by_reason": dict(sorted(opened_reason.items())),
        "opened_by_segment": dict(sorted(opened_segment.items())),
        "closed_by_reason": dict(sorted(closed_reason.items())),
        "closed_by_segment": dict(sorted(closed_segment.items())),
        "value_at_risk_cents": int(at_risk),
        "value_lost_cents": int(lost),
        "outcomes_by_action": {k: dict(v) for k, v in sorted(outcomes.items())},
    }


def products(s: Snapshot, p: Period, by: str | None) -> dict[str, Any]:
    """Net sales by category and by brand, each optionally split by a customer dimension."""
    w = _slice(s.line_t, p)
    customer, net = s.line_customer[w], s.line_net[w]
    out: dict[str, Any] = {"by": by}
    for name, codes, labels in (
        ("categories", s.line_category[w], s.categories),
        ("brands", s.line_brand[w], s.brands),
    ):
        sales = np.bincount(codes, weights=net, minlength=len(labels))
        buyers = _distinct_per(codes, customer, len(labels), s.size)
        rows = [
            {
                name[:-1] if name == "brands" else "category": labels[k],
                "net_sales_cents": int(round(sales[k])),
                "buyers": int(buyers[k]),
            }
            for k in np.argsort(-sales, kind="stable")
            if sales[k] != 0 or buyers[k]
        ]
        if by is not None:
            dim = np.where(customer >= 0, s.codes[by][np.maximum(customer, 0)], -1)
            split: dict[int, dict[str, int]] = defaultdict(dict)
            known = dim >= 0
            width = max(len(s.labels[by]), 1)
            cross = np.bincount(
                codes[known] * width + dim[known], weights=net[known], minlength=len(labels) * width
            )
            for k in np.flatnonzero(cross):
                split[int(k) // width][s.labels[by][int(k) % width]] = int(round(cross[k]))
            for row, k in zip(rows, [labels.index(r[next(iter(r))]) for r in rows], strict=True):
                row[f"by_{by}"] = split.get(k, {})
        out[name] = rows
    out["net_sales_cents"] = int(round(net.sum()))
    return out


def _distinct_per(codes: np.ndarray, customer: np.ndarray, width: int, customers: int) -> np.ndarray:
    """How many different customers each code has: marks in a code x customer grid when it is
    small enough (one pass, no sort), else a unique over combined keys."""
    keep = customer >= 0
    if width * customers <= 50_000_000:
        seen = np.zeros((width, customers), bool)
        seen[codes[keep], customer[keep]] = True
        return seen.sum(axis=1)
    pairs = np.unique(codes[keep] * customers + customer[keep])
    return np.bincount(pairs // customers, minlength=width)


def next_categories(s: Snapshot, p: Period, category: str) -> dict[str, Any]:
    """After buying in `category` (an order in the period), what the same customer's next
    order held: customers' transitions counted per category of the next order."""
    if category not in s.categories:
        return {"category": category, "transitions": 0, "next": []}
    code = s.categories.index(category)
    w = _slice(s.next_t, p)
    mine = s.next_from[w] == code
    counts = np.bincount(s.next_to[w][mine], minlength=len(s.categories))
    total = int(counts.sum())
    return {
        "category": category,
        "transitions": total,
        "next": [
            {"category": s.categories[k], "count": int(counts[k]), "share": round(counts[k] / total, 4)}
            for k in np.argsort(-counts, kind="stable")
            if counts[k]
        ],
    }


def satisfaction(s: Snapshot, p: Period) -> dict[str, Any]:
    """The five dimensions and overall (general surveys), CSAT (surveys after a complaint)
    and NPS (recommend 0-10), by month and by complaint category."""
    sv = s.surveys
    w = _slice(sv["t"], p)
    months = month_index(sv["t"][w]) if len(sv["t"][w]) else np.zeros(0, np.int64)
    by_month = []
    for m in np.unique(months):
        pick = np.flatnonzero(months == m) + (w.start or 0)
        by_month.append({"month": month_label(int(m)), **_survey_figures(sv, pick)})
    by_category = []
    cats = sv["category"][w]
    for k in np.unique(cats):
        pick = np.flatnonzero(cats == k) + (w.start or 0)
        by_category.append(
            {"complaint_category": s.complaint_categories[int(k)], **_survey_figures(sv, pick)}
        )
    return {
        **_survey_figures(sv, np.arange(w.start or 0, w.stop or 0)),
        "by_month": by_month,
        "by_complaint_category": by_category,
    }


def _survey_figures(sv: dict[str, np.ndarray], pick: np.ndarray) -> dict[str, Any]:
    csat = sv["csat"][pick]
    general = ~csat
    dims = {}
    for name in DIMENSION_SCORES:
        values = sv[name][pick][general]
        values = values[~np.isnan(values)]
        dims[name] = round(float(values.mean()), 3) if len(values) else None
    csat_scores = sv["overall"][pick][csat]
    csat_scores = csat_scores[~np.isnan(csat_scores)]
    return {
        "surveys": int(len(pick)),
        "dimensions": dims,
        "csat": round(float(csat_scores.mean()), 3) if len(csat_scores) else None,
        "csat_surveys": int(csat.sum()),
        "nps": nps([int(r) for r in sv["recommend"][pick] if not np.isnan(r)]),
    }


def monthly_sales(
    t: np.ndarray, net: np.ndarray, codes: np.ndarray | None = None
) -> dict[Any, dict[tuple[int, int], int]]:
    """Net sales by (year, month), per code (None: the shop): one bincount over month x code."""
    out: dict[Any, dict[tuple[int, int], int]] = defaultdict(dict)
    if len(t) == 0:
        return out
    months = month_index(t)
    first = int(months.min())
    keys = np.zeros(len(t), np.int64) if codes is None else codes
    width = int(keys.max()) + 1
    span = int(months.max()) - first + 1
    sums = np.bincount((months - first) * width + keys, weights=net, minlength=span * width).reshape(
        span, width
    )
    for row, col in zip(*np.nonzero(sums), strict=True):
        month = first + int(row)
        key = None if codes is None else int(col)
        out[key][(1970 + month // 12, month % 12 + 1)] = int(round(sums[row, col]))
    return out


def forecast(monthly: dict[tuple[int, int], int], horizon: int = 6) -> dict[str, Any]:
    """Next months' net sales from a linear trend on the deseasonalised series times the
    seasonal index; its error measured by holding out the last complete year (fit on what
    came before, forecast that year, compare)."""
    if not monthly:
        return {"next": [], "holdout": None}
    keys = sorted(monthly)
    first = keys[0][0] * 12 + keys[0][1] - 1
    last = keys[-1][0] * 12 + keys[-1][1] - 1
    series = np.zeros(last - first + 1)
    for (y, m), cents in monthly.items():
        series[y * 12 + m - 1 - first] = cents
    prediction = _trend_seasonal(series, first, horizon)
    holdout = None
    if len(series) >= 24:
        train, actual = series[:-12], series[-12:]
        predicted = _trend_seasonal(train, first, 12)
        holdout = {
            "months": [month_label(last - 11 + i - 1970 * 12) for i in range(12)],
            "actual_cents": [int(round(v)) for v in actual],
            "predicted_cents": [int(round(v)) for v in predicted],
            "mape": round(float(np.mean(np.abs(predicted - actual) / np.maximum(np.abs(actual), 1))), 4),
        }
    return {
        "next": [
            {"month": month_label(last + 1 + i - 1970 * 12), "net_sales_cents": int(round(v))}
            for i, v in enumerate(prediction)
        ],
        "holdout": holdout,
    }


def _trend_seasonal(series: np.ndarray, first: int, horizon: int) -> np.ndarray:
    """series[i] is month `first + i` (months since year 0). The seasonal index is each
    calendar month's average ratio to the centred 12-month moving average (so a trend does
    not leak into it; with less than two years, the ratio to the overall mean), normalised
    to average 1; the trend a straight line through the deseasonalised series."""
    calendar = (np.arange(len(series)) + first) % 12
    index = np.ones(12)
    if len(series) >= 24:
        weights = np.r_[0.5, np.ones(11), 0.5] / 12
        centred = np.convolve(series, weights, mode="valid")  # months 6 .. len-7
        ratios = series[6 : 6 + len(centred)] / np.where(centred > 0, centred, np.nan)
        months = calendar[6 : 6 + len(centred)]
        for m in range(12):
            have = ratios[(months == m) & ~np.isnan(ratios)]
            if len(have):
                index[m] = have.mean()
    else:
        mean = series.mean() if len(series) else 0.0
        for m in range(12):
            have = series[calendar == m]
            if len(have) and mean:
                index[m] = have.mean() / mean
    index = np.where(index > 0, index, 1.0)
    index = index / index.mean()
    flat = series / index[calendar]
    x = np.arange(len(series))
    slope, intercept = (
        np.polyfit(x, flat, 1) if len(series) >= 2 else (0.0, float(flat[0]) if len(flat) else 0.0)
    )
    ahead = np.arange(len(series), len(series) + horizon)
    return np.maximum((intercept + slope * ahead) * index[(ahead + first) % 12], 0.0)


def seasonality(s: Snapshot, p: Period, horizon: int = 6) -> dict[str, Any]:
    """The seasonal index shop-wide and per category, and the shop's forecast."""
    w = _slice(s.order_t, p)
    shop = monthly_sales(s.order_t[w], s.order_net[w]).get(None, {})
    lw = _slice(s.line_t, p)
    per_category = monthly_sales(s.line_t[lw], s.line_net[lw], s.line_category[lw])
    return {
        "shop": seasonal_index(shop),
        "by_category": {s.categories[k]: seasonal_index(v)["index"] for k, v in sorted(per_category.items())},
        "forecast": forecast(shop, horizon),
    }


# --- tables for CSV ----------------------------------------------------------------------------


def table(report: str, body: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The report's main table as CSV columns and rows."""
    if report == "composition":
        columns = [
            *body["by"],
            "customers",
            "buyers",
            "revenue_cents",
            "revenue_share",
            "avg_clv_cents",
            "avg_churn_risk",
        ]
        return columns, [[row[c] for c in columns] for row in body["rows"]]
    if report == "contribution":
        return ["customer_share", "revenue_share"], [
            [p["customer_share"], p["revenue_share"]] for p in body["curve"]
        ]
    if report == "retention":
        width = max((len(c["retention"]) for c in body["cohorts"]), default=0)
        columns = ["cohort", "customers", *(f"m{k}" for k in range(width))]
        return columns, [[c["cohort"], c["customers"], *c["retention"]] for c in body["cohorts"]]
    if report == "rfm":
        return ["r", "f", "customers", "revenue_cents"], [
            [c["r"], c["f"], c["customers"], c["revenue_cents"]] for c in body["cells"]
        ]
    if report == "movement":
        return ["from", "to", "customers"], [[m["from"], m["to"], m["customers"]] for m in body["matrix"]]
    if report == "churn":
        rows = [["opened_by_reason", k, v] for k, v in body["opened_by_reason"].items()]
        rows += [["opened_by_segment", k, v] for k, v in body["opened_by_segment"].items()]
        rows += [["closed_by_reason", k, v] for k, v in body["closed_by_reason"].items()]
        rows += [["closed_by_segment", k, v] for k, v in body["closed_by_segment"].items()]
        for action, outcomes in body["outcomes_by_action"].items():
            rows += [[f"outcome_after:{action}", k, v] for k, v in outcomes.items()]
        return ["table", "key", "count"], rows
    if report == "products":
        rows = [["category", r["category"], r["net_sales_cents"], r["buyers"]] for r in body["categories"]]
        rows += [["brand", r["brand"], r["net_sales_cents"], r["buyers"]] for r in body["brands"]]
        return ["kind", "name", "net_sales_cents", "buyers"], rows
    if report == "next_categories":
        return ["category", "count", "share"], [[n["category"], n["count"], n["share"]] for n in body["next"]]
    if report == "satisfaction":
        columns = ["month", "surveys", *DIMENSION_SCORES, "csat", "nps"]
        return columns, [
            [m["month"], m["surveys"], *(m["dimensions"][d] for d in DIMENSION_SCORES), m["csat"], m["nps"]]
            for m in body["by_month"]
        ]
    if report == "seasonality":
        rows = [["shop", month, value] for month, value in body["shop"]["index"].items()]
        for category, index in body["by_category"].items():
            rows += [[category, month, value] for month, value in index.items()]
        return ["series", "month", "index"], rows
    raise ReportsError(f"no table for {report!r}")
