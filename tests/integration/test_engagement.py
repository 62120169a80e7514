"""The engagement service on the real stack: signals from the broker trigger campaigns, mail
goes to the real local SMTP server and is read back from its mailbox."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest

from services.common.clock import to_rfc3339
from services.common.contracts import build_event
from services.stack.harness import Service, start_service, unique_id, until
from tests.conftest import NOW

BIRTHDAY = {
    "en": {
        "subject": "Happy birthday, {{ customer.name }}!",
        "text": "Dear {{ customer.name }},\nhappy birthday from all of us.\n{% if unsubscribe_url %}Unsubscribe: {{ unsubscribe_url }}{% endif %}\n",
        "html": "<h1>Happy birthday, {{ customer.name }}!</h1><p>All of us at the shop wish you a wonderful day.</p>"
        "<p><a href=\"{{ track('https://shop.example/gifts') }}\">Your birthday picks</a></p>"
        '<p style="font-size:small"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
    },
    "zh-CN": {
        "subject": "{{ customer.name }}，生日快乐！",
        "text": "亲爱的{{ customer.name }}：\n祝您生日快乐！\n退订：{{ unsubscribe_url }}\n",
        "html": "<h1>{{ customer.name }}，生日快乐！</h1><p>全店同仁祝您生日快乐，万事如意。</p>"
        '<p style="font-size:small"><a href="{{ unsubscribe_url }}">退订</a></p>',
    },
}
WINBACK = {
    "en": {
        "subject": "We miss you, {{ customer.name }}",
        "text": "Here is {{ offer.value // 100 }} off your next order: {{ offer.code }} (until {{ offer.expires_at[:10] }}).\n",
        "html": "<p>We miss you, {{ customer.name }}.</p><p>Your code: <b>{{ offer.code }}</b>, "
        "{{ offer.value // 100 }} off from {{ offer.min_spend_cents // 100 }}.</p>",
    },
    "zh-CN": {
        "subject": "{{ customer.name }}，好久不见",
        "text": "送您{{ offer.value // 100 }}元优惠券：{{ offer.code }}\n",
        "html": "<p>{{ customer.name }}，好久不见。</p><p>优惠券：<b>{{ offer.code }}</b></p>",
    },
}


@pytest.fixture(scope="module")
def engagement(stack, prefix, clock_file) -> Service:
    service = start_service(
        stack,
        "engagement",
        CRM_TOPIC_PREFIX=prefix,
        CRM_CLOCK_FILE=str(clock_file),
        CRM_ENGAGEMENT_SEND_SECONDS="0.2",
        CRM_ENGAGEMENT_TIMEZONE="UTC",  # the test clock's noon is outside quiet hours
        **stack.mail_env(),
    )
    yield service
    service.stop()


def registered(customer: str, *, name: str, email: str | None, consent: bool, **more) -> dict:
    return build_event(
        "crm.customer.registered",
        {
            "customer_id": customer,
            "name": name,
            "email": email,
            "phone": None,
            "gender": None,
            "birth_date": "1990-11-22",
            "city": "Hangzhou",
            "city_tier": 2,
            "channel": "web",
            "referred_by": None,
            "marketing_consent": consent,
            "registered_at": to_rfc3339(NOW - timedelta(days=300)),
            **more,
        },
        source="/services/profiles",
    )


def care_due(customer: str) -> dict:
    return build_event(
        "crm.profile.care_due",
        {"customer_id": customer, "kind": "birthday", "date": "2026-11-22"},
        source="/services/scoring",
    )


def churn_warning(customer: str) -> dict:
    return build_event(
        "crm.profile.churn_warning",
        {
            "customer_id": customer,
            "episode_id": f"ep-{customer}",
            "risk": 0.8,
            "level": "high",
            "reasons": [{"code": "recency", "value": 120, "threshold": 90}],
            "recommended_action": "coupon",
            "abc_class": "A",
            "clv_cents": 500000,
            "warned_at": to_rfc3339(NOW),
        },
        source="/services/scoring",
    )


def mailbox(service: Service, to: str) -> list[dict]:
    response = service.get("/mailbox", params={"to": to})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def campaign(service: Service, **body) -> dict:
    response = service.post("/campaigns", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_birthday_greeting_reaches_a_consenting_customer_and_not_one_without_consent(engagement, publish):
    campaign(
        engagement,
        name="Birthday greeting",
        trigger="care_due",
        templates=BIRTHDAY,
        default_locale="en",
        control_share=0,
    )
    yes, no = unique_id(), unique_id()
    yes_mail, no_mail = f"{yes}@example.com", f"{no}@example.com"
    publish(
        registered(yes, name="Li Wei", email=yes_mail, consent=True),
        registered(no, name="Zhang San", email=no_mail, consent=False),
    )
    for customer in (yes, no):  # the registrations are folded before the signals (another topic)
        until(lambda c=customer: engagement.get(f"/contacts/{c}").status_code, lambda s: s == 200)
    publish(care_due(yes), care_due(no))

    got = until(lambda: mailbox(engagement, yes_mail), lambda items: len(items) == 1)[0]
    assert got["subject"] == "Happy birthday, Li Wei!"
    assert "happy birthday from all of us" in got["text"]
    assert "<h1>Happy birthday, Li Wei!</h1>" in got["html"]
    assert got["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"
    assert re.match(r"^<http://127\.0\.0\.1:\d+/unsubscribe\?c=", got["list_unsubscribe"])
    time.sleep(2)
    assert mailbox(engagement, no_mail) == []
    # A redelivered signal sends nothing more: one message per campaign and customer.
    publish(care_due(yes))
    time.sleep(2)
    assert len(mailbox(engagement, yes_mail)) == 1


def test_a_template_error_is_a_422_naming_the_line(engagement):
    broken = {"en": {"subject": "s", "text": "line one\n{% if %}\n", "html": "<p></p>"}}
    response = engagement.post(
        "/campaigns", json={"name": "Broken", "trigger": "care_due", "templates": broken}
    )
    assert response.status_code == 422
    assert response.json()["line"] == 2 and response.json()["part"] == "text"


def test_the_customers_locale_picks_the_template_and_their_time_zone_keeps_quiet_hours(engagement, publish):
    for other in engagement.get("/campaigns").json()["items"]:  # this test's campaign alone
        if other["trigger"] == "care_due" and other["status"] == "active":
            engagement.post(f"/campaigns/{other['campaign_id']}/pause")
    greeting = campaign(
        engagement,
        name="Birthday by locale and zone",
        trigger="care_due",
        templates=BIRTHDAY,
        default_locale="en",
        control_share=0,
    )
    # The test clock's noon UTC is 20:00 in Shanghai (before quiet hours) and 04:00 in Los Angeles.
    shanghai, los_angeles, unknown = unique_id(), unique_id(), unique_id()
    publish(
        registered(
            shanghai,
            name="李伟",
            email=f"{shanghai}@example.com",
            consent=True,
            locale="zh-CN",
            time_zone="Asia/Shanghai",
        ),
        registered(
            los_angeles,
            name="Ann",
            email=f"{los_angeles}@example.com",
            consent=True,
            locale="en",
            time_zone="America/Los_Angeles",
        ),
        registered(unknown, name="Bo", email=f"{unknown}@example.com", consent=True),
    )
    for customer in (shanghai, los_angeles, unknown):
        until(lambda c=customer: engagement.get(f"/contacts/{c}").status_code, lambda s: s == 200)
    assert engagement.get(f"/contacts/{shanghai}").json()["time_zone"] == "Asia/Shanghai"
    publish(care_due(shanghai), care_due(los_angeles), care_due(unknown))

    got = until(lambda: mailbox(engagement, f"{shanghai}@example.com"), lambda items: len(items) == 1)[0]
    assert got["subject"] == "李伟，生日快乐！"  # zh-CN, though the campaign's default is en
    assert mailbox(engagement, f"{unknown}@example.com")[0]["subject"] == "Happy birthday, Bo!"

    def messages() -> dict:
        items = engagement.get(f"/campaigns/{greeting['campaign_id']}/messages").json()["items"]
        return {m["customer_id"]: m for m in items}

    waiting = until(messages, lambda m: los_angeles in m)[los_angeles]
    # Held until 09:00 in Los Angeles (17:00 UTC), not sent in the night there.
    assert waiting["state"] == "pending" and waiting["due_at"].startswith("2026-11-22T17:00:00")
    assert mailbox(engagement, f"{los_angeles}@example.com") == []
