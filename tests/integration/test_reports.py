"""The reports service beside the whole platform: a small shop seeded through the real APIs
(registrations, orders with lines, payments, a return, a goodwill refund, a complaint and
surveys), and every report checked against figures computed here from the seeded data."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

import httpx
import pytest

from services.common.clock import to_rfc3339
from services.stack.harness import (
    Service,
    start_console,
    start_platform,
    start_reports,
    stop_services,
    unique_id,
    until,
)


def at(day: str) -> datetime:
    return datetime.fromisoformat(day + "T10:00:00+00:00")


# The shop: who registered, and what each bought (lines: sku, category, brand, qty, unit price).
PEOPLE = {
    "A": {"gender": "female", "birth_date": "1990-05-01", "city_tier": 1, "city": "Shanghai", "channel": "web"},
    "B": {"gender": "male", "birth_date": "1975-03-03", "city_tier": 2, "city": "Hangzhou", "channel": "app"},
    "C": {"gender": "female", "birth_date": "2001-07-07", "city_tier": 3, "city": "Chengdu", "channel": "app"},
    "D": {"gender": "other", "birth_date": None, "city_tier": 1, "city": "Shanghai", "channel": "web"},
}  # fmt: skip
ORDERS = [
    ("A", "2026-08-10", [("S-SHOE", "shoes", "Acme", 2, 5000)], None, None),
    ("A", "2026-10-05", [("S-BAG", "bags", "Bolt", 1, 8000), ("S-SOCK", "shoes", "Acme", 1, 2000)], "S-SOCK", None),
    ("B", "2026-09-15", [("S-BOOK", "books", "Page", 1, 3000)], None, None),
    ("B", "2026-11-01", [("S-BOOT", "shoes", "Acme", 1, 12000)], None, 1000),
    ("C", "2026-10-20", [("S-BAG", "bags", "Bolt", 1, 4000)], None, None),
]  # (who, paid on, lines, sku returned, goodwill refund)  # fmt: skip


def once() -> dict[str, str]:
    """Money-like writes carry an Idempotency-Key."""
    return {"Idempotency-Key": uuid.uuid4().hex}


def expected_net(order) -> tuple[int, list[tuple[str, str, int]]]:
    """The order's net value and its lines' (category, brand, net), worked out plainly."""
    _, _, lines, returned, goodwill = order
    values = [(cat, brand, qty * price if sku != returned else 0) for sku, cat, brand, qty, price in lines]
    if goodwill:
        cat, brand, cents = values[0]
        values[0] = (cat, brand, cents - goodwill)
    return sum(v for _, _, v in values), values


@pytest.fixture(scope="module")
def platform(stack, prefix, clock_file, tmp_path_factory) -> dict[str, Service]:
    started = start_platform(
        stack, tmp_path_factory.mktemp("faust"), CRM_TOPIC_PREFIX=prefix, CRM_CLOCK_FILE=str(clock_file)
    )
    started["reports"] = start_reports(stack, started)
    yield started
    stop_services(started.values())


@pytest.fixture(scope="module")
def reports(platform) -> Service:
    return platform["reports"]


@pytest.fixture(scope="module")
def shop(platform) -> dict[str, Any]:
    """Seed the shop once; answers the customer id of each person."""
    profiles, orders, complaints = platform["profiles"], platform["orders"], platform["complaints"]
    ids = {}
    for person, attrs in PEOPLE.items():
        customer = unique_id()
        body = {
            "customer_id": customer,
            "name": f"Person {person}",
            "marketing_consent": person == "A",
            **attrs,
        }
        answer = profiles.post("/customers", json={k: v for k, v in body.items() if v is not None})
        assert answer.status_code == 201, answer.text
        ids[person] = customer
    for who, day, lines, returned, goodwill in ORDERS:
        placed = orders.post(
            "/orders",
            json={
                "customer_id": ids[who],
                "currency": "CNY",
                "items": [
                    {"sku": s, "category": c, "brand": b, "qty": q, "unit_price_cents": p}
                    for s, c, b, q, p in lines
                ],
                "placed_at": to_rfc3339(at(day)),
            },
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["order_id"]
        paid = orders.post(f"/orders/{order_id}/pay", json={"at": to_rfc3339(at(day))}, headers=once())
        assert paid.status_code == 200, paid.text
        for action in ("ship", "deliver"):
            assert orders.post(f"/orders/{order_id}/{action}", json={}).status_code == 200
        if returned:
            back = orders.post(
                f"/orders/{order_id}/return",
                json={"reason": "too small", "items": [{"sku": returned, "qty": 1}]},
                headers=once(),
            )
            assert back.status_code == 200, back.text
        if goodwill:
            refund = orders.post(
                f"/orders/{order_id}/refund", json={"amount_cents": goodwill}, headers=once()
            )
            assert refund.status_code == 200, refund.text
    opened = complaints.post(
        "/complaints", json={"customer_id": ids["B"], "category": "logistics", "severity": "medium"}
    )
    assert opened.status_code == 201, opened.text
    complaint_id = opened.json()["complaint_id"]
    resolved = complaints.post(f"/complaints/{complaint_id}/resolve", json={"resolution": "re-sent"})
    assert resolved.status_code == 200, resolved.text
    surveys = [
        {"customer_id": ids["B"], "complaint_id": complaint_id, "scores": {"overall": 2}},
        {"customer_id": ids["A"], "scores": dict.fromkeys(DIMS, 4) | {"overall": 5}, "recommend": 9},
        {"customer_id": ids["C"], "scores": dict.fromkeys(DIMS, 2) | {"overall": 3}, "recommend": 5},
    ]
    for survey in surveys:
        answer = complaints.post("/surveys", json=survey)
        assert answer.status_code == 201, answer.text
    profiles_now = {
        person: until(
            lambda c=customer: profiles.get(f"/customers/{c}").json(),
            lambda p, person=person: (
                p.get("status") == "scored"
                and (
                    person == "D"
                    or (p.get("purchases") or {}).get("count") == sum(1 for o in ORDERS if o[0] == person)
                )
            ),
        )
        for person, customer in ids.items()
    }
    return {"ids": ids, "person": {v: k for k, v in ids.items()}, "profiles": profiles_now}


DIMS = ("website", "product", "payment", "service", "logistics")
TOTAL = sum(expected_net(o)[0] for o in ORDERS)


def report(reports: Service, name: str, **params) -> dict[str, Any]:
    answer = reports.get(f"/reports/{name}", role="viewer", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def ready(reports, shop) -> None:
    """The reports have folded every seeded event and pulled every profile's scores."""
    until(
        lambda: reports.get("/reports/rfm", role="viewer").status_code, lambda code: code == 200, timeout=60
    )
    until(lambda: report(reports, "contribution"), lambda r: r["revenue_cents"] == TOTAL, timeout=90)
    until(lambda: report(reports, "satisfaction"), lambda r: r["surveys"] == 3)
    until(
        lambda: report(reports, "composition", by="abc_class,segment"),
        lambda r: (
            r["customers"] == 4
            and all(
                row["abc_class"] != "unknown" and row["segment"] != "unknown"
                for row in r["rows"]
                if row["buyers"]
            )
        ),
    )


