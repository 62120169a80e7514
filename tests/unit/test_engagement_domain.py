"""Engagement's pure rules: consent, the control group, pacing, quiet hours, coupons, signed
links, templates, the uplift interval and what a provider's delivery receipt may change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from services.engagement import domain, templates
from services.engagement.channels import signature, signed_by_provider
from services.engagement.domain import (
    Arm,
    Contact,
    Coupon,
    CouponState,
    EngagementError,
    Offer,
    Purpose,
    Receipt,
    State,
)
from services.engagement.models import AudienceFilters

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_marketing_needs_consent_for_the_channel_and_service_messages_do_not():
    c = Contact("c-1", email="a@example.com", consent={"email": True, "sms": False, "push": False})
    assert domain.may_send(c, "email", Purpose.MARKETING) is None
    assert domain.may_send(Contact("c-1", email="a@example.com"), "email", Purpose.MARKETING) == (
        "no marketing consent for email"
    )
    assert domain.may_send(c, "sms", Purpose.MARKETING) == "no sms address"
    assert domain.may_send(Contact("c-1", email="a@example.com"), "email", Purpose.SERVICE) is None
    assert domain.may_send(Contact("c-1", erased=True), "push", Purpose.SERVICE) == "erased"


def test_consent_per_channel_reads_the_old_single_field_as_every_channel():
    assert domain.consent_from({"marketing_consent": True}) == {"email": True, "sms": True, "push": True}
    assert domain.consent_from({"marketing_consent": True, "channels": {"email": False}}) == {
        "email": False,
        "sms": True,
        "push": True,
    }


def test_the_control_group_is_stable_and_close_to_its_share():
    ids = [f"c-{k}" for k in range(20_000)]
    first = [domain.in_control("cmp-a", c, 0.1) for c in ids]
    assert first == [domain.in_control("cmp-a", c, 0.1) for c in ids]
    assert 0.09 < sum(first) / len(ids) < 0.11
    other = [domain.in_control("cmp-b", c, 0.1) for c in ids]
    assert first != other  # another campaign draws its own group


def test_frequency_cap_counts_only_the_window():
    recent = [NOW - timedelta(days=1), NOW - timedelta(days=2), NOW - timedelta(days=8)]
    assert domain.within_cap(recent, NOW, 3, 7)
    assert not domain.within_cap([*recent, NOW - timedelta(hours=3)], NOW, 3, 7)


def test_quiet_hours_move_a_late_message_to_nine_in_the_customers_zone():
    late = datetime(2026, 11, 22, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai
    assert domain.after_quiet_hours(late, "Asia/Shanghai") == datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    early = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # 07:00 next day in Shanghai
    assert domain.after_quiet_hours(early, "Asia/Shanghai") == datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    assert domain.after_quiet_hours(NOW, "Asia/Shanghai") == NOW  # 20:00 there


def test_backoff_doubles_and_is_bounded():
    gaps = [(domain.retry_at(NOW, k) - NOW).total_seconds() for k in range(1, 14)]
    assert gaps[:3] == [5, 10, 20] and max(gaps) == 3600


def test_coupon_codes_are_unique_unguessable_and_normalised():
    codes = {domain.new_code() for _ in range(5000)}
    assert len(codes) == 5000
    code = next(iter(codes))
    assert len(code) == 14 and set(code.replace("-", "")) <= set(domain.CODE_ALPHABET)
    assert domain.normalise_code(code.lower().replace("-", " ")) == code


def coupon(**kw) -> Coupon:
    offer = kw.pop("offer", Offer("amount", 2000, min_spend_cents=10000))
    return domain.issue("ABCD-EFGH-JKMN", "c-1", "cmp-1", offer, NOW)


def test_a_coupon_is_reserved_once_checked_and_released_on_cancel():
    c = coupon()
    held = domain.reserve(c, "c-1", "o-1", 15000, NOW)
    assert held.state is CouponState.RESERVED and domain.discount_cents(held.offer, 15000) == 2000
    assert domain.reserve(held, "c-1", "o-1", 15000, NOW) is held  # the same order again
    with pytest.raises(EngagementError, match="already reserved"):
        domain.reserve(held, "c-1", "o-2", 15000, NOW)
    with pytest.raises(EngagementError, match="at least 10000"):
        domain.reserve(c, "c-1", "o-1", 9999, NOW)
    with pytest.raises(EngagementError, match="no coupon"):
        domain.reserve(c, "c-2", "o-1", 15000, NOW)
    with pytest.raises(EngagementError, match="expired"):
        domain.reserve(c, "c-1", "o-1", 15000, NOW + timedelta(days=15))
    assert domain.redeem(held, "o-2") is None
    assert domain.redeem(held, "o-1").state is CouponState.REDEEMED
    assert domain.release(held, "o-1").state is CouponState.ISSUED
    assert domain.discount_cents(Offer("percent", 15), 9999) == 1499


def test_guessing_is_slowed_after_a_few_misses():
    assert domain.guess_delay(2) == 0.0
    assert 0 < domain.guess_delay(3) < domain.guess_delay(6) <= 5.0


def test_signed_links_check_every_part():
    token = domain.sign("secret", "c-1", "email", "unsubscribe")
    assert domain.signed("secret", token, "c-1", "email", "unsubscribe")
    assert not domain.signed("secret", token, "c-2", "email", "unsubscribe")
    assert not domain.signed("other", token, "c-1", "email", "unsubscribe")


def test_a_template_cannot_reach_outside_its_data():
    sneaky = {"en": {"subject": "x", "text": "{{ customer.__class__.__mro__ }}", "html": ""}}
    with pytest.raises(templates.TemplateProblem, match="unsafe"):
        templates.render(sneaky, "en", {"customer": {"name": "a"}})
    html = {"en": {"subject": "{{ n }}", "text": "{{ n }}", "html": "<p>{{ n }}</p>"}}
    assert templates.render(html, "zh-CN", {"n": "<script>"}).html == "<p>&lt;script&gt;</p>"


def test_uplift_interval_is_none_without_both_arms_and_centred_on_the_difference():
    assert domain.uplift(Arm(100, 10), Arm(0, 0)).estimate is None
    u = domain.uplift(Arm(9000, 1350), Arm(1000, 100))
    assert u.estimate == pytest.approx(0.05)
    assert u.low < 0.05 < u.high and u.high - u.low < 0.06


def test_the_95_percent_interval_covers_the_true_effect_about_95_times_in_100():
    rng = np.random.default_rng(20261122)
    p_control, effect = 0.06, 0.03
    covered = 0
    runs = 400
    for _ in range(runs):
        n_t, n_c = 3600, 400  # a 10 % control group
        t = Arm(n_t, int(rng.binomial(n_t, p_control + effect)))
        c = Arm(n_c, int(rng.binomial(n_c, p_control)))
        u = domain.uplift(t, c)
        covered += u.low <= effect <= u.high
    assert 0.92 <= covered / runs <= 0.99


def test_the_holiday_calendar_is_configuration_and_today_is_the_customers_day():
    calendar = domain.load_calendar((domain_root() / "holidays.example.toml").read_text())
    assert {"spring_festival", "mid_autumn", "double_11"} <= set(calendar)
    eleven = datetime(2026, 11, 10, 17, 0, tzinfo=UTC)  # already the 11th in Shanghai
    assert domain.holiday_today(calendar, "double_11", eleven, "Asia/Shanghai").isoformat() == "2026-11-11"
    assert domain.holiday_today(calendar, "double_11", eleven, "UTC") is None
    with pytest.raises(ValueError):
        domain.load_calendar(
            '[[holiday]]\nname = "a"\ndates = ["2026-01-01"]\n[[holiday]]\nname = "a"\ndates = []\n'
        )


def domain_root():
    from pathlib import Path

    return Path(domain.__file__).parent


def test_audience_filters_the_search_lacks_are_applied_to_its_rows():
    filters = {
        "city": "Hangzhou",
        "max_risk": 0.5,
        "last_purchase_min_days": 30,
        "last_purchase_max_days": 90,
    }
    assert domain.search_filters(filters) == {"city": "Hangzhou"}
    assert domain.in_audience({"churn_risk": 0.2, "recency_days": 45}, filters)
    assert not domain.in_audience({"churn_risk": 0.7, "recency_days": 45}, filters)  # above the ceiling
    assert not domain.in_audience({"churn_risk": None, "recency_days": 45}, filters)  # never scored
    assert not domain.in_audience({"churn_risk": 0.2, "recency_days": 10}, filters)  # bought too lately
    assert not domain.in_audience({"churn_risk": 0.2, "recency_days": 120}, filters)  # too long ago
    assert not domain.in_audience({"churn_risk": 0.2, "recency_days": None}, filters)  # never bought
    assert domain.in_audience({"churn_risk": None, "recency_days": None}, {"city": "Hangzhou"})


def test_audience_ranges_must_be_in_order():
    assert AudienceFilters(gender="female", age_band="25-34", city_tier=2, channel="app", max_risk=0.4)
    for bad in (
        {"min_risk": 0.6, "max_risk": 0.4},
        {"last_purchase_min_days": 90, "last_purchase_max_days": 30},
        {"city_tier": 9},
        {"age_band": "30-40"},
    ):
        with pytest.raises(ValidationError):
            AudienceFilters(**bad)


# --- the provider's delivery receipts ----------------------------------------------------------------


@pytest.mark.parametrize("receipt", list(Receipt))
def test_a_receipt_moves_a_sent_message_to_delivered_or_failed(receipt):
    assert domain.receipt_moves(State.SENT, False, receipt) is receipt


@pytest.mark.parametrize("receipt", list(Receipt))
def test_a_message_with_its_final_word_is_not_moved_again(receipt):
    # Delivered stays delivered (not failed, not back to sent); failed stays failed, even when
    # a delivered receipt comes after it: its event was published and counted.
    assert domain.receipt_moves(State.SENT, True, receipt) is None
    assert domain.receipt_moves(State.FAILED, False, receipt) is None


@pytest.mark.parametrize("state", [State.PENDING, State.SENDING, State.HELD_OUT, State.SUPPRESSED])
def test_a_receipt_for_a_message_the_provider_was_not_handed_is_a_conflict(state):
    with pytest.raises(EngagementError) as refused:
        domain.receipt_moves(state, False, Receipt.DELIVERED)
    assert refused.value.kind == "conflict" and state.value in str(refused.value)


def test_a_receipt_is_signed_with_the_webhook_key_over_a_fresh_timestamp():
    body = b'{"message_id": "m-1", "status": "delivered"}'
    now = 1_800_000_000
    stamp = str(now - 10)
    good = signature("provider-secret", stamp, body)
    assert signed_by_provider("provider-secret", stamp, body, good, now)
    assert not signed_by_provider("another-secret", stamp, body, good, now)
    assert not signed_by_provider("provider-secret", stamp, body + b" ", good, now)  # body changed
    assert not signed_by_provider("provider-secret", stamp, body, None, now)
    assert not signed_by_provider("provider-secret", None, body, good, now)
    assert not signed_by_provider("provider-secret", "soon", body, good, now)
    old = str(now - 301)  # replayed after five minutes
    assert not signed_by_provider("provider-secret", old, body, signature("provider-secret", old, body), now)
