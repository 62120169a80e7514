"""The reports' arithmetic on a small shop whose every figure is worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.common.errors import RuleBroken
from services.complaints.domain import nps
from services.reports import domain
from services.reports.domain import Period


def t(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


def order(order_id, customer, paid_day, paid, items, returns=(), refunds=()):
    doc = {
        "_id": order_id,
        "customer_id": customer,
        "paid_at": t(paid_day),
        "paid_cents": paid,
        "items": [{"sku": s, "category": c, "brand": b, "cents": cents} for s, c, b, cents in items],
    }
    return domain.order_record(
        doc,
        {f"r{i}": {"cents": sum(c for _, c in its), "items": its} for i, its in enumerate(returns)},
        {f"f{i}": {"cents": cents, "reason": reason} for i, (cents, reason) in enumerate(refunds)},
    )


CUSTOMERS = [
    {"customer_id": "c1", "gender": "female", "birth_date": "1990-06-01", "city": "Shanghai", "city_tier": 1,
     "channel": "web", "registered_at": t("2025-01-05")},
    {"customer_id": "c2", "gender": "male", "birth_date": "1980-01-01", "city": "Beijing", "city_tier": 2,
     "channel": "app", "registered_at": t("2025-01-10")},
    {"customer_id": "c3", "gender": "female", "birth_date": None, "city": "Shanghai", "city_tier": 1,
     "channel": "web", "registered_at": t("2025-02-01")},
]  # fmt: skip
SCORES = {
    "c1": {"segment": "Champions", "rfm_code": "555", "clv_12m_cents": 50000, "churn_risk": 0.1, "tier": "gold",
           "lifecycle_stage": "growth", "abc_class": "A"},
    "c2": {"segment": "At Risk", "rfm_code": "134", "clv_12m_cents": 10000, "churn_risk": 0.8, "tier": "member",
           "lifecycle_stage": "decline", "abc_class": "A"},
    "c3": {"segment": "New", "rfm_code": "512", "clv_12m_cents": 2000, "churn_risk": 0.5, "tier": "member",
           "lifecycle_stage": "exploration", "abc_class": "B"},
}  # fmt: skip


def shop() -> domain.Snapshot:
    orders = [
        order("o1", "c1", "2025-01-10", 10000, [("S1", "shoes", "Acme", 10000)]),
        # 10 % discount spread over two lines (4500 each); the shoes come back
        order(
            "o2", "c1", "2025-02-10", 9000, [("S2", "bags", "Bolt", 5000), ("S1", "shoes", "Acme", 5000)],
            returns=[[("S1", 4500)]],
        ),
        order("o3", "c2", "2025-01-20", 20000, [("S2", "bags", "Bolt", 20000)]),
        order("o4", "c3", "2025-02-15", 3000, [("S1", "shoes", "Acme", 3000)], refunds=[(1000, "goodwill")]),
    ]  # fmt: skip
    surveys = [
        {"survey_id": "s1", "customer_id": "c1", "kind": "general", "complaint_id": None, "recommend": 10,
         "scores": {"website": 4, "product": 5, "payment": 3, "service": 4, "logistics": 2, "overall": 4},
         "submitted_at": t("2025-01-20")},
        {"survey_id": "s2", "customer_id": "c2", "kind": "csat", "complaint_id": "k1", "recommend": 3,
         "scores": {"overall": 2}, "submitted_at": t("2025-02-20")},
    ]  # fmt: skip
    moves = [
        {"customer_id": "c1", "at": t("2025-01-10"), "from": "Prospect", "to": "New"},
        {"customer_id": "c1", "at": t("2025-02-10"), "from": "New", "to": "Champions"},
        {"customer_id": "c2", "at": t("2025-01-20"), "from": "Prospect", "to": "New"},
        {"customer_id": "c2", "at": t("2025-02-25"), "from": "New", "to": "At Risk"},
    ]
    warnings = [
        {"customer_id": "c2", "warned_at": t("2025-02-01"), "closed_at": None, "reasons": ["silence", "open_complaints"],
         "actions": ["call"], "outcome": None, "risk": 0.8, "clv_cents": 10000},
        {"customer_id": "c1", "warned_at": t("2025-01-15"), "closed_at": t("2025-02-12"), "reasons": ["silence"],
         "actions": ["coupon"], "outcome": "lost", "risk": 0.7, "clv_cents": 50000},
    ]  # fmt: skip
    return domain.build(
        customers=CUSTOMERS,
        scores=SCORES,
        orders=orders,
        surveys=surveys,
        complaints={"k1": "delivery"},
        moves=moves,
        warnings=warnings,
        erased=set(),
        now=t("2025-03-01"),
    )


ALL = Period()
FEBRUARY = Period(t("2025-02-01"), t("2025-03-01"))


def test_order_lines_carry_the_discount_returns_and_refunds_and_add_up_to_the_order():
    o2 = order(
        "o2", "c1", "2025-02-10", 9000, [("S2", "bags", "Bolt", 5000), ("S1", "shoes", "Acme", 5000)],
        returns=[[("S1", 4500)]],
    )  # fmt: skip
    assert o2.net_cents == 4500
    assert o2.lines == (("bags", "Bolt", 4500), ("shoes", "Acme", 0))
    o4 = order("o4", "c3", "2025-02-15", 3000, [("S1", "shoes", "Acme", 3000)], refunds=[(1000, "goodwill")])
    assert o4.net_cents == 2000 and o4.lines == (("shoes", "Acme", 2000),)
    # a refund for a return repays what the return already took off
    o5 = order(
        "o5", "c1", "2025-02-10", 1000, [("S1", "shoes", "Acme", 1000)], [[("S1", 1000)]], [(1000, "return")]
    )
    assert o5.net_cents == 0


def test_composition_by_one_dimension_and_over_a_period():
    s = shop()
    rows = {r["gender"]: r for r in domain.composition(s, ALL, ("gender",))["rows"]}
    assert rows["female"] == {
        "gender": "female", "customers": 2, "buyers": 2, "revenue_cents": 16500, "revenue_share": 0.4521,
        "avg_clv_cents": 26000, "avg_churn_risk": 0.3,
    }  # fmt: skip
    assert rows["male"]["revenue_cents"] == 20000 and rows["male"]["avg_churn_risk"] == 0.8
    february = {r["gender"]: r for r in domain.composition(s, FEBRUARY, ("gender",))["rows"]}
    assert february["female"]["revenue_cents"] == 6500 and february["female"]["buyers"] == 2
    assert february["male"]["revenue_cents"] == 0 and february["male"]["buyers"] == 0
    # customers known only from February on are not in January's base
    january = domain.composition(s, Period(t("2025-01-01"), t("2025-02-01")), ("gender",))
    assert january["customers"] == 2


def test_composition_crossed_and_derived_dimensions():
    s = shop()
    crossed = domain.composition(s, ALL, ("city_tier", "channel"))["rows"]
    assert {(r["city_tier"], r["channel"]): r["customers"] for r in crossed} == {
        ("1", "web"): 2,
        ("2", "app"): 1,
    }
    ages = {r["age_band"]: r["customers"] for r in domain.composition(s, ALL, ("age_band",))["rows"]}
    assert ages == {"25-34": 1, "45-54": 1, "unknown": 1}
    months = {
        r["acquisition_month"]: r["customers"]
        for r in domain.composition(s, ALL, ("acquisition_month",))["rows"]
    }
    assert months == {"2025-01": 2, "2025-02": 1}


def test_unknown_dimension_and_inverted_period_are_refused_by_name():
    with pytest.raises(RuleBroken, match="unknown dimension 'colour'"):
        domain.dimensions("gender,colour")
    with pytest.raises(RuleBroken, match="before it starts"):
        domain.period(datetime(2025, 2, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))


def test_pareto_curve_and_abc_classes_cut_the_scorers_way():
    body = domain.contribution(shop(), ALL, top=2)
    assert body["buyers"] == 3 and body["revenue_cents"] == 36500
    # spend 20000, 14500, 2000: the first customer makes 54.8 %, two make 94.5 %
    assert body["curve"][32]["revenue_share"] == 0.5479  # 33 % of customers: the first one
    assert body["curve"][33]["revenue_share"] == 0.9452  # 34 %: two of the three
    assert body["curve"][-1] == {"customer_share": 1.0, "revenue_share": 1.0}
    assert body["thresholds"] == {"a_min_cents": 14500, "b_min_cents": 2000}
    assert body["classes"]["A"]["customers"] == 2 and body["classes"]["B"]["customers"] == 1
    assert [p["customer_id"] for p in body["top_by_net_spend"]] == ["c2", "c1"]
    assert [p["customer_id"] for p in body["top_by_clv"]] == ["c1", "c2"]


def test_cohorts_by_months_since_the_first_purchase():
    body = domain.retention(shop(), ALL)
    january, february = body["cohorts"]
    assert january == {
        "cohort": "2025-01", "customers": 2, "retention": [1.0, 0.5, 0.0],
        "revenue_per_customer_cents": [15000, 2250, 0],
    }  # fmt: skip
    assert february["retention"] == [1.0, 0.0] and february["revenue_per_customer_cents"] == [2000, 0]
    assert body["average"] == [1.0, round(1 / 3, 4), 0.0]
    assert [c["cohort"] for c in domain.retention(shop(), FEBRUARY)["cohorts"]] == ["2025-02"]


def test_rfm_grid_and_segment_moves():
    grid = domain.rfm_grid(shop(), ALL)
    assert grid["customers"][4][4] == 1 and grid["revenue_cents"][4][4] == 14500
    assert grid["customers"][0][2] == 1 and grid["revenue_cents"][0][2] == 20000
    assert grid["customers"][4][0] == 1 and sum(map(sum, grid["customers"])) == 3
    moves = domain.movement(shop(), t("2025-01-15"), t("2025-02-28"))
    pairs = {(m["from"], m["to"]): m["customers"] for m in moves["matrix"]}
    # c3 registered on 1 February and was scored straight into New (no move is signalled for
    # a first score): not a customer on 15 January, New at the end
    assert pairs == {("New", "Champions"): 1, ("Prospect", "At Risk"): 1, ("none", "New"): 1}
    assert moves["moved"] == 2 and moves["entered"] == 1 and moves["customers"] == 3
    # before anyone registered nobody counts; once all are known, nobody entered
    assert domain.movement(shop(), t("2024-12-01"), t("2025-01-01"))["matrix"] == []
    late = domain.movement(shop(), t("2025-02-26"), t("2025-02-28"))
    assert late["entered"] == 0 and late["moved"] == 0 and late["customers"] == 3


def test_churn_warnings_by_reason_segment_value_and_outcome():
    body = domain.churn(shop(), ALL)
    assert body["opened"] == 2 and body["closed"] == 1 and body["open_at_end"] == 1
    assert body["opened_by_reason"] == {"open_complaints": 1, "silence": 2}
    assert body["opened_by_segment"] == {"At Risk": 1, "Champions": 1}
    assert body["value_at_risk_cents"] == 8000 and body["value_lost_cents"] == 50000
    assert body["outcomes_by_action"] == {"coupon": {"lost": 1}}
    # the same, by the customer's current segment
    assert body["by_segment"] == [
        {"segment": "At Risk", "opened": 1, "closed": 0, "open_at_end": 1, "value_at_risk_cents": 8000,
         "value_lost_cents": 0, "outcomes": {}},
        {"segment": "Champions", "opened": 1, "closed": 1, "open_at_end": 0, "value_at_risk_cents": 0,
         "value_lost_cents": 50000, "outcomes": {"lost": 1}},
    ]  # fmt: skip
    columns, rows = domain.table("churn", body)
    assert ["segment:Champions", "value_lost_cents", 50000] in rows
    assert ["segment:Champions", "outcome:lost", 1] in rows
    # at the end of January both were still open
    january = domain.churn(shop(), Period(None, t("2025-02-01")))
    assert january["open_at_end"] == 1 and january["value_at_risk_cents"] == 35000


def test_products_by_category_brand_and_segment_and_next_categories():
    body = domain.products(shop(), ALL, "segment")
    assert {r["category"]: r["net_sales_cents"] for r in body["categories"]} == {
        "bags": 24500,
        "shoes": 12000,
    }
    assert {r["brand"]: r["net_sales_cents"] for r in body["brands"]} == {"Bolt": 24500, "Acme": 12000}
    bags = next(r for r in body["categories"] if r["category"] == "bags")
    assert bags["by_segment"] == {"Champions": 4500, "At Risk": 20000} and bags["buyers"] == 2
    assert body["net_sales_cents"] == 36500
    nxt = domain.next_categories(shop(), ALL, "shoes")
    assert nxt["transitions"] == 2 and {n["category"] for n in nxt["next"]} == {"bags", "shoes"}
    assert domain.next_categories(shop(), ALL, "hats")["next"] == []


def test_satisfaction_dimensions_csat_and_nps():
    body = domain.satisfaction(shop(), ALL)
    assert body["dimensions"]["website"] == 4.0 and body["dimensions"]["logistics"] == 2.0
    assert body["csat"] == 2.0 and body["nps"] == 0.0  # one promoter (10), one detractor (3)
    assert [m["month"] for m in body["by_month"]] == ["2025-01", "2025-02"]
    categories = {c["complaint_category"]: c for c in body["by_complaint_category"]}
    assert categories["delivery"]["csat"] == 2.0 and categories["none"]["csat"] is None


def test_nps_from_counts_follows_the_complaints_rule():
    rng = np.random.default_rng(2)
    for size in (0, 1, 7, 300):
        answers = rng.integers(0, 11, size).tolist()
        counts = [sum(1 for a in answers if a <= 6), sum(1 for a in answers if 7 <= a <= 8)]
        counts.append(sum(1 for a in answers if a >= 9))
        assert domain.nps_of(*counts) == nps(answers)


def test_forecast_reproduces_a_purely_seasonal_series_and_measures_its_holdout():
    pattern = [0.8, 0.9, 1.0, 1.1, 1.2, 1.0, 0.9, 0.8, 1.0, 1.1, 1.2, 1.0]
    monthly = {(2022 + i // 12, i % 12 + 1): round(100_000 * pattern[i % 12]) for i in range(36)}
    body = domain.forecast(monthly, horizon=3)
    assert [n["net_sales_cents"] for n in body["next"]] == [80000, 90000, 100000]
    assert [n["month"] for n in body["next"]] == ["2025-01", "2025-02", "2025-03"]
    assert body["holdout"]["mape"] == 0.0 and body["holdout"]["months"][0] == "2024-01"
    trend = {(2022 + i // 12, i % 12 + 1): round((100_000 + 2_000 * i) * pattern[i % 12]) for i in range(36)}
    assert domain.forecast(trend)["holdout"]["mape"] < 0.02


def test_seasonal_index_per_category_beside_the_shop():
    body = domain.seasonality(shop(), ALL)
    assert body["shop"]["index"] == {"01": round(30000 / 18250, 4), "02": round(6500 / 18250, 4)}
    assert body["by_category"]["shoes"] == {"01": round(10000 / 6000, 4), "02": round(2000 / 6000, 4)}


def test_an_empty_period_is_empty_not_an_error():
    s = shop()
    empty = Period(t("2030-01-01"), t("2030-02-01"))
    assert domain.contribution(s, empty)["curve"] == []
    assert domain.products(s, empty, None)["categories"] == []
    assert domain.satisfaction(s, empty)["surveys"] == 0
    assert domain.churn(s, empty)["opened"] == 0
    assert domain.retention(s, empty)["cohorts"] == []


def test_an_erased_person_is_listed_nowhere_but_the_shops_sales_stay():
    s = shop()
    domain.erase(s, "c2")
    body = domain.contribution(s, ALL)
    assert "c2" not in str(body)
    assert {r["gender"] for r in domain.composition(s, ALL, ("gender",))["rows"]} == {"female"}
    assert domain.products(s, ALL, None)["net_sales_cents"] == 36500
    assert "c2" not in str(domain.churn(s, ALL)) and domain.churn(s, ALL)["opened"] == 1
    assert np.all(s.order_customer != 1)


def test_monthly_sales_per_code_over_months_with_gaps():
    times = np.array([t("2025-01-10"), t("2025-03-05"), t("2025-03-20"), t("2025-03-21")])
    rows = domain.Timeline.of(times, domain.month_starts(*domain.month_index(times[[0, -1]]) + [0, 1]))
    cube = domain.Cube(rows, domain.Keys(np.array([0, 1, 1, 0])), np.array([100.0, 200.0, 300.0, 50.0]), 2)
    got = domain.monthly_sales(cube.monthly(ALL), rows.starts)
    assert got == {0: {(2025, 1): 100, (2025, 3): 50}, 1: {(2025, 3): 500}}
    march_from_the_6th = Period(t("2025-03-06"), None)
    assert domain.monthly_sales(cube.monthly(march_from_the_6th), rows.starts) == {
        1: {(2025, 3): 300},
        0: {(2025, 3): 50},
    }


def random_rows(seed: int, size: int = 3000):
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(t("2023-01-01"), t("2025-06-01"), size))
    customer = rng.integers(-1, 40, size)  # -1: an erased person's
    codes = rng.integers(0, 5, size)
    weights = rng.integers(1, 1000, size).astype(float)
    starts = domain.month_starts(*domain.month_index(times[[0, -1]]) + [0, 1])
    return rng, times, customer, codes, weights, domain.Timeline.of(times, starts)


def random_periods(rng, rows):
    """Open, whole-month, partial-month and single-month periods."""
    starts = rows.starts
    yield Period()
    yield Period(int(starts[3]), int(starts[9]))
    yield Period(int(starts[3]), None)
    yield Period(None, int(starts[5]) + 1000)
    yield Period(int(starts[4]) + 86400 * 3, int(starts[4]) + 86400 * 20)
    for _ in range(60):
        lo, hi = sorted(rng.integers(int(starts[0]) - 86400 * 40, int(starts[-1]) + 86400 * 40, 2).tolist())
        yield Period(int(lo), int(hi))


def test_a_cube_answers_any_period_as_a_scan_of_its_rows_would():
    rng, times, customer, codes, weights, rows = random_rows(3)
    per_customer = domain.Cube(rows, domain.Keys(customer), weights, 40)
    crossed = domain.Cube(rows, domain.Keys(codes, customer, np.arange(40) % 3, 3), weights, 5 * 3)
    for p in random_periods(rng, rows):
        inside = (times >= p.lo) & (times < p.hi) & (customer >= 0)
        assert np.allclose(per_customer.sums(p), np.bincount(customer[inside], weights[inside], 40))
        want = np.bincount(codes[inside] * 3 + customer[inside] % 3, weights[inside], 15)
        assert np.allclose(crossed.sums(p), want)
        monthly = per_customer.monthly(p).sum(axis=1)
        assert np.allclose(monthly, np.bincount(rows.slot[inside], weights[inside], rows.months))
    # an erased person's rows leave the totals once dropped and their customer unset
    gone = np.flatnonzero(customer == 7)
    per_customer.drop(gone)
    crossed.drop(gone)
    customer[gone] = -1
    inside = customer >= 0
    assert per_customer.sums(Period())[7] == 0
    assert np.allclose(crossed.sums(Period(int(rows.starts[2]), None)), np.bincount(
        codes[inside & (times >= rows.starts[2])] * 3 + customer[inside & (times >= rows.starts[2])] % 3,
        weights[inside & (times >= rows.starts[2])], 15))  # fmt: skip


def test_distinct_buyers_of_any_period_match_a_count_of_distinct_pairs():
    rng, times, customer, codes, _, rows = random_rows(5)
    buyers = domain.Buyers(rows, codes, customer, domain._previous_same(times, customer, codes), 5)

    def distinct(p: Period) -> np.ndarray:
        inside = (times >= p.lo) & (times < p.hi) & (customer >= 0)
        pairs = np.unique(codes[inside] * 100 + customer[inside])
        return np.bincount(pairs // 100, minlength=5)

    for p in random_periods(rng, rows):
        assert buyers.count(p).tolist() == distinct(p).tolist(), p
    gone = np.flatnonzero(customer == 11)
    buyers.drop(gone)
    customer[gone] = -1
    for p in random_periods(rng, rows):
        assert buyers.count(p).tolist() == distinct(p).tolist(), p


def test_named_periods_resolve_on_the_snapshots_day():
    as_of = int(datetime(2025, 5, 20, 15, 30, tzinfo=UTC).timestamp())

    def bounds(name: str) -> tuple[str | None, str | None]:
        shown = domain.resolve(domain.period(None, None, name), as_of).shown()
        return shown["from"], shown["to"]

    assert bounds("all_time") == (None, None)
    assert bounds("last_30_days") == ("2025-04-20T15:30:00Z", None)
    assert bounds("this_month") == ("2025-05-01T00:00:00Z", None)
    assert bounds("last_month") == ("2025-04-01T00:00:00Z", "2025-05-01T00:00:00Z")
    assert bounds("this_quarter") == ("2025-04-01T00:00:00Z", None)
    assert bounds("last_quarter") == ("2025-01-01T00:00:00Z", "2025-04-01T00:00:00Z")
    assert bounds("last_year") == ("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z")
    with pytest.raises(RuleBroken, match="unknown period 'fortnight'"):
        domain.period(None, None, "fortnight")
    with pytest.raises(RuleBroken, match="not both"):
        domain.period(datetime(2025, 2, 1, tzinfo=UTC), None, "this_year")
