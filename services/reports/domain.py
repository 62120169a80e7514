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
from services.profiles.domain import seasonal_index
from services.scoring.population import abc_thresholds

UNKNOWN = "unknown"
NOT_YET = "none"  # a segment move's origin for who was not a customer yet
DIMENSIONS = REPORT_DIMENSIONS
DIMENSION_SCORES = ("website", "product", "payment", "service", "logistics", "overall")
TOP_DEFAULT = 20
HORIZON_DEFAULT = 6
FAR_PAST, FAR_FUTURE = -(1 << 62), 1 << 62


class ReportsError(RuleBroken):
    """A report was asked for in a way it cannot answer (unknown dimension, inverted period)."""


# --- request input -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """[start, end) in epoch seconds; None leaves a side open. `name`: one of PERIODS, its
    bounds taken from the snapshot's as_of (resolve)."""

    start: int | None = None
    end: int | None = None
    name: str | None = None

    @property
    def lo(self) -> int:
        return FAR_PAST if self.start is None else self.start

    @property
    def hi(self) -> int:
        return FAR_FUTURE if self.end is None else self.end

    def shown(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "from": None if self.start is None else iso(self.start),
            "to": None if self.end is None else iso(self.end),
        }


# The periods managers ask for every week: their answers are computed when the snapshot is built.
PERIODS = (
    "all_time",
    "last_30_days",
    "last_90_days",
    "last_365_days",
    "this_month",
    "last_month",
    "this_quarter",
    "last_quarter",
    "this_year",
    "last_year",
)


def period(since: datetime | None, until: datetime | None, name: str | None = None) -> Period:
    if name is not None:
        if since is not None or until is not None:
            raise ReportsError("either a named period or from and to, not both", field="period")
        if name not in PERIODS:
            raise ReportsError(f"unknown period {name!r}; one of {', '.join(PERIODS)}", field="period")
        return Period(name=name)
    if since is not None and until is not None and until < since:
        raise ReportsError(
            f"the period ends ({until.isoformat()}) before it starts ({since.isoformat()})", field="to"
        )
    return Period(
        None if since is None else int(since.timestamp()), None if until is None else int(until.timestamp())
    )


