"""The profiles service with the whole platform running on the embedded stack: registration to
profile, the 360 view with a service down, search, segments, seasonality, the churn-warning
workflow and erasure, all over real HTTP and real events."""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from services.common.clock import to_rfc3339
from services.common.kafka import EventProducer
from services.common.mongo import blocking_client
from services.stack.harness import Service, TopicReader, once, unique_id, until
from tests.conftest import NOW

DIMENSIONS = ("website", "product", "payment", "service", "logistics", "overall")


@pytest.fixture(scope="module")
def profiles(platform) -> Service:
    return platform["profiles"]


@pytest.fixture(scope="module")
def databases(stack, platform) -> dict[str, Any]:
    client = blocking_client(stack.mongo_url)
    prefix = platform["profiles"].env["CRM_DB_PREFIX"]
    return {name: client[prefix + name] for name in ("orders", "complaints", "loyalty", "profiles")}


def register(profiles: Service, **fields) -> dict:
    answer = profiles.post("/customers", json={"channel": "app", **fields})
    assert answer.status_code == 201, answer.text
    return answer.json()


def buy(orders: Service, customer: str, cents: int, at) -> str:
    placed = orders.post(
        "/orders",
        json={
            "customer_id": customer,
            "currency": "CNY",
            "items": [
                {"sku": "sku-1", "category": "books", "brand": "acme", "qty": 1, "unit_price_cents": cents}
            ],
            "placed_at": to_rfc3339(at),
        },
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["order_id"]
    assert (
        orders.post(f"/orders/{order_id}/pay", json={"at": to_rfc3339(at)}, headers=once()).status_code == 200
    )
    return order_id


def scored(profiles: Service, customer: str, condition=lambda p: True) -> dict:
    return until(
        lambda: profiles.get(f"/customers/{customer}").json(),
        lambda p: p.get("status") == "scored" and condition(p),
    )


def test_registration_becomes_a_live_profile_with_every_score_and_its_reasons(platform, profiles):
    customer = register(
        profiles,
        name="Lin Wei",
        email="lin@example.com",
        city="Hangzhou",
        city_tier=2,
        marketing_consent=True,
    )["customer_id"]
    profile = scored(profiles, customer)
    assert profile["identity"]["name"] == "Lin Wei" and profile["consent"]["marketing"] is True
    assert profile["rfm"]["segment"] == "Prospect" and profile["lifecycle"]["stage"] == "prospect"
    buy(platform["orders"], customer, 12_000, NOW - timedelta(days=3))
    profile = scored(profiles, customer, lambda p: p["purchases"]["count"] == 1)
    assert profile["purchases"]["net_spend_cents"] == 12_000
    assert profile["rfm"]["segment_rule"].startswith("R ") and profile["rfm"]["code"]
    assert profile["lifecycle"]["stage"] == "exploration" and profile["computed_at"]
    for section in ("value", "churn", "service", "engagement", "loyalty"):
        assert section in profile
    assert "facts" not in profile and "pending" not in profile  # the scorer's internals stay inside

    changed = profiles.request("PATCH", f"/customers/{customer}", json={"city": "Suzhou"})
    assert changed.status_code == 200 and changed.json()["city"] == "Suzhou"
    consent = profiles.request("PUT", f"/customers/{customer}/consent", json={"marketing_consent": False})
    assert consent.status_code == 200
    scored(profiles, customer, lambda p: p["identity"]["city"] == "Suzhou" and not p["consent"]["marketing"])

    again = profiles.post("/customers", json={"customer_id": customer, "channel": "web"})
    assert again.status_code == 409


def test_bad_input_gets_clear_problems(profiles):
    def problem(answer, status):
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["detail"]
        return answer.json()["detail"]

    assert "colour" in problem(profiles.get("/customers", params={"colour": "red"}), 400)
    problem(profiles.get("/customers", params={"sort": "shoe_size"}), 422)
    problem(profiles.get("/customers", params={"cursor": "not-a-cursor"}), 400)
    problem(profiles.get(f"/customers/{unique_id()}"), 404)
    problem(profiles.get(f"/customers/{unique_id()}/360"), 404)
    problem(profiles.post("/customers", role="viewer", json={"channel": "web"}), 403)
    problem(profiles.post("/customers", json={"channel": "web", "email": "not-an-email"}), 422)
    many = [{"customer_id": "c-1", "kind": "login"}] * 1001
    assert "1000" in problem(profiles.post("/interactions", json=many), 413)
    problem(profiles.request("DELETE", f"/customers/{unique_id()}", role="agent"), 403)


def test_an_interaction_batch_publishes_the_valid_and_reports_rejects_by_index(profiles, stack, prefix):
    customer = unique_id()
    batch = [
        {"customer_id": customer, "kind": "page_view", "channel": "web"},
        {"customer_id": customer, "kind": "teleport"},
        {"customer_id": customer, "kind": "cart_add", "attributes": {"sku": "sku-1", "qty": 2}},
        {"kind": "login"},
    ]
    answer = profiles.post("/interactions", json=batch)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["accepted"] == 2 and [r["index"] for r in report["rejected"]] == [1, 3]
    reader = TopicReader(stack, prefix + "crm.interactions.v1")
    published = reader.collect(lambda e: e["subject"] == customer, 2)
    reader.close()
    assert sorted(e["data"]["kind"] for e in published) == ["cart_add", "page_view"]
    scored(
        profiles, customer, lambda p: p["engagement"]["interactions_30d"] == {"page_view": 1, "cart_add": 1}
    )


def view_360(profiles: Service, customer: str, **params) -> dict:
    answer = profiles.get(f"/customers/{customer}/360", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_360_view_answers_from_its_read_model_and_partially_when_read_through(
    platform, profiles, databases
):
    customer = register(profiles, name="Zhao Min")["customer_id"]
    order_id = buy(platform["orders"], customer, 30_000, NOW - timedelta(days=1))
    complaint = platform["complaints"].post(
        "/complaints", json={"customer_id": customer, "category": "product", "severity": "low"}
    )
    assert complaint.status_code == 201
    until(
        lambda: view_360(profiles, customer),
        lambda v: (
            v["source"] == "read_model"
            and v["loyalty"]["account"] is not None
            and v["complaints"]["items"]
            and v["profile"].get("status") == "scored"
        ),
    )
    whole = view_360(profiles, customer)
    assert whole["partial"] is False and whole["source"] == "read_model"
    assert [o["order_id"] for o in whole["orders"]["items"]] == [order_id]
    assert len(whole["complaints"]["items"]) == 1 and whole["loyalty"]["account"]["balance"] > 0
    assert whole["loyalty"]["ledger"]

    platform["complaints"].child.stop()
    try:
        # the read model answers whole with a service down: it asks nobody
        assert view_360(profiles, customer)["partial"] is False
        started = time.monotonic()
        body = view_360(profiles, customer, source="services")
        assert time.monotonic() - started < 10
        assert body["partial"] is True and body["unavailable"] == ["complaints"]
        assert body["complaints"]["status"] == "unavailable" and body["complaints"]["as_of"] is None
        assert body["orders"]["items"] and body["orders"]["as_of"]
        assert body["profile"]["customer_id"] == customer
        # a customer the read model has never seen (from before it existed) is read through
        databases["profiles"]["customer_activity"].delete_one({"_id": customer})
        body = view_360(profiles, customer)
        assert body["source"] == "services" and body["unavailable"] == ["complaints"]
        export = profiles.get(f"/customers/{customer}/export")
        assert export.status_code == 503 and "complaints" in export.json()["detail"]
    finally:
        platform["complaints"].child.start()
        platform["complaints"].child.wait_ready(60)


def test_the_read_model_follows_payments_complaints_and_points_once_each_and_forgets_on_erasure(
    platform, profiles, databases, stack, prefix
):
    complaints, loyalty = platform["complaints"], platform["loyalty"]
    customer = register(profiles, name="Qian Yu")["customer_id"]
    first = buy(platform["orders"], customer, 20_000, NOW - timedelta(days=2))
    complaint_id = complaints.post(
        "/complaints", json={"customer_id": customer, "category": "logistics", "severity": "medium"}
    ).json()["complaint_id"]
    view = until(
        lambda: view_360(profiles, customer),
        lambda v: (
            v["source"] == "read_model"
            and [o["status"] for o in v["orders"]["items"]] == ["paid"]
            and [c["status"] for c in v["complaints"]["items"]] == ["open"]
            and len(v["loyalty"]["ledger"]) == 1
        ),
    )
    assert view["source"] == "read_model" and view["orders"]["items"][0]["paid_cents"] == 20_000
    account = loyalty.get(f"/accounts/{customer}").json()
    assert view["loyalty"]["account"]["balance"] == account["balance"] > 0
    assert view["loyalty"]["ledger"][0]["kind"] == "earn"
    assert all(view[s]["as_of"] for s in ("orders", "complaints", "loyalty"))
    # the same as the services answer when asked now
    through = view_360(profiles, customer, source="services")
    assert [o["order_id"] for o in through["orders"]["items"]] == [first]
    assert [e["entry_id"] for e in through["loyalty"]["ledger"]] == [
        e["entry_id"] for e in view["loyalty"]["ledger"]
    ]

    # every event so far delivered again, then new ones behind them on the same partitions
    seen = []
    for topic in ("crm.orders.v1", "crm.complaints.v1", "crm.loyalty.v1"):
        reader = TopicReader(stack, prefix + topic)
        seen += reader.collect(lambda e: e["subject"] == customer, 1)
        reader.close()
    producer = EventProducer(stack.settings(topic_prefix=prefix), "test-redelivery")
    producer.publish(seen)
    producer.close()
    second = buy(platform["orders"], customer, 10_000, NOW - timedelta(days=1))
    resolution = f"courier {uuid.uuid4().hex[:8]} apologised in person"
    resolved = complaints.post(f"/complaints/{complaint_id}/resolve", json={"resolution": resolution})
    assert resolved.status_code == 200, resolved.text
    after = until(
        lambda: view_360(profiles, customer),
        lambda v: (
            v["source"] == "read_model"
            and len(v["orders"]["items"]) == 2
            and v["complaints"]["items"][0]["status"] == "resolved"
            and len(v["loyalty"]["ledger"]) == 2
        ),
    )
    assert [o["order_id"] for o in after["orders"]["items"]] == [second, first]
    assert after["orders"]["items"][1] == view["orders"]["items"][0]  # the redelivery changed nothing
    assert after["complaints"]["items"][0]["resolution"] == resolution
    assert after["complaints"]["items"][0]["opened_at"] == view["complaints"]["items"][0]["opened_at"]
    account = until(lambda: loyalty.get(f"/accounts/{customer}").json(), lambda a: a["balance"] > 0)
    assert after["loyalty"]["account"]["balance"] == account["balance"]  # earned once per order

    erased = profiles.request("DELETE", f"/customers/{customer}", json={"reason": "customer request"})
    assert erased.status_code == 202, erased.text
    # scrubbed in the erasure's own request, before any event comes back
    gone = view_360(profiles, customer)
    assert gone["source"] == "read_model" and gone["complaints"]["items"][0]["resolution"] == "[erased]"
    assert gone["loyalty"]["account"]["closed"] and gone["orders"]["items"][0]["paid_cents"] == 10_000
    stored = databases["profiles"]["customer_activity"].find_one({"_id": customer})
    assert resolution not in str(stored)


def test_an_erasure_lapses_the_points_through_the_ledger_and_the_profile_mirror_follows(
    platform, profiles, databases
):
    """Issue 18: the account closed on erasure keeps balance = ledger sum (0), and the scorer's
    loyalty mirror drops to 0 from the points_expired (reason erased) the loyalty service publishes."""
    loyalty = platform["loyalty"]
    customer = register(profiles, name="Lin Wei")["customer_id"]
    buy(platform["orders"], customer, 30_000, NOW - timedelta(days=1))
    points = until(lambda: loyalty.get(f"/accounts/{customer}").json(), lambda a: a.get("balance", 0) > 0)[
        "balance"
    ]
    mirror = databases["profiles"]["profiles"]
    until(
        lambda: mirror.find_one({"_id": customer}) or {},
        lambda p: p.get("loyalty", {}).get("points") == points,
    )

    erased = profiles.request("DELETE", f"/customers/{customer}", json={"reason": "customer request"})
    assert erased.status_code == 202, erased.text
    account = until(
        lambda: databases["loyalty"]["accounts"].find_one({"_id": customer}), lambda a: a["closed"]
    )
    ledger = list(databases["loyalty"]["ledger"].find({"customer_id": customer}))
    assert account["balance"] == sum(e["points"] for e in ledger) == 0
    assert [(e["kind"], e["points"]) for e in ledger] == [("earn", points), ("expire", -points)]
    profile = until(lambda: mirror.find_one({"_id": customer}), lambda p: p["loyalty"]["points"] == 0)
    assert profile["loyalty"]["tier"] == account["tier"]


def test_the_balance_mirrors_follow_an_earn_that_reaches_loyalty_after_a_later_redemption(
    platform, profiles, databases
):
    """Issue 18: an earn is stamped with the order's paid time; paid before a redemption but
    applied after it, it is loyalty's last entry, and both mirrors show the balance after it."""
    loyalty = platform["loyalty"]
    customer = register(profiles, name="Zhou Min")["customer_id"]
    buy(platform["orders"], customer, 20_000, NOW - timedelta(days=1))
    until(lambda: loyalty.get(f"/accounts/{customer}").json(), lambda a: a.get("balance") == 200)
    redeemed = loyalty.post(
        f"/accounts/{customer}/redemptions", json={"points": 150, "reason": "voucher"}, headers=once()
    )
    assert redeemed.status_code == 201, redeemed.text
    buy(platform["orders"], customer, 12_900, NOW - timedelta(hours=1))  # paid before the redemption
    account = until(
        lambda: loyalty.get(f"/accounts/{customer}").json(), lambda a: a["lifetime_earned"] == 329
    )
    assert account["balance"] == 179
    view = until(
        lambda: view_360(profiles, customer),
        lambda v: v["source"] == "read_model" and len(v["loyalty"]["ledger"]) == 3,
    )
    assert view["loyalty"]["account"]["balance"] == 179
    until(
        lambda: databases["profiles"]["profiles"].find_one({"_id": customer}) or {},
        lambda p: p.get("loyalty", {}).get("points") == 179,
    )


def test_search_filters_sorts_and_pages_and_exports_csv(platform, profiles):
    city = f"city-{uuid.uuid4().hex[:6]}"
    # two equal spends straddle the first page's end: the next page must go on inside the tie
    spends = [5_000, 10_000, 15_000, 20_000, 20_000, 30_000, 35_000]
    customers = []
    for cents in spends:
        customer = register(profiles, city=city, name=f"Buyer {cents}")["customer_id"]
        buy(platform["orders"], customer, cents, NOW - timedelta(days=2))
        customers.append(customer)
    prospect = register(profiles, city=city)["customer_id"]
    for customer in customers:
        scored(profiles, customer, lambda p: p["purchases"]["count"] == 1)
    scored(profiles, prospect)

    seen, cursor, pages = [], None, 0
    while True:
        params = {"city": city, "sort": "spend", "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = profiles.get("/customers", params=params).json()
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3 and len(seen) == 8 == len({r["customer_id"] for r in seen})
    assert [r["net_spend_cents"] for r in seen] == sorted(spends, reverse=True) + [0]

    cheapest_first = profiles.get("/customers", params={"city": city, "sort": "spend", "order": "asc"}).json()
    assert [r["net_spend_cents"] for r in cheapest_first["items"]] == [0, *sorted(spends)]
    prospects = profiles.get("/customers", params={"city": city, "segment": "Prospect"}).json()["items"]
    assert [r["customer_id"] for r in prospects] == [prospect]
    at_risk = profiles.get("/customers", params={"city": city, "min_risk": 0.0, "sort": "risk"}).json()[
        "items"
    ]
    assert len(at_risk) == 7 and all(r["churn_risk"] is not None for r in at_risk)
    registered_now = profiles.get(
        "/customers",
        params={
            "city": city,
            "registered_from": to_rfc3339(NOW - timedelta(minutes=1)),
            "registered_to": to_rfc3339(NOW + timedelta(minutes=1)),
        },
    ).json()["items"]
    assert len(registered_now) == 8

    exported = profiles.get("/customers", params={"city": city, "sort": "spend", "format": "csv"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(r["net_spend_cents"]) for r in rows] == sorted(spends, reverse=True) + [0]
    assert rows[0]["name"] == f"Buyer {max(spends)}"


def test_segments_summary_on_known_data(platform, profiles, databases):
    until(lambda: profiles.get("/segments").json()["customers"], lambda n: n >= 1)
    summary = profiles.get("/segments").json()
    stored = list(databases["profiles"]["profiles"].find({}, {"rfm": 1, "purchases": 1, "value": 1}))
    assert summary["customers"] == len(stored)
    revenue = sum(d["purchases"]["net_spend_cents"] for d in stored)
    for dimension in ("by_segment", "by_lifecycle_stage", "by_abc_class", "by_tier"):
        groups = summary[dimension]
        assert sum(g["customers"] for g in groups.values()) == len(stored)
        assert sum(g["revenue_cents"] for g in groups.values()) == revenue
        assert abs(sum(g["revenue_share"] for g in groups.values()) - 1) < 0.001
    prospects = [d for d in stored if d["rfm"]["segment"] == "Prospect"]
    assert summary["by_segment"]["Prospect"]["customers"] == len(prospects)
    assert summary["by_segment"]["Prospect"]["revenue_cents"] == 0
    window = profiles.get("/segments", params={"from": to_rfc3339(NOW + timedelta(days=3650))}).json()
    assert window["moves"]["total"] == 0


def test_seasonality_index_from_the_orders_service(platform, profiles):
    # A currency of its own so other tests' orders do not count: 3 months of one year.
    orders = platform["orders"]
    customer = unique_id()
    for month, cents in ((1, 10_000), (2, 20_000), (3, 30_000)):
        placed = orders.post(
            "/orders",
            json={
                "customer_id": customer,
                "currency": "EUR",
                "items": [{"sku": "s-1", "category": "c", "brand": "b", "qty": 1, "unit_price_cents": cents}],
                "placed_at": f"2025-{month:02d}-10T10:00:00Z",
            },
        ).json()
        orders.post(
            f"/orders/{placed['order_id']}/pay",
            json={"at": f"2025-{month:02d}-10T11:00:00Z"},
            headers=once(),
        )
    season = profiles.get("/analytics/seasonality", params={"currency": "EUR"}).json()
    assert season["currency"] == "EUR" and season["months"] == 3
    assert season["index"] == {"01": 0.5, "02": 1.0, "03": 1.5}
    assert season["by_year"]["2025"]["index"] == {"01": 0.5, "02": 1.0, "03": 1.5}


def test_the_churn_warning_workflow_end_to_end(platform, profiles, stack, prefix):
    orders, complaints = platform["orders"], platform["complaints"]
    customer = register(profiles, name="Qian Hua")["customer_id"]
    for k in range(8):
        buy(orders, customer, 80_000, NOW - timedelta(days=300 - 20 * k))
    opened = complaints.post(
        "/complaints", json={"customer_id": customer, "category": "logistics", "severity": "high"}
    )
    assert opened.status_code == 201
    survey = complaints.post(
        "/surveys",
        json={"customer_id": customer, "scores": dict.fromkeys(DIMENSIONS, 1), "recommend": 1},
    )
    assert survey.status_code == 201, survey.text

    profile = scored(profiles, customer, lambda p: p["churn"]["warning"]["open"])
    assert profile["churn"]["level"] == "high", profile["churn"]
    listed = until(
        lambda: profiles.get("/churn-warnings", params={"customer_id": customer}).json()["items"],
        lambda items: len(items) == 1,
    )
    warning = listed[0]
    assert warning["status"] == "open" and warning["reasons"] and warning["value_at_risk_cents"] > 0
    assert warning["customer_name"] == "Qian Hua"  # the worklist names its people
    shown = view_360(profiles, customer)["churn_warnings"]  # the agent's screen has it too
    assert [w["warning_id"] for w in shown] == [warning["warning_id"]]
    board = profiles.get("/churn-warnings").json()["items"]
    opens = [w for w in board if w["open"]]
    assert board[: len(opens)] == opens  # open first
    assert [w["value_at_risk_cents"] for w in opens] == sorted(
        (w["value_at_risk_cents"] for w in opens), reverse=True
    )

    wid = warning["warning_id"]
    assert (
        profiles.post(f"/churn-warnings/{wid}/assign", json={"assignee": "agent-7"}).json()["status"]
        == "assigned"
    )
    acted = profiles.post(
        f"/churn-warnings/{wid}/actions", json={"action": "call", "note": "offered a voucher"}
    )
    assert acted.status_code == 200 and acted.json()["status"] == "actioned"
    reader = TopicReader(stack, prefix + "crm.interactions.v1")
    action = reader.collect(lambda e: e["subject"] == customer and e["data"]["kind"] == "churn_action", 1)
    reader.close()
    assert action[0]["data"]["attributes"]["action"] == "call"
    assert action[0]["data"]["attributes"]["episode_id"] == wid
    scored(profiles, customer, lambda p: p["engagement"]["interactions_30d"].get("churn_action") == 1)

    closed = profiles.post(f"/churn-warnings/{wid}/outcome", json={"outcome": "retained"}).json()
    assert closed["status"] == "closed" and closed["outcome"] == "retained"
    refused = profiles.post(f"/churn-warnings/{wid}/actions", json={"action": "email"})
    assert refused.status_code == 409
    assert profiles.post(f"/churn-warnings/{wid}/actions", json={"action": "teleport"}).status_code == 422
    history = profiles.get(f"/churn-warnings/{wid}").json()["history"]
    assert [h["what"] for h in history] == ["assigned", "action", "closed"]


def test_a_fresh_buyer_is_not_warned_about_the_moment_they_buy(platform, profiles):
    """Register, pay one order of 999.00, read the profile a few seconds later: a customer who
    just bought has not started to slip away, whatever the model's 90-day odds say."""
    customer = register(profiles, name="Zhou Min", marketing_consent=True)["customer_id"]
    buy(platform["orders"], customer, 99_900, NOW - timedelta(seconds=5))  # paid, then read
    profile = scored(profiles, customer, lambda p: p["purchases"]["count"] == 1)
    churn = profile["churn"]
    assert churn["warning"]["open"] is False, churn
    assert churn["level"] != "high", churn
    assert not [r for r in churn["reasons"] if r["code"] == "silence"], churn["reasons"]
    time.sleep(2)  # a review or two later: still nothing on the worklist
    assert profiles.get("/churn-warnings", params={"customer_id": customer}).json()["items"] == []


PERSONAL = {
    "name": "Erika Mustermann",
    "email": "erika.m@example.org",
    "phone": "+49 30 1234567",
    "city": "Quedlinburg",
}


def _contains(node: Any, needles: tuple[str, ...]) -> list[str]:
    if isinstance(node, dict):
        return [hit for v in node.values() for hit in _contains(v, needles)]
    if isinstance(node, list):
        return [hit for v in node for hit in _contains(v, needles)]
    if isinstance(node, bytes):
        node = node.decode("utf-8", "replace")
    if isinstance(node, str):
        return [n for n in needles if n in node]
    return []


def test_after_erasure_no_personal_field_remains_anywhere(platform, profiles, databases):
    secret_note = "Erika said her husband lost his job"
    customer = register(
        profiles, **PERSONAL, birth_date="1980-02-03", gender="female", marketing_consent=True
    )["customer_id"]
    buy(platform["orders"], customer, 25_000, NOW - timedelta(days=5))
    complaint = platform["complaints"].post(
        "/complaints",
        headers={"Idempotency-Key": f"k-{customer}"},
        json={
            "customer_id": customer,
            "category": "service",
            "severity": "medium",
            "description": secret_note,
        },
    )
    assert complaint.status_code == 201
    # Every free text the case desk keeps: a case's text, the procedure's notes, the resolution
    # and the customer's confirmation comment.
    cases = platform["complaints"]
    case_id = complaint.json()["complaint_id"]
    steps = [
        ("escalate", {"note": f"escalated: {secret_note}"}),
        ("decision", {"valid": True, "reason": f"decided: {secret_note}", "department": "customer_service",
                      "root_cause": "service.conduct"}),
        ("remedy", {"description": f"remedy: {secret_note}", "compensations": []}),
        ("resolve", {"resolution": f"resolved: {secret_note}"}),
        ("confirm", {"satisfied": True, "note": f"confirmed: {secret_note}"}),
    ]  # fmt: skip
    for step, body in steps:
        done = cases.post(f"/cases/{case_id}/{step}", role="supervisor", json=body)
        assert done.status_code == 200, (step, done.text)
    suggestion = cases.post(
        "/cases",
        json={"kind": "suggestion", "customer_id": customer, "category": "service", "text": secret_note},
    )
    assert suggestion.status_code == 201, suggestion.text
    scored(
        profiles,
        customer,
        lambda p: p["purchases"]["count"] == 1 and p["identity"]["email"] == PERSONAL["email"],
    )
    until(
        lambda: profiles.get(f"/customers/{customer}/360").json(),
        lambda v: v["loyalty"]["account"] is not None,
    )
    needles = (*PERSONAL.values(), secret_note, "1980-02-03")

    def everywhere() -> list[str]:
        hits = []
        for name, db in databases.items():
            for collection in db.list_collection_names():
                for doc in db[collection].find():
                    hits += [f"{name}.{collection}: {h}" for h in _contains(doc, needles)]
        return hits

    assert everywhere()  # the test can see personal data where it is stored
    case_texts = [body.get("note") or body.get("reason") or body.get("description") or body.get("resolution")
                  for _, body in steps]  # fmt: skip
    stored = databases["complaints"]["complaints"].find_one({"_id": case_id})
    assert set(_contains(stored, case_texts)) == set(case_texts)
    export = profiles.get(f"/customers/{customer}/export")
    assert export.status_code == 200
    body = export.json()
    assert body["registration"]["email"] == PERSONAL["email"] and len(body["orders"]) == 1
    assert body["complaints"][0]["description"] == secret_note and body["loyalty"]["account"]

    erased = profiles.request("DELETE", f"/customers/{customer}", json={"reason": "customer request"})
    assert erased.status_code == 202, erased.text
    again = profiles.request("DELETE", f"/customers/{customer}")
    assert again.status_code == 200 and again.json()["status"] == "already erased"

    until(everywhere, lambda hits: not hits)
    profile = scored(profiles, customer, lambda p: p["erased"])
    assert all(
        profile["identity"][k] is None for k in ("name", "email", "phone", "city", "birth_date", "gender")
    )
    assert profile["purchases"]["net_spend_cents"] == 25_000  # amounts stay for accounting
    order = databases["orders"]["orders"].find_one({"customer_id": customer})
    assert order["paid_cents"] == 25_000
    account = until(
        lambda: databases["loyalty"]["accounts"].find_one({"_id": customer}), lambda a: a and a["closed"]
    )
    assert account["lots"] == []
    assert profiles.request("PATCH", f"/customers/{customer}", json={"name": "Back"}).status_code == 409


def test_erasing_a_customer_with_an_open_warning_closes_it_and_leaves_nothing_personal(
    platform, profiles, databases
):
    person = {"name": "Tomasz Nowak", "email": "t.nowak@example.org", "phone": "+48 22 555 0101"}
    customer = register(profiles, **person, city="Lodz")["customer_id"]
    for k in range(8):
        buy(platform["orders"], customer, 80_000, NOW - timedelta(days=300 - 20 * k))
    opened = platform["complaints"].post(
        "/complaints", json={"customer_id": customer, "category": "logistics", "severity": "high"}
    )
    assert opened.status_code == 201
    profile = scored(
        profiles, customer, lambda p: p["purchases"]["count"] == 8 and p["churn"]["warning"]["open"]
    )
    overdue = next(r for r in profile["churn"]["reasons"] if r["code"] == "overdue")
    assert overdue["text_en"] == "last bought 160 days ago; usually buys every 20 days"
    assert overdue["text_zh"] == "上次购买在 160 天前；通常每 20 天购买一次"
    warning = until(
        lambda: profiles.get("/churn-warnings", params={"customer_id": customer}).json()["items"],
        lambda items: len(items) == 1,
    )[0]
    assert warning["open"] and warning["value_at_risk_cents"] > 0
    assert all(r["text_en"] and r["text_zh"] for r in warning["reasons"])
    assert warning["customer_name"] == "Tomasz Nowak"
    erased = profiles.request("DELETE", f"/customers/{customer}", json={"reason": "customer request"})
    assert erased.status_code == 202, erased.text
    closed = until(
        lambda: profiles.get(f"/churn-warnings/{warning['warning_id']}").json(), lambda w: not w["open"]
    )
    assert closed["outcome"] == "recovered" and closed["ended_by"] == "erased"
    listed = profiles.get("/churn-warnings", params={"customer_id": customer}).json()["items"]
    assert [w["customer_name"] for w in listed] == [None]  # the worklist no longer names them
    stored = databases["profiles"]["churn_warnings"].find_one({"_id": warning["warning_id"]})
    assert not _contains(stored, (*person.values(), "Lodz"))
