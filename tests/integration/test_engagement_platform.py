"""Engagement with the whole platform on the embedded stack and the real local SMTP server:
win-back on churn warnings with a control group, coupons through orders (applied, redeemed,
released, raced), one-click unsubscribe through profiles, mail held while the relay is down,
erasure, the uplift report on a seeded simulation whose true effect is known, points about to
expire announced by loyalty and reminded by a campaign, and tier benefits applied to orders."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlsplit

import numpy as np
import pytest

from services.common.clock import to_rfc3339
from services.common.contracts import build_event
from services.engagement.domain import in_control
from services.stack.harness import Service, once, start_platform, stop_services, unique_id, until
from tests.conftest import NOW
from tests.integration.test_engagement import BIRTHDAY, WINBACK, care_due, churn_warning

CODE = re.compile(r"\b[2-9A-Z]{4}-[2-9A-Z]{4}-[2-9A-Z]{4}\b")


@pytest.fixture(scope="module")
def platform(stack, prefix, clock_file, tmp_path_factory) -> dict[str, Service]:
    holidays = tmp_path_factory.mktemp("holidays") / "holidays.toml"
    # The test clock's day is a holiday here.
    holidays.write_text('[[holiday]]\nname = "shop_day"\ndates = ["2026-11-22"]\n')
    # Points live 20 days and are announced 30 days ahead: every lot is announced as it is earned.
    programme = holidays.parent / "programme.toml"
    programme.write_text("[loyalty]\npoints_expire_after_days = 20\nexpiry_notice_days = 30\n")
    started = start_platform(
        stack,
        tmp_path_factory.mktemp("faust"),
        CRM_TOPIC_PREFIX=prefix,
        CRM_CLOCK_FILE=str(clock_file),
        CRM_ENGAGEMENT_TIMEZONE="UTC",  # the test clock's noon is outside quiet hours
        CRM_ENGAGEMENT_HOLIDAYS_FILE=str(holidays),
        CRM_LOYALTY_PROGRAMME_FILE=str(programme),
        CRM_LOYALTY_EXPIRY_SECONDS="0.5",
    )
    yield started
    stop_services(started.values())


@pytest.fixture(scope="module")
def engagement(platform) -> Service:
    return platform["engagement"]


def register(platform, *, consent: bool = True, **fields) -> str:
    customer = unique_id()
    answer = platform["profiles"].post(
        "/customers",
        json={
            "customer_id": customer,
            "name": fields.pop("name", "Wang Fang"),
            "email": f"{customer}@example.com",
            "marketing_consent": consent,
            "channel": "web",
            **fields,
        },
    )
    assert answer.status_code == 201, answer.text
    return customer


def mailbox(engagement: Service, customer: str) -> list[dict]:
    return engagement.get("/mailbox", params={"to": f"{customer}@example.com"}).json()["items"]


def known(engagement: Service, customers: list[str]) -> None:
    """Engagement has folded the registrations (its contacts come from crm.customers.v1)."""
    for customer in customers:
        until(
            lambda c=customer: engagement.get(f"/contacts/{c}").status_code,
            lambda status: status == 200,
        )


@pytest.fixture
def campaign(engagement):
    """Create campaigns; each test's are paused when it ends, so signals of the next test do
    not reach them."""
    created = []

    def create(engagement: Service, **body) -> dict:
        answer = engagement.post("/campaigns", json=body)
        assert answer.status_code == 201, answer.text
        created.append(answer.json()["campaign_id"])
        return answer.json()

    yield create
    for campaign_id in created:
        engagement.post(f"/campaigns/{campaign_id}/pause")


def place(orders: Service, customer: str, cents: int, **extra):
    return orders.post(
        "/orders",
        json={
            "customer_id": customer,
            "currency": "CNY",
            "items": [
                {"sku": "sku-1", "category": "shoes", "brand": "acme", "qty": 1, "unit_price_cents": cents}
            ],
            **extra,
        },
    )


def test_win_back_on_churn_warnings_holds_out_a_control_group_and_coupons_work_through_orders(
    campaign, platform, engagement, publish
):
    orders = platform["orders"]
    winback = campaign(
        engagement,
        name="Win-back",
        trigger="churn_warning",
        templates=WINBACK,
        default_locale="en",
        offer={"kind": "amount", "value": 2000, "min_spend_cents": 5000, "valid_days": 14},
        control_share=0.3,
    )
    customers = [register(platform) for _ in range(24)]
    known(engagement, customers)
    publish([churn_warning(c) for c in customers])

    def report() -> dict:
        return engagement.get(f"/campaigns/{winback['campaign_id']}/report").json()

    done = until(
        report, lambda r: r["treated"]["customers"] + r["control"]["customers"] == 24 and r["pending"] == 0
    )
    treated, control = done["treated"]["customers"], done["control"]["customers"]
    # Held out by a stable hash of campaign and customer, fixed before anything was sent.
    expected = sum(in_control(winback["campaign_id"], c, 0.3) for c in customers)
    assert control == expected and treated == 24 - expected and treated >= 3
    assert done["sent"] == done["delivered"] == treated
    codes = {}
    for customer in customers:
        got = mailbox(engagement, customer)
        assert len(got) <= 1
        if got:
            assert got[0]["subject"].startswith("We miss you")
            codes[customer] = CODE.search(got[0]["text"]).group(0)
    assert len(codes) == treated  # the control group got nothing

    # Applied and redeemed: the discount is checked, the code is used once the order is paid.
    first, second, third = list(codes)[:3]
    placed = place(orders, first, 12_900, coupon_code=codes[first])
    assert placed.status_code == 201, placed.text
    assert placed.json()["amount_cents"] == 10_900 and placed.json()["discount_cents"] == 2000
    assert orders.post(f"/orders/{placed.json()['order_id']}/pay", json={}, headers=once()).status_code == 200
    until(lambda: engagement.get(f"/coupons/{codes[first]}").json()["state"], lambda s: s == "redeemed")
    again = place(orders, first, 12_900, coupon_code=codes[first])
    assert again.status_code == 409 and "redeemed" in again.json()["detail"]
    # Below the minimum spend, another customer's code, a guessed code: refused.
    assert place(orders, second, 4000, coupon_code=codes[second]).status_code == 409
    assert place(orders, third, 12_900, coupon_code=codes[second]).status_code == 404
    assert place(orders, third, 12_900, coupon_code="ZZZZ-ZZZZ-ZZZZ").status_code == 404
    assert engagement.get("/coupons/ZZZZ-ZZZZ-ZZZZ").status_code == 404

    # Released when its order is cancelled: usable again.
    held = place(orders, second, 9000, coupon_code=codes[second])
    assert held.status_code == 201 and held.json()["amount_cents"] == 7000
    assert engagement.get(f"/coupons/{codes[second]}").json()["state"] == "reserved"
    assert (
        orders.post(
            f"/orders/{held.json()['order_id']}/cancel", json={"reason": "changed mind"}, headers=once()
        ).status_code
        == 200
    )
    until(lambda: engagement.get(f"/coupons/{codes[second]}").json()["state"], lambda s: s == "issued")

    # Two orders racing for one code: one wins.
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: place(orders, third, 20_000, coupon_code=codes[third]), range(4)))
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409], [a.text for a in answers]

    # The paid order counts as a conversion of the treated arm, with its revenue.
    final = until(report, lambda r: r["treated"]["converted"] >= 1)
    assert final["treated"]["revenue_cents"] >= 10_900 and final["coupons_redeemed"] == 1
    assert final["uplift"]["low"] <= final["uplift"]["estimate"] <= final["uplift"]["high"]


def test_one_click_unsubscribe_changes_consent_in_profiles_and_stops_marketing(
    campaign, platform, engagement, publish
):
    greeting = campaign(
        engagement, name="Birthday (unsubscribe)", trigger="care_due", templates=BIRTHDAY, control_share=0
    )
    customer = register(platform, name="Chen Jing")
    known(engagement, [customer])
    publish(care_due(customer))
    mail = until(lambda: mailbox(engagement, customer), lambda items: len(items) == 1)[0]
    assert "生日快乐" in mail["subject"]  # the campaign's default locale, zh-CN
    link = mail["list_unsubscribe"].strip("<>")
    parts = urlsplit(link)
    # RFC 8058: a POST with this body to the List-Unsubscribe address, no key, no login.
    answer = engagement.client.post(
        f"{parts.path}?{parts.query}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200, answer.text
    consent = until(
        lambda: platform["profiles"].get(f"/customers/{customer}/consent").json(),
        lambda c: c["consent_channels"]["email"] is False,
    )
    assert consent["consent_channels"] == {"email": False, "sms": True, "push": True}
    assert consent["consent_history"][-1]["source"].startswith("one-click unsubscribe")
    # A forged link changes nothing.
    forged = engagement.client.post(f"{parts.path}?{parts.query.replace('&t=', '&t=0')}")
    assert forged.status_code == 404
    # Marketing by email stops: another campaign does not reach them.
    until(lambda: engagement.get(f"/contacts/{customer}").json()["consent"]["email"], lambda v: v is False)
    campaign(engagement, name="Birthday 2", trigger="care_due", templates=BIRTHDAY, control_share=0)
    publish(care_due(customer))
    time.sleep(2)
    assert len(mailbox(engagement, customer)) == 1
    assert greeting["campaign_id"]


def test_churn_warning_actions_coupon_and_email_issue_a_real_coupon_and_send_a_real_message(
    campaign, platform, engagement, publish
):
    profiles = platform["profiles"]
    first, second = register(platform, name="Zhao Min"), register(platform, name="Huang Lei")
    known(engagement, [first, second])
    publish(churn_warning(first), churn_warning(second))
    for customer in (first, second):
        until(
            lambda c=customer: profiles.get("/churn-warnings", params={"customer_id": c}).json()["items"],
            lambda items: len(items) == 1,
        )
    coupon = profiles.post(
        f"/churn-warnings/ep-{first}/actions", json={"action": "coupon", "channel": "email"}
    )
    assert coupon.status_code == 200, coupon.text
    # Queued to go (the sender, every 0.2 s here, may have claimed or sent it already), not
    # held out or suppressed, and with its coupon.
    assert coupon.json()["engagement"]["state"] in ("pending", "sending", "sent"), coupon.text
    assert coupon.json()["engagement"]["coupon_id"]
    email = profiles.post(
        f"/churn-warnings/ep-{second}/actions", json={"action": "email", "channel": "email"}
    )
    assert email.json()["engagement"]["campaign_id"] == "cmp-churn-email"
    got = until(lambda: mailbox(engagement, first), lambda items: len(items) == 1)[0]
    code = CODE.search(got["text"]).group(0)
    assert engagement.get(f"/coupons/{code}").json()["customer_id"] == first
    assert "好久不见" in got["subject"]  # the stock templates' default locale
    assert until(lambda: mailbox(engagement, second), lambda items: len(items) == 1)[0]["subject"].endswith(
        "我们做得怎么样？"
    )
    # Their outcomes are measured in those campaigns' reports.
    report = engagement.get("/campaigns/cmp-churn-coupon/report").json()
    assert report["treated"]["customers"] >= 1 and report["sent"] >= 1


def test_a_saved_audience_over_profile_fields_is_counted_live_and_reached_by_a_one_off_campaign(
    campaign, platform, engagement
):
    city = f"City-{unique_id('x')}"
    customers = [register(platform, city=city) for _ in range(3)]
    saved = engagement.post("/audiences", json={"name": "One city", "filters": {"city": city}})
    assert saved.status_code == 201, saved.text
    audience_id = saved.json()["audience_id"]
    counted = until(lambda: engagement.get(f"/audiences/{audience_id}").json(), lambda a: a["count"] == 3)
    assert {s["customer_id"] for s in counted["sample"]} == set(customers)
    assert (
        engagement.post("/audiences", json={"name": "x", "filters": {"tier": "diamond"}}).status_code == 422
    )
    known(engagement, customers)
    sale = campaign(
        engagement,
        name="City sale",
        kind="one_off",
        audience_id=audience_id,
        templates=BIRTHDAY,
        control_share=0,
    )
    for customer in customers:
        until(lambda c=customer: mailbox(engagement, c), lambda items: len(items) == 1)
    assert engagement.get(f"/campaigns/{sale['campaign_id']}/report").json()["audience"] == 3

    # A holiday campaign reaches the same audience on the calendar's date (today), once.
    unknown = engagement.post(
        "/campaigns",
        json={
            "name": "x",
            "kind": "holiday",
            "holiday": "nope",
            "audience_id": audience_id,
            "templates": BIRTHDAY,
        },
    )
    assert unknown.status_code == 422 and "shop_day" in unknown.json()["detail"]
    holiday = campaign(
        engagement,
        name="Shop day",
        kind="holiday",
        holiday="shop_day",
        audience_id=audience_id,
        templates=BIRTHDAY,
        control_share=0,
        purpose="service",  # the sale above already reached them today: no pacing in the way
    )
    report = until(
        lambda: engagement.get(f"/campaigns/{holiday['campaign_id']}/report").json(), lambda r: r["sent"] == 3
    )
    assert report["audience"] == 3
    for customer in customers:
        until(lambda c=customer: mailbox(engagement, c), lambda items: len(items) == 2)


def test_mail_waits_while_the_relay_is_down_and_goes_once_when_it_is_back(
    campaign, platform, engagement, stack, publish
):
    greeting = campaign(
        engagement, name="Birthday (relay down)", trigger="care_due", templates=BIRTHDAY, control_share=0
    )
    customers = [register(platform) for _ in range(3)]
    known(engagement, customers)
    stack.smtp.stop()
    try:
        publish([care_due(c) for c in customers])

        def messages() -> list[dict]:
            return engagement.get(f"/campaigns/{greeting['campaign_id']}/messages").json()["items"]

        waiting = until(messages, lambda items: len(items) == 3 and all(m["attempts"] >= 1 for m in items))
        assert {m["state"] for m in waiting} == {"pending"}
        assert all("unreachable" in m["reason"] for m in waiting)
    finally:
        stack.mail_server()
    for customer in customers:
        until(lambda c=customer: mailbox(engagement, c), lambda items: len(items) == 1, timeout=60)
    engagement.child.stop()  # a restart sends nothing twice
    engagement.child.start()
    engagement.child.wait_ready(60)
    time.sleep(2)
    assert all(len(mailbox(engagement, c)) == 1 for c in customers)


def test_an_erased_customer_gets_nothing_more_and_their_messages_lose_personal_content(
    campaign, platform, engagement, publish
):
    greeting = campaign(
        engagement, name="Birthday (erasure)", trigger="care_due", templates=BIRTHDAY, control_share=0
    )
    customer = register(platform, name="Sun Li")
    known(engagement, [customer])
    publish(care_due(customer))
    until(lambda: mailbox(engagement, customer), lambda items: len(items) == 1)
    assert platform["profiles"].request("DELETE", f"/customers/{customer}", json={}).status_code == 202

    def message() -> dict:
        items = engagement.get(f"/campaigns/{greeting['campaign_id']}/messages").json()["items"]
        return next(m for m in items if m["customer_id"] == customer)

    scrubbed = until(message, lambda m: "subject" not in m and "to" not in m)
    assert scrubbed["state"] == "sent" and scrubbed["sent_at"]
    contact = engagement.get(f"/contacts/{customer}").json()
    assert contact["erased"] and contact["email"] is None
    campaign(
        engagement, name="Birthday (after erasure)", trigger="care_due", templates=BIRTHDAY, control_share=0
    )
    publish(care_due(customer))
    time.sleep(2)
    assert len(mailbox(engagement, customer)) == 1


def paid_order(orders: Service, customer: str, cents: int, **extra) -> dict:
    placed = place(orders, customer, cents, **extra)
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["order_id"]
    assert orders.post(f"/orders/{order_id}/pay", json={}, headers=once()).status_code == 200
    return placed.json()


def test_points_about_to_expire_are_announced_once_per_lot_and_reminded_by_a_campaign(
    campaign, platform, engagement
):
    loyalty = platform["loyalty"]
    reminder = campaign(
        engagement,
        name="Points expiring",
        trigger="points_expiring",
        templates={
            "en": {
                "subject": "{{ signal.points }} points expire on {{ signal.expires_at[:10] }}",
                "text": "Dear {{ customer.name }}, {{ signal.points }} of your {{ signal.balance }} points "
                "expire on {{ signal.expires_at[:10] }}.\n",
                "html": "<p>{{ signal.points }} points expire on {{ signal.expires_at[:10] }}</p>",
            }
        },
        default_locale="en",
        control_share=0,
    )
    customer = register(platform, name="Chen Jing")
    known(engagement, [customer])
    paid_order(platform["orders"], customer, 12_900)  # 129 points, expiring in 20 days

    got = until(lambda: mailbox(engagement, customer), lambda items: len(items) == 1, timeout=90)[0]
    expires = to_rfc3339(NOW + timedelta(days=20))[:10]
    assert got["subject"] == f"129 points expire on {expires}"
    assert "129 of your 129 points" in got["text"]
    account = loyalty.get(f"/accounts/{customer}").json()
    assert account["expiring_soon"] == [{"date": expires, "points": 129}]

    # A second lot is announced on its own, the first not again; its reminder within the hour
    # of the first is held back by pacing (one message when two reach a customer at once).
    paid_order(platform["orders"], customer, 5_000)

    def report() -> dict:
        return engagement.get(f"/campaigns/{reminder['campaign_id']}/report").json()

    assert until(report, lambda r: r["audience"] == 2, timeout=90)["sent"] == 1
    time.sleep(2)  # several expiry sweeps later: still two announcements, one message
    assert (report()["audience"], report()["suppressed"], len(mailbox(engagement, customer))) == (2, 1, 1)


def test_loyalty_tier_benefits_are_applied_to_orders_that_ask_for_them(platform):
    orders, loyalty = platform["orders"], platform["loyalty"]
    gold = register(platform)
    paid_order(orders, gold, 600_000)  # past gold's 5,000 yuan of trailing spend
    until(
        lambda: loyalty.get(f"/accounts/{gold}").json().get("tier"), lambda tier: tier == "gold", timeout=90
    )

    placed = place(orders, gold, 10_000, tier_benefits=True, discount_cents=1_000)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    # 5 % of what is left after the shop's own discount, and free shipping, shown on the order.
    assert order["benefits"] == {
        "tier": "gold",
        "discount_percent": 5,
        "discount_cents": 450,
        "free_shipping": True,
    }
    assert order["discount_cents"] == 1_450 and order["amount_cents"] == 8_550
    assert orders.get(f"/orders/{order['order_id']}").json()["benefits"] == order["benefits"]

    # Not asked: nothing applied. No loyalty account yet: nothing to apply.
    plain = place(orders, gold, 10_000).json()
    assert plain["benefits"] is None and plain["amount_cents"] == 10_000
    stranger = place(orders, unique_id(), 10_000, tier_benefits=True).json()
    assert stranger["benefits"] is None and stranger["amount_cents"] == 10_000


def test_audiences_by_gender_age_band_city_tier_channel_and_last_purchase_are_counted_live(
    platform, engagement
):
    city = f"City-{unique_id('x')}"
    young = register(
        platform, city=city, gender="female", birth_date="1996-05-01", city_tier=1, channel="app"
    )
    older = register(platform, city=city, gender="male", birth_date="1970-05-01", city_tier=3, channel="web")
    paid_order(platform["orders"], young, 12_900)

    def count(**filters) -> dict:
        saved = engagement.post("/audiences", json={"name": "x", "filters": {"city": city, **filters}})
        assert saved.status_code == 201, saved.text
        return engagement.get(f"/audiences/{saved.json()['audience_id']}").json()

    until(lambda: count()["count"], lambda n: n == 2)
    for filters, members in (
        ({"gender": "female"}, [young]),
        ({"age_band": "55-64"}, [older]),  # born 1970: 56 on the test clock's day
        ({"city_tier": 3}, [older]),
        ({"channel": "app"}, [young]),
        ({"gender": "male", "channel": "app"}, []),
    ):
        audience = count(**filters)
        assert audience["count"] == len(members), (filters, audience)
        assert [s["customer_id"] for s in audience["sample"]] == members
    # Bought within a month (once the scorer has the purchase); the other never bought.
    recent = until(lambda: count(last_purchase_max_days=30), lambda a: a["count"] == 1)
    assert recent["sample"][0]["customer_id"] == young and recent["sample"][0]["recency_days"] <= 30
    assert count(last_purchase_min_days=31)["count"] == 0
    # A churn risk ceiling: at or under the buyer's own risk it is in, under it it is out.
    risk = recent["sample"][0]["churn_risk"]
    assert young in [s["customer_id"] for s in count(max_risk=risk)["sample"]]
    if risk > 0:
        assert young not in [s["customer_id"] for s in count(max_risk=risk / 2)["sample"]]
    bad = engagement.post("/audiences", json={"name": "x", "filters": {"max_risk": 0.2, "min_risk": 0.5}})
    assert bad.status_code == 422


def test_the_uplift_report_covers_the_true_effect_of_a_seeded_simulation(
    campaign, platform, engagement, publish, stack, prefix
):
    """600 customers, a 30 % control group; 10 % of the control group converts and 25 % of
    the treated: the report's 95 % interval must hold the true effect, 0.15."""
    rng = np.random.default_rng(20261130)
    customers = [unique_id("sim") for _ in range(600)]
    publish(
        [
            build_event(
                "crm.customer.registered",
                {
                    "customer_id": c,
                    "name": "Sim",
                    "email": f"{c}@example.com",
                    "phone": None,
                    "gender": None,
                    "birth_date": None,
                    "city": None,
                    "city_tier": None,
                    "channel": "web",
                    "referred_by": None,
                    "marketing_consent": True,
                    "registered_at": to_rfc3339(NOW - timedelta(days=30)),
                },
                source="/services/profiles",
            )
            for c in customers
        ]
    )
    known(engagement, customers[-1:])
    until(lambda: all(engagement.get(f"/contacts/{c}").status_code == 200 for c in customers[::50]), bool)
    sim = campaign(
        engagement,
        name="Simulated sale",
        kind="one_off",
        channel="push",  # no relay needed: measured on assignment, whatever the delivery
        purpose="service",
        templates={"en": {"subject": "Sale", "text": "Sale today", "html": "<p>Sale</p>"}},
        control_share=0.3,
        recipients=customers,
    )
    rows = until(
        lambda: engagement.get(f"/campaigns/{sim['campaign_id']}/report").json(),
        lambda r: r["treated"]["customers"] + r["control"]["customers"] == 600,
        timeout=90,
    )
    groups = {m["customer_id"]: m["group"] for m in _all_messages(engagement, sim["campaign_id"])}
    paid_at = NOW + timedelta(days=2)
    events = []
    truth = {"treated": 0.25, "control": 0.10}
    # Each group converts at its true rate exactly, the buyers drawn at random: the groups
    # follow the campaign's random id, and independent draws on top of them would leave the
    # true effect outside a 95 % interval in one run of twenty.
    converting = set()
    for group, rate in truth.items():
        members = [c for c in customers if groups[c] == group]
        converting.update(rng.choice(members, size=round(rate * len(members)), replace=False).tolist())
    for k, customer in enumerate(customers):
        if customer in converting:
            events.append(
                build_event(
                    "crm.order.paid",
                    {
                        "order_id": f"o-sim-{sim['campaign_id'][-8:]}-{k}",
                        "customer_id": customer,
                        "amount_cents": 5000,
                        "currency": "CNY",
                        "paid_at": to_rfc3339(paid_at),
                    },
                    source="/services/orders",
                    time=paid_at,
                )
            )
    publish(events)
    final = until(
        lambda: engagement.get(f"/campaigns/{sim['campaign_id']}/report").json(),
        lambda r: r["treated"]["converted"] + r["control"]["converted"] == len(events),
        timeout=90,
    )
    lift = final["uplift"]
    assert lift["low"] <= 0.15 <= lift["high"], final
    assert lift["low"] > 0  # and it is told apart from no effect
    assert rows["control"]["customers"] == final["control"]["customers"]


def _all_messages(engagement: Service, campaign_id: str) -> list[dict]:
    items, cursor = [], None
    while True:
        page = engagement.get(
            f"/campaigns/{campaign_id}/messages", params={"limit": 500, "cursor": cursor}
        ).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items