def per_person_spend(since: str | None = None, before: str | None = None) -> dict[str, int]:
    spend: dict[str, int] = defaultdict(int)
    for order in ORDERS:
        if (since is None or order[1] >= since) and (before is None or order[1] < before):
            spend[order[0]] += expected_net(order)[0]
    return spend


def test_composition_by_gender_and_crossed_over_any_period(reports, platform, shop, ready):
    spend = per_person_spend()
    body = report(reports, "composition", by="gender")
    assert "as_of" in body["freshness"] and body["freshness"]["age_seconds"] >= 0
    rows = {r["gender"]: r for r in body["rows"]}
    for gender in ("female", "male", "other"):
        people = [p for p, a in PEOPLE.items() if a["gender"] == gender]
        assert rows[gender]["customers"] == len(people)
        assert rows[gender]["revenue_cents"] == sum(spend[p] for p in people)
        assert rows[gender]["buyers"] == sum(1 for p in people if spend[p])

    # CLV moves while the scorer refits its models: the pulled figures catch up with the profiles'
    def clv_now() -> dict[str, tuple[int, float]]:
        body = report(reports, "composition", by="gender")
        live = {p: platform["profiles"].get(f"/customers/{shop['ids'][p]}").json() for p in PEOPLE}
        return {
            r["gender"]: (
                r["avg_clv_cents"],
                sum(
                    (live[p]["value"] or {}).get("clv_12m_cents") or 0
                    for p in PEOPLE
                    if PEOPLE[p]["gender"] == r["gender"]
                )
                / r["customers"],
            )
            for r in body["rows"]
        }

    until(clv_now, lambda pairs: all(abs(got - want) <= 1 for got, want in pairs.values()), timeout=60)
    october = per_person_spend("2026-10-01", "2026-11-01")
    crossed = report(
        reports,
        "composition",
        by="city_tier,channel",
        **{"from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
    )
    got = {(r["city_tier"], r["channel"]): r["revenue_cents"] for r in crossed["rows"]}
    want: dict[tuple[str, str], int] = defaultdict(int)
    for person, attrs in PEOPLE.items():
        want[(str(attrs["city_tier"]), attrs["channel"])] += october.get(person, 0)
    assert got == dict(want)
    ages = {r["age_band"]: r["customers"] for r in report(reports, "composition", by="age_band")["rows"]}
    assert ages == {"35-44": 1, "45-54": 1, "25-34": 1, "unknown": 1}


def test_composition_as_csv_carries_the_table(reports, ready):
    answer = reports.get("/reports/composition", role="viewer", params={"by": "city", "format": "csv"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert {r["city"]: int(r["customers"]) for r in rows} == {"Shanghai": 2, "Hangzhou": 1, "Chengdu": 1}


def test_contribution_pareto_and_top_customers(reports, shop, ready):
    spend = per_person_spend()
    body = report(reports, "contribution")
    ranked = sorted(spend.values(), reverse=True)
    assert body["buyers"] == 3 and body["curve"][-1]["revenue_share"] == 1.0
    assert body["curve"][32]["revenue_share"] == round(ranked[0] / TOTAL, 4)  # a third: the best
    assert [shop["person"][p["customer_id"]] for p in body["top_by_net_spend"]] == sorted(
        spend, key=lambda p: -spend[p]
    )
    assert [p["net_spend_cents"] for p in body["top_by_net_spend"]] == ranked


def test_retention_cohorts_by_first_purchase_month(reports, ready):
    cohorts = {c["cohort"]: c for c in report(reports, "retention")["cohorts"]}
    first = {}
    for who, day, *_ in ORDERS:
        first[who] = min(first.get(who, day), day)
    for cohort in ("2026-08", "2026-09", "2026-10"):
        members = [p for p, d in first.items() if d[:7] == cohort]
        months = [f"2026-{m:02d}" for m in range(int(cohort[5:]), 12)]
        bought = [
            sum(1 for p in members if any(o[0] == p and o[1][:7] == month for o in ORDERS)) / len(members)
            for month in months
        ]
        assert cohorts[cohort]["customers"] == len(members)
        assert cohorts[cohort]["retention"] == bought
    assert cohorts["2026-08"]["revenue_per_customer_cents"] == [10000, 0, 8000, 0]


def test_rfm_grid_and_segment_moves_match_the_live_profiles(reports, platform, shop, ready):
    # the scorer's quintiles move as its population job runs: the pulled scores catch up
    def grids() -> tuple[list[list[int]], list[list[int]]]:
        want = [[0] * 5 for _ in range(5)]
        for customer in shop["ids"].values():
            code = (platform["profiles"].get(f"/customers/{customer}").json().get("rfm") or {}).get("code")
            if code:
                want[int(code[0]) - 1][int(code[1]) - 1] += 1
        return report(reports, "rfm")["customers"], want

    until(grids, lambda pair: pair[0] == pair[1], timeout=60)

    def landed() -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """Segment moves from before the shop opened to after today (moves carry the wall
        clock), beside every person's segment now: each entered ('none') into where they are."""
        current: dict[tuple[str, str], int] = defaultdict(int)
        for customer in shop["ids"].values():
            current[
                ("none", platform["profiles"].get(f"/customers/{customer}").json()["rfm"]["segment"])
            ] += 1
        period = {"from": "2026-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"}
        body = report(reports, "segment-moves", **period)
        assert body["entered"] == body["customers"] and body["moved"] == 0
        return {(m["from"], m["to"]): m["customers"] for m in body["matrix"]}, dict(current)

    # a customer first scored with a purchase already has a segment (no move is signalled for
    # them), as has one scored a Prospect on registration (D): every one of them counts
    until(landed, lambda pair: pair[0] == pair[1] and sum(pair[0].values()) == len(PEOPLE))


def test_products_by_category_brand_and_what_comes_next(reports, ready):
    category: dict[str, int] = defaultdict(int)
    brand: dict[str, int] = defaultdict(int)
    for order in ORDERS:
        for cat, br, cents in expected_net(order)[1]:
            category[cat] += cents
            brand[br] += cents
    body = report(reports, "products", by="gender")
    assert {r["category"]: r["net_sales_cents"] for r in body["categories"]} == dict(category)
    assert {r["brand"]: r["net_sales_cents"] for r in body["brands"]} == dict(brand)
    bags = next(r for r in body["categories"] if r["category"] == "bags")
    assert bags["by_gender"] == {"female": 12000}
    after_shoes = report(reports, "products/next", category="shoes")
    assert {n["category"]: n["count"] for n in after_shoes["next"]} == {"bags": 1, "shoes": 1}
    after_books = report(reports, "products/next", category="books")
    assert {n["category"]: n["count"] for n in after_books["next"]} == {"shoes": 1}


def test_satisfaction_dimensions_csat_and_nps_by_complaint_category(reports, ready):
    body = report(reports, "satisfaction")
    assert body["dimensions"]["website"] == 3.0 and body["dimensions"]["overall"] == 4.0
    assert body["csat"] == 2.0 and body["nps"] == 0.0  # one promoter (9), one detractor (5)
    by_category = {c["complaint_category"]: c for c in body["by_complaint_category"]}
    assert by_category["logistics"]["csat"] == 2.0 and by_category["logistics"]["surveys"] == 1


def test_seasonality_shop_and_per_category_with_a_forecast(reports, ready):
    monthly: dict[str, int] = defaultdict(int)
    shoes: dict[str, int] = defaultdict(int)
    for order in ORDERS:
        net, lines = expected_net(order)
        monthly[order[1][5:7]] += net
        shoes[order[1][5:7]] += sum(c for cat, _, c in lines if cat == "shoes")
    body = report(reports, "seasonality", horizon=3)
    mean = sum(monthly.values()) / len(monthly)
    assert body["shop"]["index"] == {m: round(v / mean, 4) for m, v in sorted(monthly.items())}
    shoe_months = {m: v for m, v in shoes.items() if v}
    shoe_mean = sum(shoe_months.values()) / len(shoe_months)
    assert body["by_category"]["shoes"] == {
        m: round(v / shoe_mean, 4) for m, v in sorted(shoe_months.items())
    }
    assert [n["month"] for n in body["forecast"]["next"]] == ["2026-12", "2027-01", "2027-02"]
    assert body["forecast"]["holdout"] is None  # less than two years of history


def test_churn_report_counts_the_worklist_by_current_segment(reports, platform, ready):
    warnings = platform["profiles"].get("/churn-warnings", role="viewer").json()["items"]
    body = report(reports, "churn")
    assert body["opened"] == len(warnings)
    assert body["value_at_risk_cents"] == sum(w["value_at_risk_cents"] for w in warnings if w["open"])
    segment = {
        w["customer_id"]: platform["profiles"].get(f"/customers/{w['customer_id']}").json()["rfm"]["segment"]
        for w in warnings
    }
    opened: dict[str, int] = defaultdict(int)
    for w in warnings:
        opened[segment[w["customer_id"]]] += 1
    assert {row["segment"]: row["opened"] for row in body["by_segment"]} == dict(opened)
    assert sum(row["value_at_risk_cents"] for row in body["by_segment"]) == body["value_at_risk_cents"]


def test_named_periods_are_answered_with_the_snapshot_and_agree_with_from_and_to(reports, ready):
    kept = report(reports, "contribution", period="all_time")
    asked = report(reports, "contribution")
    assert kept["period"] == {"name": "all_time", "from": None, "to": None}
    assert kept["freshness"]["computed_at"] == kept["freshness"]["as_of"]  # with the snapshot
    assert {k: v for k, v in kept.items() if k not in ("freshness", "period")} == {
        k: v for k, v in asked.items() if k not in ("freshness", "period")
    }
    year = report(reports, "products", by="segment", period="last_365_days")
    same = report(reports, "products", by="segment", **{"from": year["period"]["from"]})
    assert year["categories"] == same["categories"] and year["brands"] == same["brands"]
    assert year["net_sales_cents"] == TOTAL  # the seeded orders are within the year
    october = report(reports, "products", **{"from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"})
    want: dict[str, int] = defaultdict(int)
    buyers: dict[str, set[str]] = defaultdict(set)
    for order in ORDERS:
        if order[1].startswith("2026-10"):
            for cat, _, cents in expected_net(order)[1]:
                want[cat] += cents
                buyers[cat].add(order[0])
    assert {r["category"]: r["net_sales_cents"] for r in october["categories"]} == dict(want)
    assert {r["category"]: r["buyers"] for r in october["categories"]} == {
        k: len(v) for k, v in buyers.items()
    }
    both = reports.get(
        "/reports/rfm", role="viewer", params={"period": "this_month", "from": "2026-10-01T00:00:00Z"}
    )
    assert both.status_code in (400, 422) and "not both" in both.json()["detail"]
    unknown = reports.get("/reports/rfm", role="viewer", params={"period": "fortnight"})
    assert unknown.status_code in (400, 422) and "fortnight" in unknown.json()["detail"]


def test_bad_input_is_a_4xx_naming_what_and_an_empty_period_is_empty(reports, ready):
    unknown = reports.get("/reports/composition", role="viewer", params={"by": "gender,colour"})
    assert unknown.status_code in (400, 422) and "colour" in unknown.json()["detail"]
    inverted = reports.get(
        "/reports/contribution",
        role="viewer",
        params={"from": "2026-10-01T00:00:00Z", "to": "2026-09-01T00:00:00Z"},
    )
    assert inverted.status_code in (400, 422) and "before it starts" in inverted.json()["detail"]
    empty = {"from": "2020-01-01T00:00:00Z", "to": "2020-02-01T00:00:00Z"}
    assert report(reports, "contribution", **empty)["curve"] == []
    assert report(reports, "products", **empty)["categories"] == []
    assert report(reports, "satisfaction", **empty)["surveys"] == 0
    assert reports.get("/reports/rfm", role=None).status_code == 401


def test_customer_search_filters_by_attributes_and_affinity_and_exports_them(platform, shop, ready):
    profiles, ids, person = platform["profiles"], shop["ids"], shop["person"]

    def found(**params) -> set[str]:
        answer = profiles.get("/customers", role="viewer", params={"limit": 500, **params})
        assert answer.status_code == 200, answer.text
        return {person[row["customer_id"]] for row in answer.json()["items"] if row["customer_id"] in person}

    assert found(gender="female") == {"A", "C"}
    assert found(gender="female", age_band="25-34") == {"C"}
    assert found(city_tier=1, channel="web") == {"A", "D"}
    assert found(marketing_consent="true") == {"A"}
    # A's year: shoes 10000 + 1600, bags 6400 (the second order's net spread by value); C: bags only
    assert until(lambda: found(category="bags"), lambda got: got == {"A", "C"})
    assert found(category="bags", min_affinity=0.5) == {"C"}
    assert found(brand="Page") == {"B"}
    assert profiles.get("/customers", role="viewer", params={"min_affinity": 0.5}).status_code == 400
    assert profiles.get("/customers", role="viewer", params={"age_band": "ancient"}).status_code == 422
    exported = profiles.get("/customers", role="agent", params={"format": "csv", "category": "bags"})
    rows = {row["customer_id"]: row for row in csv.DictReader(io.StringIO(exported.text))}
    assert set(rows) == {ids["A"], ids["C"]}
    assert rows[ids["C"]]["gender"] == "female" and rows[ids["C"]]["city_tier"] == "3"
    assert rows[ids["C"]]["top_category"] == "bags" and float(rows[ids["C"]]["top_category_share"]) == 1.0
    assert rows[ids["A"]]["top_category"] == "shoes" and rows[ids["A"]]["marketing_consent"] == "True"


def test_the_consoles_reports_page_shows_the_tables(stack, platform, shop, ready):
    console = start_console(stack, platform)
    try:
        client = httpx.Client(base_url=console.url, timeout=30, follow_redirects=False)
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/signin").text).group(1)
        signed = client.post(
            "/signin", data={"csrf": token, "api_key": stack.keys["viewer"], "next": "/reports"}
        )
        assert signed.status_code == 303, signed.text
        page = client.get("/reports", params={"by": "city", "from": "2026-08-01", "to": "2026-12-01"})
        assert page.status_code == 200
        for city in ("Shanghai", "Hangzhou", "Chengdu"):
            assert f'<th scope="row">{city}</th>' in page.text
        top = [shop["ids"][p] for p in sorted(per_person_spend(), key=lambda p: -per_person_spend()[p])]
        assert [m for m in re.findall(r'href="/customers/([^"]+)"', page.text) if m in top] == top
        assert "2026-08" in page.text and "bags" in page.text  # a cohort row and a category row
        # a dimension the reports do not know falls back to the segment
        fallback = client.get("/reports", params={"by": "colour"})
        assert fallback.status_code == 200 and '<option value="segment" selected>' in fallback.text
        client.close()
    finally:
        console.stop()


def test_after_an_erasure_no_report_lists_the_person(reports, platform, shop, ready):
    erased = shop["ids"]["C"]
    assert platform["profiles"].request("DELETE", f"/customers/{erased}").status_code == 202
    body = until(lambda: report(reports, "contribution"), lambda b: erased not in str(b))
    assert body["revenue_cents"] == TOTAL - per_person_spend()["C"]  # no longer a customer's
    assert report(reports, "products")["net_sales_cents"] == TOTAL  # the sale stays in the shop's
    for name, params in (
        ("composition", {"by": "city"}),
        ("composition", {"by": "city", "period": "all_time"}),  # answered with the snapshot
        ("contribution", {"period": "last_365_days"}),
        ("churn", {}),
        ("segment-moves", {}),
        ("segment-moves", {"period": "all_time"}),
        ("products", {}),
    ):
        assert erased not in str(report(reports, name, **params))
    cities = {r["city"]: r["customers"] for r in report(reports, "composition", by="city")["rows"]}
    assert "Chengdu" not in cities