def resolve(p: Period, as_of: int) -> Period:
    """A named period's bounds on the day of `as_of` (UTC): the last N days end open at
    as_of; a month, quarter or year is whole, the current one open at its end."""
    if p.name is None:
        return p
    day = datetime.fromtimestamp(as_of, UTC).date()
    if p.name == "all_time":
        return p
    if p.name.startswith("last_") and p.name.endswith("_days"):
        return Period(as_of - int(p.name.split("_")[1]) * 86400, None, p.name)
    unit = p.name.split("_")[1]
    months = {"month": 1, "quarter": 3, "year": 12}[unit]
    current = (day.year * 12 + day.month - 1) // months * months  # months since year 0
    start = current - months if p.name.startswith("last_") else current

    def begins(m: int) -> int:
        return int(datetime(m // 12, m % 12 + 1, 1, tzinfo=UTC).timestamp())

    return Period(begins(start), begins(start + months) if p.name.startswith("last_") else None, p.name)


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

    def codes(self, labels: Sequence[str | None]) -> np.ndarray:
        """The codes of many labels at once (a dictionary's speed, not a call per label)."""
        first_seen: dict[str | None, int] = {}
        raw = np.fromiter((first_seen.setdefault(x, len(first_seen)) for x in labels), np.int64, len(labels))
        return np.array([self.code(x) for x in first_seen], np.int64)[raw] if len(raw) else raw


def month_starts(first: int, last: int) -> np.ndarray:
    """The epoch second each month from `first` to `last` (months since 1970-01) begins."""
    return np.arange(first, last + 1).astype("datetime64[M]").astype("datetime64[s]").astype(np.int64)


@dataclass
class Timeline:
    """Rows sorted by time, with the calendar months they fall in: what every cube over the
    same rows shares."""

    t: np.ndarray
    starts: np.ndarray  # month boundaries covering every row: starts[0] <= t < starts[-1]
    rows_at: np.ndarray  # the first row at or after each boundary
    slot: np.ndarray  # each row's month (index into starts)

    @classmethod
    def of(cls, t: np.ndarray, starts: np.ndarray) -> Timeline:
        return cls(t, starts, np.searchsorted(t, starts, "left"), np.searchsorted(starts, t, "right") - 1)

    @property
    def months(self) -> int:
        return len(self.starts) - 1

    def bounds(self, p: Period) -> tuple[int, int, int, int]:
        """Rows [lo, hi) of the period and its whole months [a, b)."""
        lo, hi = (int(np.searchsorted(self.t, v, "left")) for v in (p.lo, p.hi))
        a = int(np.searchsorted(self.starts, p.lo, "left"))
        b = int(np.searchsorted(self.starts, p.hi, "right")) - 1
        return lo, hi, a, b


@dataclass(frozen=True)
class Keys:
    """A cube's key of each row: its code (-1: counted nowhere), or, crossed with a customer
    dimension, code x width + the row's customer's code in that dimension (-1 without a
    customer). A class, not a closure, so a snapshot pickles out of its builder process, and
    computed when asked so several cubes over the same rows keep no copies."""

    codes: np.ndarray
    customer: np.ndarray | None = None
    customer_codes: np.ndarray | None = None
    width: int = 1

    def __call__(self, rows: Any) -> np.ndarray:
        codes = self.codes[rows]
        if self.customer is None or self.customer_codes is None:
            return codes
        customer = self.customer[rows]
        crossed = codes * self.width + self.customer_codes[np.maximum(customer, 0)]
        return np.where((customer >= 0) & (codes >= 0), crossed, -1)


class Cube:
    """Sums of a weight per key (a customer, a category, a category crossed with a segment...)
    for every calendar month, kept as running totals over the months: a period's sums are one
    subtraction for its whole months plus the rows of the partial months at either end, found
    by binary search in the rows' sorted times. Any period costs about two months of rows, not
    the whole history."""

    def __init__(self, rows: Timeline, key_at: Keys, weights: np.ndarray | None, width: int) -> None:
        self.rows, self.key_at, self.weights, self.width = rows, key_at, weights, max(width, 1)
        keys = key_at(slice(None))
        keep = keys >= 0
        monthly = np.bincount(
            rows.slot[keep] * self.width + keys[keep],
            weights=None if weights is None else weights[keep],
            minlength=rows.months * self.width,
        ).reshape(rows.months, self.width)
        self.prefix = np.zeros((rows.months + 1, self.width))
        np.cumsum(monthly, axis=0, out=self.prefix[1:])

    def _rows(self, lo: int, hi: int, by_month: bool = False) -> np.ndarray:
        size = self.rows.months * self.width if by_month else self.width
        if hi <= lo:
            return np.zeros(size)
        keys = self.key_at(slice(lo, hi))
        keep = keys >= 0
        weights = None if self.weights is None else self.weights[lo:hi][keep]
        keys = keys[keep]
        if by_month:
            keys = self.rows.slot[lo:hi][keep] * self.width + keys
        return np.bincount(keys, weights=weights, minlength=size)

    def sums(self, p: Period) -> np.ndarray:
        """Each key's total over the period."""
        lo, hi, a, b = self.rows.bounds(p)
        if a >= b:
            return self._rows(lo, hi)
        rows_at = self.rows.rows_at
        head, tail = self._rows(lo, int(rows_at[a])), self._rows(int(rows_at[b]), hi)
        return self.prefix[b] - self.prefix[a] + head + tail

    def monthly(self, p: Period) -> np.ndarray:
        """Each month's totals per key within the period (months x keys)."""
        lo, hi, a, b = self.rows.bounds(p)
        shape = (self.rows.months, self.width)
        if a >= b:
            return self._rows(lo, hi, by_month=True).reshape(shape)
        out = np.zeros(shape)
        out[a:b] = np.diff(self.prefix[a : b + 1], axis=0)
        rows_at = self.rows.rows_at
        for edge in ((lo, int(rows_at[a])), (int(rows_at[b]), hi)):
            out += self._rows(*edge, by_month=True).reshape(shape)
        return out

    def drop(self, rows: np.ndarray) -> None:
        """Take these rows out of the running totals (an erased person's); their keys must
        turn -1 right after, so the partial months leave them out too."""
        for row, key in zip(rows.tolist(), self.key_at(rows).tolist(), strict=True):
            if key >= 0:
                weight = 1.0 if self.weights is None else self.weights[row]
                self.prefix[self.rows.slot[row] + 1 :, key] -= weight


class Buyers:
    """How many different customers have rows of each code (bought in a category, say) in
    any period: the rows whose same customer's previous row with that code came before the
    period. Whole months are counted from a table of rows by their month and the month of
    their previous row (running totals both ways); only the partial months' rows, and the
    rows whose previous one fell in the period's first partial month, are looked at."""

    def __init__(
        self, rows: Timeline, codes: np.ndarray, customer: np.ndarray, previous: np.ndarray, width: int
    ) -> None:
        self.rows, self.codes, self.customer, self.previous = rows, codes, customer, previous
        self.width = max(width, 1)
        months = rows.months
        # 0: no previous row in any month (or none at all); m + 1: the previous row's month m
        self.previous_slot = np.searchsorted(rows.starts, previous, "right")
        self.by_previous = np.argsort(previous, kind="stable")
        self.previous_sorted = previous[self.by_previous]
        keep = customer >= 0
        counts = np.bincount(
            ((rows.slot * (months + 1) + self.previous_slot) * self.width + codes)[keep],
            minlength=months * (months + 1) * self.width,
        ).reshape(months, months + 1, self.width)
        # table[j, x]: rows in months before j whose previous row's slot is at most x
        self.table = np.zeros((months + 1, months + 1, self.width))
        np.cumsum(np.cumsum(counts, axis=0), axis=1, out=self.table[1:])

    def _scan(self, rows: np.ndarray | slice, lo: int) -> np.ndarray:
        first = (self.previous[rows] < lo) & (self.customer[rows] >= 0)
        return np.bincount(self.codes[rows][first], minlength=self.width)

    def count(self, p: Period) -> np.ndarray:
        lo, hi, a, b = self.rows.bounds(p)
        if a >= b:
            return self._scan(slice(lo, hi), p.lo)
        starts, rows_at = self.rows.starts, self.rows.rows_at
        out = self._scan(slice(lo, int(rows_at[a])), p.lo) + self._scan(slice(int(rows_at[b]), hi), p.lo)
        exact = p.lo == starts[a]
        x = a if exact else max(a - 1, 0)  # whole months: previous rows in months before x
        out = out + self.table[b, x] - self.table[a, x]
        if not exact and a >= 1:  # and those whose previous row is in [month a - 1's start, lo)
            span = np.searchsorted(self.previous_sorted, [starts[a - 1], p.lo], "left")
            late = self.by_previous[span[0] : span[1]]
            late = late[(self.rows.slot[late] >= a) & (self.rows.slot[late] < b)]
            out = out + self._scan(late, p.lo)
        return out

    def drop(self, rows: np.ndarray) -> None:
        """Take these rows out (an erased person's); their customer must turn -1 right after."""
        for row in rows.tolist():
            slot, previous = int(self.rows.slot[row]), int(self.previous_slot[row])
            self.table[slot + 1 :, previous:, self.codes[row]] -= 1


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
    buyers: dict[str, Buyers]  # distinct customers per category and per brand
    categories: list[str]
    brands: list[str]
    cubes: dict[str, Cube]  # spend and orders per customer, sales of the shop, per category, per brand
    splits: dict[tuple[str, str], Cube]  # (categories|brands, dimension): sales per code x dimension
    cohorts: dict[str, Any]
    next_t: np.ndarray  # sorted by (category before, time)
    next_from: np.ndarray
    next_to: np.ndarray
    next_offsets: np.ndarray  # where each category's transitions start in the arrays above
    surveys: dict[str, np.ndarray]
    complaint_categories: list[str]
    moves: dict[str, np.ndarray]
    warnings: dict[str, np.ndarray]
    warning_labels: dict[str, list[str]]
    # the answers for the common periods, computed with the snapshot (by the service's table)
    answers: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    build_seconds: dict[str, float] = field(default_factory=dict)  # reading, aggregating, answering

    @property
    def size(self) -> int:
        return len(self.customer_ids)

    @property
    def segments(self) -> list[str]:
        return self.labels["segment"]

    def freshness(self) -> dict[str, Any]:
        return {
            "as_of": iso(self.as_of),
            "built_at": iso(self.built_at),
            "customers": self.size,
            "orders": len(self.order_t),
            "build_seconds": self.build_seconds,
        }


NO_EARLIER = np.iinfo(np.int64).min


def iso(epoch: int) -> str:
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
    order_customer = np.fromiter((at(o.customer_id) for o in order_list), np.int64, len(order_list))
    for customer_id in scores:
        at(customer_id)
    n = len(attrs)

    order_t = np.fromiter((o.paid_at for o in order_list), np.int64, len(order_list))
    order_net = np.fromiter((o.net_cents for o in order_list), np.float64, len(order_list))
    first_paid = np.full(n, FAR_FUTURE, np.int64)
    known = order_customer >= 0
    np.minimum.at(first_paid, order_customer[known], order_t[known])

    categories, brands = Codes(), Codes()
    per_order = np.fromiter((len(o.lines) for o in order_list), np.int64, len(order_list))
    line_category_labels, line_brand_labels, line_cents = (
        zip(*(line for o in order_list for line in o.lines), strict=True) if per_order.sum() else ((), (), ())
    )
    line_order = np.repeat(np.arange(len(order_list)), per_order)
    line_t = order_t[line_order]  # orders are in time order, so their lines are too
    line_customer = order_customer[line_order]
    line_category = categories.codes(line_category_labels)
    line_brand = brands.codes(line_brand_labels)
    line_net = np.array(line_cents, np.float64)

    dims = {d: Codes() for d in DIMENSIONS}
    codes = {d: np.zeros(n, np.int64) for d in DIMENSIONS}
    known_from = np.full(n, FAR_FUTURE, np.int64)
    clv, risk = np.zeros(n), np.full(n, np.nan)
    r, f = np.zeros(n, np.int64), np.zeros(n, np.int64)
    months_seen: dict[int, str] = {}
    for i, a in enumerate(attrs):
        s = scores.get(a["customer_id"], {})
        registered = a.get("registered_at")
        known_from[i] = min(first_paid[i], registered if registered is not None else FAR_FUTURE)
        first = int(first_paid[i])
        if first < FAR_FUTURE and first // 86400 not in months_seen:
            months_seen[first // 86400] = month_of(first)
        values = {
            "gender": a.get("gender"),
            "age_band": age_band(a.get("birth_date"), today),
            "city_tier": a.get("city_tier"),
            "city": a.get("city"),
            "channel": a.get("channel"),
            "acquisition_month": months_seen[first // 86400] if first < FAR_FUTURE else "none",
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

    next_t, next_from, next_to = _next_categories(order_t, order_customer, line_order, line_category)
    survey_arrays = _surveys(surveys, complaints, erased)
    move_arrays = _moves(moves, index, erased, dims["segment"])
    warning_arrays, warning_labels = _warnings(warnings, index, erased, codes["segment"])
    labels = {d: dims[d].labels for d in DIMENSIONS}  # every code is given by now

    span = month_index(
        np.array([order_t.min() if len(order_t) else now, now, order_t.max() if len(order_t) else now])
    )
    starts = month_starts(int(span.min()), int(span.max()) + 1)
    order_rows, line_rows = Timeline.of(order_t, starts), Timeline.of(line_t, starts)
    cubes = {
        "spend": Cube(order_rows, Keys(order_customer), order_net, n),
        "orders": Cube(order_rows, Keys(order_customer), None, n),
        "shop": Cube(order_rows, Keys(np.zeros(len(order_t), np.int64)), order_net, 1),
        "categories": Cube(line_rows, Keys(line_category), line_net, len(categories.labels)),
        "brands": Cube(line_rows, Keys(line_brand), line_net, len(brands.labels)),
    }
    splits = {
        (kind, d): Cube(
            line_rows,
            Keys(line_codes, line_customer, codes[d], max(len(labels[d]), 1)),
            line_net,
            len(kind_labels) * max(len(labels[d]), 1),
        )
        for kind, line_codes, kind_labels in (
            ("categories", line_category, categories.labels),
            ("brands", line_brand, brands.labels),
        )
        for d in DIMENSIONS
    }
    next_order = np.lexsort((next_t, next_from))
    next_from = next_from[next_order]
    return Snapshot(
        as_of=now,
        built_at=now,
        customer_ids=[a["customer_id"] for a in attrs],
        codes=codes,
        labels=labels,
        known_from=known_from,
        clv=clv,
        risk=risk,
        r=r,
        f=f,
        order_t=order_t,
        order_customer=order_customer,
        order_net=order_net,
        line_t=line_t,
        line_customer=line_customer,
        line_category=line_category,
        line_brand=line_brand,
        line_net=line_net,
        buyers={
            name: Buyers(line_rows, codes, line_customer, _previous_same(line_t, line_customer, codes), width)
            for name, codes, width in (
                ("categories", line_category, len(categories.labels)),
                ("brands", line_brand, len(brands.labels)),
            )
        },
        categories=categories.labels,
        brands=brands.labels,
        cubes=cubes,
        splits=splits,
        cohorts=cohort_matrix(order_t, order_customer, order_net, first_paid, now),
        next_t=next_t[next_order],
        next_from=next_from,
        next_to=next_to[next_order],
        next_offsets=np.searchsorted(next_from, np.arange(len(categories.labels) + 1), "left"),
        surveys=survey_arrays[0],
        complaint_categories=survey_arrays[1],
        moves=move_arrays,
        warnings=warning_arrays,
        warning_labels=warning_labels,
    )


def _previous_same(t: np.ndarray, customer: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """For each row (in time order), the time of the same customer's previous row with the
    same code, NO_EARLIER for their first."""
    width = int(codes.max()) + 1 if len(codes) else 1
    pair = customer * width + codes
    order = np.argsort(pair, kind="stable")  # by pair, then time (the rows are in time order)
    pair, times = pair[order], t[order]
    same = np.r_[False, pair[1:] == pair[:-1]]
    previous = np.empty(len(t), np.int64)
    previous[order] = np.where(same, np.r_[NO_EARLIER, times[:-1]], NO_EARLIER)
    return previous


def erase(s: Snapshot, customer_id: str) -> None:
    """Take the person out of the current snapshot at once (the next build leaves them out
    anyway): no list names them, no per-person figure counts them; their sales stay in the
    shop's totals. The answers computed with the snapshot go (they are computed again when
    asked)."""
    try:
        i = s.customer_ids.index(customer_id)
    except ValueError:
        return
    orders, lines = np.flatnonzero(s.order_customer == i), np.flatnonzero(s.line_customer == i)
    for name in ("spend", "orders"):
        s.cubes[name].drop(orders)
    for cube in s.splits.values():
        cube.drop(lines)
    for buyers in s.buyers.values():
        buyers.drop(lines)
    s.customer_ids[i] = ""
    s.known_from[i] = FAR_FUTURE
    s.clv[i], s.risk[i], s.r[i], s.f[i] = 0, np.nan, 0, 0
    s.order_customer[orders] = -1
    s.line_customer[lines] = -1
    keep = s.moves["customer"] != i
    s.moves = {k: v[keep] for k, v in s.moves.items()}
    keep = s.warnings["customer"] != i
    s.warnings = {k: v[keep] for k, v in s.warnings.items()}
    s.answers.clear()


def _next_categories(
    order_t: np.ndarray, customer: np.ndarray, line_order: np.ndarray, line_category: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each customer's consecutive paid orders (in time order): the time of the earlier
    order, each category in it, each category of the next order."""
    by_customer = np.argsort(customer, kind="stable")  # each customer's orders, in time order
    previous = np.full(len(order_t), -1, np.int64)
    same = (customer[by_customer][1:] == customer[by_customer][:-1]) & (customer[by_customer][1:] >= 0)
    previous[by_customer[1:][same]] = by_customer[:-1][same]
    width = int(line_category.max()) + 1 if len(line_category) else 1
    pairs = np.unique(line_order * width + line_category)  # each order's distinct categories, by order
    pair_order, pair_category = pairs // width, pairs % width
    start = np.searchsorted(pair_order, np.arange(len(order_t) + 1))
    count = np.diff(start)
    later = np.flatnonzero(previous[pair_order] >= 0)  # (order, category) of orders with one before
    before = previous[pair_order[later]]
    repeat = count[before]
    rows = np.repeat(later, repeat)
    offsets = np.arange(int(repeat.sum())) - np.repeat(np.cumsum(repeat) - repeat, repeat)
    earlier_rows = np.repeat(start[before], repeat) + offsets
    return order_t[pair_order[earlier_rows]], pair_category[earlier_rows], pair_category[rows]


def _surveys(
    surveys: Iterable[dict[str, Any]], complaints: dict[str, str], erased: set[str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    cats = Codes()
    rows = sorted(
        (s for s in surveys if s["customer_id"] not in erased),
        key=lambda s: (s["submitted_at"], s["survey_id"]),
    )
    t = np.array([s["submitted_at"] for s in rows], np.int64)
    out: dict[str, np.ndarray] = {
        "t": t,
        "month": month_index(t),
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
    moves: Iterable[dict[str, Any]], index: dict[str, int], erased: set[str], segments: Codes
) -> dict[str, np.ndarray]:
    """Segment moves sorted by (customer, time), their segments coded as the customers'
    current ones are."""
    rows = sorted(
        (m for m in moves if m["customer_id"] not in erased and m["customer_id"] in index),
        key=lambda m: (index[m["customer_id"]], m["at"]),
    )
    return {
        "customer": np.array([index[m["customer_id"]] for m in rows], np.int64),
        "t": np.array([m["at"] for m in rows], np.int64),
        "from": np.array([segments.code(m["from"]) for m in rows], np.int64),
        "to": np.array([segments.code(m["to"]) for m in rows], np.int64),
    }


def _warnings(
    warnings: Iterable[dict[str, Any]], index: dict[str, int], erased: set[str], segment: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The worklist as columns: each episode's customer and their current segment, when it
    was opened and closed (FAR_FUTURE: open), its reasons (one column per reason), the
    actions taken (their combination coded), its outcome, CLV and risk."""
    rows = [w for w in warnings if w["customer_id"] not in erased]
    reasons, actions, outcomes = Codes(), Codes(), Codes()
    customer = np.array([index.get(w["customer_id"], -1) for w in rows], np.int64)
    reason_codes = [[reasons.code(x) for x in w["reasons"]] for w in rows]
    marks = np.zeros((len(rows), max(len(reasons.labels), 1)), bool)
    for k, codes in enumerate(reason_codes):
        marks[k, codes] = True
    closed = [w.get("closed_at") for w in rows]
    return {
        "customer": customer,
        "segment": np.where(customer >= 0, segment[np.maximum(customer, 0)], -1),
        "warned_at": np.array([w["warned_at"] for w in rows], np.int64),
        "closed_at": np.array([FAR_FUTURE if c is None else c for c in closed], np.int64),
        "reasons": marks,
        "actions": np.array(
            [actions.code("+".join(sorted(set(w.get("actions") or []))) or "none") for w in rows], np.int64
        ),
        "outcome": np.array([outcomes.code(w.get("outcome") or "closed") for w in rows], np.int64),
        "clv": np.array([w["clv_cents"] for w in rows], np.float64),
        "risk": np.array([w["risk"] for w in rows], np.float64),
    }, {"reasons": reasons.labels, "actions": actions.labels, "outcomes": outcomes.labels}


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
    return s.cubes["spend"].sums(p)


def composition(s: Snapshot, p: Period, by: tuple[str, ...]) -> dict[str, Any]:
    """Customers known by the period's end (registered or buying), those buying in it, their
    net sales, and average CLV and churn risk, by one dimension or two crossed."""
    spend = spend_in(s, p)
    buyers = s.cubes["orders"].sums(p) > 0
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
    by_spend = [i for i in _top(spend, top) if spend[i] > 0]
    by_clv = [i for i in _top(s.clv, top) if s.clv[i] > 0]
    return {
        **pareto(spend),
        "top_by_net_spend": [_person(s, i, spend) for i in by_spend],
        "top_by_clv": [_person(s, i, spend) for i in by_clv],
    }


def _top(values: np.ndarray, k: int) -> list[int]:
    """The indexes of the k largest values, largest first, ties by index (as a stable sort of
    all of them would give, without sorting all of them)."""
    k = min(k, len(values))
    if k == 0:
        return []
    kth = np.partition(values, len(values) - k)[len(values) - k]
    candidates = np.flatnonzero(values >= kth)
    return candidates[np.lexsort((candidates, -values[candidates]))][:k].tolist()


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
    """Each customer's segment code at time t, -1 when not a customer yet (or never scored):
    the last move's target at or before t; else, once known (registered or buying), the first
    later move's origin, or for a customer without moves the current segment (the scorer
    signals no move when a customer's first score already places them, as it does when the
    first score comes with a purchase)."""
    m = s.moves
    unscored = s.labels["segment"].index(UNKNOWN) if UNKNOWN in s.labels["segment"] else -1
    current = np.where(s.codes["segment"] == unscored, -1, s.codes["segment"])
    out = np.where(s.known_from <= t, current, -1)
    if len(m["t"]) == 0:
        return out
    later = m["t"] > t
    # moves are sorted by (customer, time): the first later move of each customer, written
    # last of the later ones, and then overwritten by the last earlier move
    rev = np.flatnonzero(later)[::-1]
    known = s.known_from[m["customer"][rev]] <= t
    out[m["customer"][rev][known]] = m["from"][rev][known]
    early = np.flatnonzero(~later)
    out[m["customer"][early]] = m["to"][early]
    return out


def movement(s: Snapshot, start: int, end: int) -> dict[str, Any]:
    """Customers by their segment at `start` (rows; NOT_YET for who was not a customer then)
    and at `end` (columns)."""
    a, b = segment_at(s, start), segment_at(s, end)
    keep = b >= 0
    width = len(s.segments) + 1
    counts = np.bincount((a[keep] + 1) * width + b[keep], minlength=width * width)
    names = [NOT_YET, *s.segments]
    cells = np.flatnonzero(counts)
    order = np.lexsort((cells, -counts[cells]))
    matrix = [
        {"from": names[int(k) // width], "to": s.segments[int(k) % width], "customers": int(counts[k])}
        for k in cells[order]
    ]
    stayed_known = keep & (a >= 0)
    return {
        "from_date": iso(start),
        "to_date": iso(end),
        "customers": int(keep.sum()),
        "moved": int((stayed_known & (a != b)).sum()),
        "entered": int((keep & (a < 0)).sum()),
        "matrix": matrix,
    }


def churn(s: Snapshot, p: Period) -> dict[str, Any]:
    """Warnings opened and closed in the period by reason and by the customer's current
    segment, value at risk (CLV times risk of those still open at the period's end), value
    lost (CLV of those closed as lost), and outcomes by the actions taken; and all of it per
    current segment."""
    w, labels = s.warnings, s.warning_labels
    opened = (w["warned_at"] >= p.lo) & (w["warned_at"] < p.hi)
    closed = (w["closed_at"] >= p.lo) & (w["closed_at"] < p.hi)
    open_at_end = (w["warned_at"] < p.hi) & (w["closed_at"] >= p.hi)
    lost_code = labels["outcomes"].index("lost") if "lost" in labels["outcomes"] else -1
    lost = closed & (w["outcome"] == lost_code)
    at_risk = np.round(w["clv"] * w["risk"])
    segment = w["segment"] + 1  # 0: a customer with no segment known
    names = [UNKNOWN, *s.segments]
    width = len(names)

    def by_reason(pick: np.ndarray) -> dict[str, int]:
        counts = w["reasons"][pick].sum(axis=0)
        return {labels["reasons"][k]: int(counts[k]) for k in np.argsort(labels["reasons"]) if counts[k]}

    def count(pick: np.ndarray) -> np.ndarray:
        return np.bincount(segment[pick], minlength=width)

    def total(pick: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.bincount(segment[pick], weights=values[pick], minlength=width)

    def by_name(counts: np.ndarray) -> dict[str, int]:
        return {names[k]: int(counts[k]) for k in sorted(np.flatnonzero(counts), key=lambda k: names[k])}

    outcome_width = max(len(labels["outcomes"]), 1)

    def outcomes(pick: np.ndarray, key: np.ndarray, key_labels: list[str]) -> dict[str, dict[str, int]]:
        grid = np.bincount(
            key[pick] * outcome_width + w["outcome"][pick], minlength=len(key_labels) * outcome_width
        ).reshape(len(key_labels), outcome_width)
        return {
            key_labels[k]: {labels["outcomes"][o]: int(grid[k, o]) for o in np.flatnonzero(grid[k])}
            for k in sorted(np.flatnonzero(grid.sum(axis=1)), key=lambda k: key_labels[k])
        }

    per_segment = {
        "opened": count(opened),
        "closed": count(closed),
        "open_at_end": count(open_at_end),
        "value_at_risk_cents": total(open_at_end, at_risk),
        "value_lost_cents": total(lost, w["clv"]),
    }
    by_outcome = outcomes(closed, segment, names)
    return {
        "opened": int(opened.sum()),
        "closed": int(closed.sum()),
        "open_at_end": int(open_at_end.sum()),
        "opened_by_reason": by_reason(opened),
        "opened_by_segment": by_name(per_segment["opened"]),
        "closed_by_reason": by_reason(closed),
        "closed_by_segment": by_name(per_segment["closed"]),
        "value_at_risk_cents": int(at_risk[open_at_end].sum()),
        "value_lost_cents": int(w["clv"][lost].sum()),
        "outcomes_by_action": outcomes(closed, w["actions"], labels["actions"]),
        "by_segment": [
            {
                "segment": names[k],
                **{name: int(round(values[k])) for name, values in per_segment.items()},
                "outcomes": by_outcome.get(names[k], {}),
            }
            for k in sorted(
                np.flatnonzero(sum(per_segment[n] for n in ("opened", "closed", "open_at_end"))),
                key=lambda k: names[k],
            )
        ],
    }


def products(s: Snapshot, p: Period, by: str | None) -> dict[str, Any]:
    """Net sales by category and by brand, each optionally split by a customer dimension."""
    out: dict[str, Any] = {"by": by}
    for name, column, labels in (
        ("categories", "category", s.categories),
        ("brands", "brand", s.brands),
    ):
        sales = s.cubes[name].sums(p)[: len(labels)]
        buyers = s.buyers[name].count(p)
        order = [int(k) for k in np.argsort(-sales, kind="stable") if round(sales[k]) != 0 or buyers[k]]
        rows = [
            {column: labels[k], "net_sales_cents": int(round(sales[k])), "buyers": int(buyers[k])}
            for k in order
        ]
        if by is not None:
            width = max(len(s.labels[by]), 1)
            cross = s.splits[(name, by)].sums(p).reshape(-1, width)
            for row, k in zip(rows, order, strict=True):
                row[f"by_{by}"] = {
                    s.labels[by][j]: int(round(cross[k, j])) for j in np.flatnonzero(np.round(cross[k]))
                }
        out[name] = rows
    out["net_sales_cents"] = int(round(s.cubes["categories"].sums(p).sum()))
    return out


def next_categories(s: Snapshot, p: Period, category: str) -> dict[str, Any]:
    """After buying in `category` (an order in the period), what the same customer's next
    order held: customers' transitions counted per category of the next order."""
    if category not in s.categories:
        return {"category": category, "transitions": 0, "next": []}
    code = s.categories.index(category)
    mine = slice(int(s.next_offsets[code]), int(s.next_offsets[code + 1]))
    w = _slice(s.next_t[mine], p)
    counts = np.bincount(s.next_to[mine][w], minlength=len(s.categories))
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
    months = sv["month"][w]
    first = int(months.min()) if len(months) else 0
    by_month = _survey_figures(sv, w, months - first)
    by_category = _survey_figures(sv, w, sv["category"][w])
    return {
        **_survey_figures(sv, w, np.zeros(len(months), np.int64)).get(0, _survey_figures_empty()),
        "by_month": [{"month": month_label(first + k), **v} for k, v in by_month.items()],
        "by_complaint_category": [
            {"complaint_category": s.complaint_categories[k], **v} for k, v in by_category.items()
        ],
    }


def _survey_figures_empty() -> dict[str, Any]:
    return {
        "surveys": 0,
        "dimensions": dict.fromkeys(DIMENSION_SCORES),
        "csat": None,
        "csat_surveys": 0,
        "nps": None,
    }


def _survey_figures(sv: dict[str, np.ndarray], rows: slice, group: np.ndarray) -> dict[int, dict[str, Any]]:
    """The figures of each group of the surveys in `rows` (group: each one's number, from 0)."""
    width = int(group.max()) + 1 if len(group) else 0
    csat = sv["csat"][rows]

    def means(values: np.ndarray, among: np.ndarray) -> list[float | None]:
        ok = among & ~np.isnan(values)
        sums = np.bincount(group, weights=np.where(ok, values, 0.0), minlength=width).tolist()
        counts = np.bincount(group, weights=ok, minlength=width).tolist()
        return [round(a / n, 3) if n else None for a, n in zip(sums, counts, strict=True)]

    dims = {name: means(sv[name][rows], ~csat) for name in DIMENSION_SCORES}
    csat_mean = means(sv["overall"][rows], csat)
    surveys = np.bincount(group, minlength=width)
    csat_surveys = np.bincount(group[csat], minlength=width)
    recommend = sv["recommend"][rows]
    answered = ~np.isnan(recommend)
    # NPS from the counts of each group's detractors (0-6), passives and promoters (9-10)
    kinds = np.digitize(recommend[answered], [7, 9])  # 0 detractor, 1 passive, 2 promoter
    tally = np.bincount(group[answered] * 3 + kinds, minlength=width * 3).reshape(width, 3).tolist()
    return {
        k: {
            "surveys": int(surveys[k]),
            "dimensions": {name: dims[name][k] for name in DIMENSION_SCORES},
            "csat": csat_mean[k],
            "csat_surveys": int(csat_surveys[k]),
            "nps": nps_of(*tally[k]),
        }
        for k in np.flatnonzero(surveys).tolist()
    }


def nps_of(detractors: int, passives: int, promoters: int) -> float | None:
    """The complaints' rule (services/complaints/domain.py `nps`, which takes every answer)
    from the counts of answers, so a period of many thousands of surveys is not a list."""
    answers = detractors + passives + promoters
    return round(100 * (promoters - detractors) / answers, 1) if answers else None


def monthly_sales(sums: np.ndarray, starts: np.ndarray) -> dict[int, dict[tuple[int, int], int]]:
    """Net sales by (year, month) per key, from a cube's months x keys (months beginning at
    `starts`); a month without sales is left out."""
    out: dict[int, dict[tuple[int, int], int]] = defaultdict(dict)
    first = int(month_index(starts[:1])[0]) if len(starts) else 0
    for row, col in zip(*np.nonzero(np.round(sums)), strict=True):
        month = first + int(row)
        out[int(col)][(1970 + month // 12, month % 12 + 1)] = int(round(sums[row, col]))
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
    shop = monthly_sales(s.cubes["shop"].monthly(p), s.cubes["shop"].rows.starts).get(0, {})
    per_category = monthly_sales(s.cubes["categories"].monthly(p), s.cubes["categories"].rows.starts)
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
        for segment in body["by_segment"]:
            rows += [
                [f"segment:{segment['segment']}", k, v] for k, v in segment.items() if isinstance(v, int)
            ]
            rows += [
                [f"segment:{segment['segment']}", f"outcome:{k}", v] for k, v in segment["outcomes"].items()
            ]
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
