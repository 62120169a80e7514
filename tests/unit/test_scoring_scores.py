"""The profile's scores on hand-computed cases, and the fold's exactness under duplicates and
reordering."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.common.clock import to_rfc3339
from services.common.contracts import build_event
from services.profiles import domain as profiles_domain
from services.scoring import facts as F
from services.scoring import reasons as R
from services.scoring import scores as S
from services.scoring import warnings as W

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def ev(name, at, /, **data):
    return build_event(f"crm.{name}", {"customer_id": "c-1", **data}, source="/test", time=at)


def paid(order, days_ago, cents=10_000):
    at = NOW - timedelta(days=days_ago)
    return ev("order.paid", at, order_id=order, amount_cents=cents, currency="CNY", paid_at=to_rfc3339(at))


def opened_complaint(complaint_id, days_ago, category):
    at = NOW - timedelta(days=days_ago)
    return ev(
        "complaint.opened",
        at,
        complaint_id=complaint_id,
        category=category,
        severity="high",
        channel="app",
        order_id=None,
        opened_at=to_rfc3339(at),
        first_response_due=to_rfc3339(NOW),
        resolution_due=to_rfc3339(NOW),
        vip=False,
    )


def fold(events):
    facts = F.empty("c-1")
    for event in events:
        F.apply(facts, event)
    return facts


@pytest.mark.parametrize(
    ("r", "f", "name"),
    [
        (1, 1, "Hibernating"),
        (2, 4, "At Risk"),
        (1, 5, "Can't Lose Them"),
        (3, 2, "About to Sleep"),
        (3, 3, "Need Attention"),
        (3, 5, "Loyal"),
        (4, 4, "Loyal"),
        (4, 1, "Promising"),
        (5, 1, "New"),
        (4, 3, "Potential Loyalist"),
        (5, 2, "Potential Loyalist"),
        (5, 5, "Champions"),
        (None, None, "Prospect"),
    ],
)
def test_segment_map_first_match_wins(r, f, name):
    assert S.segment(r, f) == name


def test_every_r_f_pair_has_a_segment():
    for r, f in itertools.product(range(1, 6), repeat=2):
        assert S.segment(r, f) != "Prospect"


def test_quintiles_reward_low_recency_and_high_frequency():
    bounds = (10.0, 20.0, 30.0, 40.0)
    assert [S.quintile(v, bounds) for v in (5, 10, 15, 35, 99)] == [1, 2, 2, 4, 5]
    assert [S.quintile(v, bounds, higher_is_better=False) for v in (5, 10, 15, 35, 99)] == [5, 5, 4, 2, 1]


def test_abc_against_population_thresholds():
    population = S.Population(abc_a_min_cents=100_000, abc_b_min_cents=20_000)
    assert [S.abc_class(c, population) for c in (150_000, 100_000, 50_000, 19_999, 0)] == [
        "A",
        "A",
        "B",
        "C",
        "C",
    ]


def test_net_spend_takes_off_returns_and_non_return_refunds_once():
    r_at = to_rfc3339(NOW - timedelta(days=2))
    events = [
        paid("o-1", 10),
        paid("o-2", 5, 4_000),
        ev(
            "order.returned",
            NOW - timedelta(days=3),
            order_id="o-1",
            return_id="r-1",
            items=[{"sku": "s", "qty": 1, "amount_cents": 3_000}],
            amount_cents=3_000,
            currency="CNY",
            reason="x",
            full=False,
            returned_at=r_at,
        ),
        ev(
            "order.refunded",
            NOW - timedelta(days=2),
            order_id="o-1",
            refund_id="f-1",
            amount_cents=3_000,
            currency="CNY",
            reason="return",
            return_id=None,
            refunded_at=r_at,
        ),
        ev(
            "order.refunded",
            NOW - timedelta(days=2),
            order_id="o-2",
            refund_id="f-2",
            amount_cents=500,
            currency="CNY",
            reason="goodwill",
            return_id=None,
            refunded_at=r_at,
        ),
    ]
    p = S.summarize(fold(events), NOW)
    assert (p.count, p.net_cents) == (2, 10_000 - 3_000 + 4_000 - 500)


def test_purchase_summary_counts_days_gaps_and_the_trailing_year():
    same_day = NOW - timedelta(days=400, hours=1)
    events = [
        paid("o-1", 400),
        ev(
            "order.paid",
            same_day,
            order_id="o-2",
            amount_cents=2_000,
            currency="CNY",
            paid_at=to_rfc3339(same_day),
        ),
        paid("o-3", 100, 5_000),
        paid("o-4", 10, 1_000),
        paid("o-5", -3, 7_000),  # paid "in the future" of this clock: not yet counted
    ]
    p = S.summarize(fold(events), NOW)
    assert (p.count, p.net_cents, p.trailing_cents) == (4, 18_000, 6_000)
    assert p.days == (same_day, NOW - timedelta(days=100), NOW - timedelta(days=10))
    assert p.mean_gap_days == pytest.approx((400 + 1 / 24 - 10) / 2)
    assert (p.recency_days, p.tenure_days) == (pytest.approx(10), pytest.approx(400 + 1 / 24))

    one = S.summarize(fold([paid("o-1", 400)]), NOW)
    assert (one.count, one.trailing_cents, one.mean_gap_days, one.recency_days) == (1, 0, None, 400)
    assert S.summarize(fold([]), NOW).count == 0


def test_duplicates_and_reordering_give_the_same_facts():
    events = [
        paid("o-1", 100),
        paid("o-2", 40),
        opened_complaint("k-1", 5, "product"),
        ev(
            "complaint.resolved",
            NOW - timedelta(days=4),
            complaint_id="k-1",
            resolved_at=to_rfc3339(NOW - timedelta(days=4)),
            resolution="ok",
            within_sla=True,
            resolution_hours=20.0,
        ),
    ]
    expected = fold(events)
    rng = random.Random(3)
    for _ in range(20):
        shuffled = events + rng.sample(events, 2)
        rng.shuffle(shuffled)
        assert fold(shuffled) == expected
    assert expected["complaints"]["k-1"]["state"]["open"] is False


def test_lifecycle_from_prospect_to_lost():
    population = S.Population(median_gap_days=30)

    def stage(events, now=NOW):
        f = fold(events)
        p = S.summarize(f, now)
        return S.lifecycle(p, S.value(p, now, population), now, population)

    assert stage([]) == "prospect"
    assert stage([paid("o-1", 3)]) == "exploration"
    assert stage([paid("o-1", 40), paid("o-2", 3)]) == "growth"
    regular = [paid(f"o-{k}", 10 + 30 * k) for k in range(8)]  # every 30 days for 7 months
    assert stage(regular) == "stable"
    assert stage(regular, NOW + timedelta(days=80)) == "decline"  # more than twice the usual gap
    assert stage(regular, NOW + timedelta(days=400)) == "lost"
    assert stage([*regular, paid("o-new", -85)], NOW + timedelta(days=86)) in ("stable", "growth")


def test_service_signals_raise_churn_risk_with_reasons():
    base = [paid("o-1", 200), paid("o-2", 150), paid("o-3", 20)]
    population = S.Population()
    f = fold(base)
    p = S.summarize(f, NOW)
    v = S.value(p, NOW, population)
    calm = S.churn(f, p, v, NOW, population)
    assert [r["code"] for r in calm.reasons] == ["model_no_purchase_90d"]
    logit = S.RISK_SCALE * math.log(v.p_no_purchase_90d / (1 - v.p_no_purchase_90d))
    assert calm.risk == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-4)
    unhappy = base + [
        opened_complaint("k-1", 2, "logistics"),
        ev(
            "survey.submitted",
            NOW - timedelta(days=1),
            survey_id="s-1",
            complaint_id=None,
            kind="general",
            scores={"overall": 1},
            recommend=2,
            submitted_at=to_rfc3339(NOW - timedelta(days=1)),
        ),
    ]
    f2 = fold(unhappy)
    worse = S.churn(f2, S.summarize(f2, NOW), v, NOW, population)
    assert worse.risk > calm.risk
    reasons = {r["code"]: r for r in worse.reasons}
    assert {"open_complaint", "detractor"} <= set(reasons)
    assert reasons["detractor"]["text_en"].startswith("last answered 2 out of 10")
    assert reasons["open_complaint"]["text_zh"] == "有 1 个投诉尚未解决"
    assert worse.action == "service_recovery"
    assert calm.action == "coupon"  # nothing wrong but time passing: an offer to come back
    detractor = fold(base + unhappy[-1:])  # unhappy in a survey, no complaint
    assert S.churn(detractor, S.summarize(detractor, NOW), v, NOW, population).action == "service_recovery"
    # Every recommendation is an action the churn-warning workflow records.
    assert {worse.action, calm.action} <= set(profiles_domain.ACTIONS)


def scored_now(events, now=NOW, population=None):
    population = population or S.Population(repeat_gap_days=60.0, median_clv_cents=0.0)
    f = fold(events)
    p = S.summarize(f, now)
    return f, p, S.churn(f, p, S.value(p, now, population), now, population)


def test_a_fresh_buyer_is_not_at_high_level_nor_overdue_seconds_after_buying():
    _, p, c = scored_now([paid("o-1", 5 / 86400, 99_900)])
    assert 0.6 < c.risk < 0.8  # the model's honest odds of no second purchase in 90 days
    assert c.level == "low"  # but nothing to act on: they just bought
    assert [r["code"] for r in c.reasons] == ["model_no_purchase_90d"]
    step = W.step(W.NO_EPISODE, c.level, c.reasons, p.last, True, False, 10_000, NOW)
    assert step.fired is None and not step.episode.open


def test_overdue_against_the_own_cadence_reads_as_a_sentence():
    regular = [paid(f"o-{k}", 74 + 21 * k, 30_000) for k in range(8)]  # every 21 days, then silence
    _, p, c = scored_now(regular)
    overdue = next(r for r in c.reasons if r["code"] == "overdue")
    assert overdue["numbers"] == {"days_since_last_purchase": 74.0, "usual_gap_days": 21.0}
    assert overdue["text_en"] == "last bought 74 days ago; usually buys every 21 days"
    assert overdue["text_zh"] == "上次购买在 74 天前；通常每 21 天购买一次"
    assert c.level == ("high" if c.risk >= W.HIGH else "medium" if c.risk >= W.MEDIUM else "low")
    _, _, gone = scored_now([paid(f"o-{k}", 200 + 21 * k, 30_000) for k in range(8)])
    assert gone.risk >= W.HIGH and gone.level == "high"
    # At 30 days (less than one and a half usual gaps) the same customer is not overdue.
    _, _, earlier = scored_now([paid(f"o-{k}", 30 + 21 * k, 30_000) for k in range(8)])
    assert "overdue" not in {r["code"] for r in earlier.reasons} and earlier.level != "high"


def test_a_one_time_buyer_is_measured_against_the_shops_repeat_buyers():
    population = S.Population(repeat_gap_days=60.0)
    _, _, within = scored_now([paid("o-1", 45)], population=population)
    assert within.level != "high" and len(within.reasons) == 1
    _, _, beyond = scored_now([paid("o-1", 75)], population=population)
    late = next(r for r in beyond.reasons if r["code"] == "no_second_purchase")
    assert late["text_en"] == "bought once, 75 days ago; repeat buyers here usually come back within 60 days"
    assert beyond.level == "high"


def test_service_trouble_right_after_a_purchase_waits_for_the_quiet_days():
    history = [paid(f"o-{k}", 5 + 30 * k, 30_000) for k in range(4)]
    trouble = [opened_complaint("k-1", 3, "logistics"), opened_complaint("k-2", 2, "product")]
    _, p, c = scored_now(history + trouble)
    assert "open_complaint" in {r["code"] for r in c.reasons}
    assert c.level != "high"  # bought 5 days ago: nobody is called yet
    later = NOW + timedelta(days=20)
    _, p, c = scored_now(history + trouble, later)
    assert c.level == ("high" if c.risk >= W.HIGH else "medium")


def test_a_warning_fires_once_per_episode_and_says_how_it_ended():
    reasons = [{"code": "overdue"}]
    bought = NOW - timedelta(days=80)
    opened = W.step(W.NO_EPISODE, "high", reasons, bought, True, False, 12_345, NOW)
    assert opened.fired == W.WARNING and opened.episode.episode == 1
    assert opened.episode.value_at_risk_cents == 12_345 and opened.episode.opened_at == NOW
    # A restart reads the stored episode back: the same state fires nothing again.
    restored = W.episode_from(opened.episode._asdict())
    assert (
        W.step(restored, "high", reasons, bought, True, False, 99_999, NOW + timedelta(days=1)).fired is None
    )
    back = W.step(restored, "low", [], NOW + timedelta(days=2), True, False, 0, NOW + timedelta(days=2))
    assert (back.fired, back.ended_by, back.episode.open) == (W.RECOVERED, "purchase", False)
    cleared = W.step(restored, "medium", [{"code": "model_no_purchase_90d"}], bought, True, False, 0, NOW)
    assert cleared.ended_by == "reasons_cleared"
    erased = W.step(restored, "high", reasons, bought, True, True, 0, NOW)
    assert erased.ended_by == "erased"
    assert (
        W.step(W.NO_EPISODE, "high", reasons, bought, False, False, 0, NOW).fired is None
    )  # not worth keeping
    assert W.step(W.NO_EPISODE, "high", reasons, bought, True, True, 0, NOW).fired is None  # erased
    assert W.step(back.episode, "high", reasons, bought, True, False, 0, NOW).episode.episode == 2


def test_every_reason_has_a_sentence_in_both_languages():
    assert W.CHANGES | {"model_no_purchase_90d"} == set(R.SENTENCES)
    for en, zh in R.SENTENCES.values():
        assert en and zh and en != zh


def test_one_clock_event_time_during_a_replay_and_wall_time_live():
    from services.common.clock import ManualClock
    from services.scoring.domain import ScoringClock

    clock = ManualClock(NOW)
    scoring = ScoringClock("auto", clock)
    assert scoring.now() == NOW
    scoring.saw(datetime(1997, 9, 30, 12, tzinfo=UTC))  # history arriving
    assert scoring.replaying and scoring.now() == datetime(1997, 9, 30, 12, tzinfo=UTC)
    scoring.saw(NOW - timedelta(minutes=3))  # caught up: live
    assert not scoring.replaying
    clock.advance(days=3)  # a quiet shop: no events for days, and time still moves
    assert scoring.now() == NOW + timedelta(days=3)
    assert ScoringClock("event", clock, watermark=NOW).now() == NOW  # always the events' time
    assert ScoringClock("wall", clock, watermark=NOW, replaying=True).now() == NOW + timedelta(days=3)


def test_batch_model_values_equal_one_by_one():
    population = S.Population()
    batch = [
        S.summarize(fold(events), NOW)
        for events in (
            [],
            [paid("o-1", 3)],
            [paid("o-1", 100), paid("o-2", 40), paid("o-3", 2)],
            [paid("o-1", 300, 5)],
        )
    ]
    together = S.values(batch, NOW, population)
    assert together[0] is None
    for summary, value in zip(batch[1:], together[1:], strict=True):
        alone = S.value(summary, NOW, population)
        assert value.clv_12m_cents == alone.clv_12m_cents
        assert value.p_alive == pytest.approx(alone.p_alive)
        assert value.expected_90d == pytest.approx(alone.expected_90d)


def test_stored_facts_come_back_exactly_with_their_times():
    from services.scoring.store import decode_facts, encode_facts

    def raw(name, at, **data):  # what the fold reads of an event
        return {"type": f"crm.{name}", "time": to_rfc3339(at), "data": data}

    events = [
        paid("o-1", 100),
        raw(
            "order.placed",
            NOW - timedelta(days=101),
            order_id="o-1",
            items=[{"sku": "s-1", "category": "books", "brand": "acme", "qty": 2, "unit_price_cents": 50}],
        ),
        raw("order.cancelled", NOW - timedelta(days=3), order_id="o-2"),
        opened_complaint("k-1", 5, "product"),
        raw(
            "survey.submitted",
            NOW - timedelta(days=2),
            survey_id="s-1",
            kind="general",
            scores={"overall": 2},
            recommend=3,
        ),
        raw("interaction.recorded", NOW - timedelta(days=40), interaction_id="i-1", kind="login"),
        raw("interaction.recorded", NOW - timedelta(hours=1), interaction_id="i-2", kind="search"),
        raw("loyalty.tier_changed", NOW - timedelta(days=1), to_tier="gold", balance=120),
    ]
    facts = F.prune(fold(events), NOW)
    assert "last_seen_before_window" in facts
    assert decode_facts(encode_facts(facts)) == facts
    # profiles written before times were stored untagged still read back
    assert decode_facts('{"x": {"$t": "2026-11-22T12:00:00Z"}}') == {"x": NOW}


def test_the_backlog_sweep_publishes_only_batches_it_has_read_whole():
    from services.scoring.store import complete_below

    def page(*seqs):
        return [{"pending_seq": s} for s in seqs]

    # every partition's page ended early: nothing is left unread
    assert complete_below([page(3, 4), page(4), []], limit=3) is None
    # partition 0 filled its page in batch 5: batch 5 may have more there, and so may later ones
    assert complete_below([page(3, 4, 5), page(4, 6)], limit=3) == 5
    # the earliest cut among full pages bounds what is complete
    assert complete_below([page(3, 7, 9), page(2, 4, 6), page(8)], limit=3) == 6


def test_a_customer_worth_keeping_when_they_bought_stays_so_while_silent():
    bought = NOW - timedelta(days=120)
    asked = []

    def judged_then():
        asked.append(1)
        return True

    reasons = [{"code": "overdue"}]
    # Not worth keeping by today's shrunken value, but they were when they last bought.
    step = W.step(W.NO_EPISODE, "high", reasons, bought, False, False, 5_000, NOW, judged_then)
    assert step.fired == W.WARNING and step.episode.valued
    again = W.step(
        W.NO_EPISODE._replace(**{"judged_purchase_at": bought}),
        "high",
        reasons,
        bought,
        False,
        False,
        0,
        NOW,
        judged_then,
    )
    assert again.fired is None and asked == [1]  # judged once per purchase; this one was not worth it


def test_sentences_say_numbers_as_a_person_would():
    late = R.reason("overdue", 141.2, 56.7, "", days_since_last_purchase=141.2, usual_gap_days=37.8)
    assert late["text_en"] == "last bought 141 days ago; usually buys every 38 days"
    assert late["numbers"]["usual_gap_days"] == 37.8  # the exact numbers stay beside the sentence
    quick = R.reason("overdue", 9.0, 3.8, "", days_since_last_purchase=9.0, usual_gap_days=2.5)
    assert quick["text_en"] == "last bought 9 days ago; usually buys every 2.5 days"


def test_an_episode_read_back_from_the_database_sees_the_same_last_purchase():
    bought = NOW - timedelta(days=90, microseconds=123_456)  # live events carry microseconds
    opened = W.step(W.NO_EPISODE, "high", [{"code": "overdue"}], bought, True, False, 1, NOW).episode
    # MongoDB keeps milliseconds: the stored episode comes back without the last three digits.
    stored = {k: W.stored_precision(v) if isinstance(v, datetime) else v for k, v in opened._asdict().items()}
    later = W.step(W.episode_from(stored), "medium", [{"code": "overdue"}], bought, False, False, 1, NOW)
    assert later.fired is None and later.episode.open  # not mistaken for a new purchase


def non_finite(doc, path=""):
    """Paths of every NaN or infinity anywhere in a document."""
    if isinstance(doc, float):
        return [] if math.isfinite(doc) else [path]
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in non_finite(v, f"{path}.{k}")]
    if isinstance(doc, list | tuple):
        return [p for i, v in enumerate(doc) for p in non_finite(v, f"{path}[{i}]")]
    return []


def uniform_histories(customers, days_ago, cents=10_000):
    return [[paid(f"o-{i}-{d}", d, cents) for d in days_ago] for i in range(customers)]


DEGENERATE_SHOPS = {
    "every customer alike": uniform_histories(80, (120, 90, 60, 30)),
    "a single customer": uniform_histories(1, (60, 30)),
    "all one-time buyers": uniform_histories(80, (20,)),
    "no spread in spend, recent regulars": uniform_histories(80, (3, 2, 1), cents=4_990),
}


@pytest.mark.parametrize("shop", list(DEGENERATE_SHOPS))
def test_a_degenerate_shop_gives_finite_parameters_and_profiles_without_nan(shop):
    from services.scoring import population as P
    from services.scoring.profile import build

    histories = DEGENERATE_SHOPS[shop]
    summaries = [S.summarize(fold(events), NOW) for events in histories]
    fitted = P.compute([P.row(p) for p in summaries], NOW, S.Population())
    parameters = [*fitted.bgnbd.__dict__.values(), *fitted.gamma_gamma.__dict__.values()]
    assert np.isfinite(parameters).all() and math.isfinite(fitted.median_clv_cents)
    for events in histories[:3]:
        profile, _ = build(fold(events), NOW, fitted, None)
        assert non_finite(profile) == []
        assert profile["purchases"]["count"] == len(events)


def test_model_parameters_without_finite_values_leave_the_buyer_to_the_rules():
    # Parameters no fit should keep (q = 1: an infinite mean spend; a = 1: infinite expected
    # purchases): no model value for the customer, and a profile without NaN or infinity.
    from services.scoring.model import BgNbd, GammaGamma
    from services.scoring.profile import build

    broken = S.Population(bgnbd=BgNbd(0.243, 4.414, 1.0, 2.426), gamma_gamma=GammaGamma(6.25, 1.0, 1545.0))
    events = [paid("o-1", 100), paid("o-2", 40), paid("o-3", 2)]
    summary = S.summarize(fold(events), NOW)
    assert S.values([summary], NOW, broken) == [None]
    profile, _ = build(fold(events), NOW, broken, None)
    assert non_finite(profile) == []
    assert profile["value"]["p_alive"] is None and profile["value"]["clv_12m_cents"] == 0
    assert profile["lifecycle"]["stage"] == "growth"  # from the purchases alone, not "prospect"


def test_a_non_finite_model_value_is_stored_as_null_and_counted():
    from services.scoring import metrics
    from services.scoring.pipeline import only_finite

    counted = metrics.NON_FINITE.labels("value.expected_purchases_90d")
    before = counted._value.get()
    profile = {
        "value": {"p_alive": 0.5, "expected_purchases_90d": math.nan, "clv_12m_cents": 0},
        "churn": {"risk": math.inf},
    }
    only_finite("c-1", profile)
    assert profile["value"] == {"p_alive": 0.5, "expected_purchases_90d": None, "clv_12m_cents": 0}
    assert profile["churn"]["risk"] is None
    assert counted._value.get() == before + 1


def test_affinity_is_each_category_and_brands_share_of_the_last_years_net_spend():
    from services.scoring.profile import build

    def placed(order, days_ago, *lines):
        at = NOW - timedelta(days=days_ago)
        items = [
            {"sku": f"s-{n}", "category": c, "brand": b, "qty": 1, "unit_price_cents": cents}
            for n, (c, b, cents) in enumerate(lines)
        ]
        return ev(
            "order.placed", at, order_id=order, items=items, amount_cents=sum(i["unit_price_cents"] for i in items),
            discount_cents=0, currency="CNY", channel="web", promised_delivery_date=None, placed_at=to_rfc3339(at),
        )  # fmt: skip

    events = [
        placed("o-1", 30, ("shoes", "Acme", 6000), ("bags", "Bolt", 4000)),
        paid("o-1", 30, 9000),  # a 10 % discount spreads over both lines
        placed("o-2", 10, ("books", "Page", 3000)),
        paid("o-2", 10, 3000),
        placed("o-3", 400, ("toys", "Fun", 50000)),  # more than a year ago: no longer counts
        paid("o-3", 400, 50000),
    ]
    profile, _ = build(fold(events), NOW, S.Population(), None)
    # net spend in the year: 5400 shoes, 3600 bags, 3000 books, of 12000
    assert profile["affinity"]["categories"] == [
        {"name": "shoes", "share": 0.45},
        {"name": "bags", "share": 0.3},
        {"name": "books", "share": 0.25},
    ]
    assert [b["name"] for b in profile["affinity"]["brands"]] == ["Acme", "Bolt", "Page"]
    assert build(fold([paid("o-9", 5)]), NOW, S.Population(), None)[0]["affinity"] == {
        "categories": [],
        "brands": [],
    }


def test_age_bands_become_birth_dates_on_the_day_of_the_search():
    from datetime import date

    assert profiles_domain.born_within("25-34", date(2026, 11, 22)) == ("1991-11-22", "2001-11-22")
    assert profiles_domain.born_within("65+", date(2024, 2, 29))[1] == "1959-02-28"


def test_rounded_is_round_to_the_last_bit():
    import random

    rng = random.Random(11)
    values = [
        0.0,
        -0.0,
        0.25,
        0.35,
        2.675,
        1.005,
        -2.5e-5,
        0.5,
        1.5,
        1e9 + 0.5,
        math.nan,
        math.inf,
        7,
        5e-324,
    ]
    values += [rng.uniform(-1000, 1000) for _ in range(20_000)] + [rng.random() for _ in range(20_000)]
    values += [rng.randint(-(10**6), 10**6) / 10 ** rng.randint(0, 5) + 0.00005 for _ in range(20_000)]
    for digits in range(5):
        for x in values:
            expected, got = round(x, digits), S.rounded(x, digits)
            assert repr(got) == repr(expected), (x, digits)  # same value, sign of zero and type


def test_the_points_are_the_balance_of_the_entry_loyalty_applied_last_though_stamped_earlier():
    def entry(name, hours_ago, points, balance, sequence, **data):
        at = NOW - timedelta(hours=hours_ago)
        when = {"points_earned": "earned_at", "points_redeemed": "redeemed_at"}[name]
        return ev(
            f"loyalty.{name}",
            at,
            entry_id=f"le-{sequence}",
            points=points,
            balance=balance,
            sequence=sequence,
            **data,
            **{when: to_rfc3339(at)},
        )

    def earn(hours_ago, points, balance, sequence):
        expires = to_rfc3339(NOW + timedelta(days=300))
        return entry(
            "points_earned",
            hours_ago,
            points,
            balance,
            sequence,
            reason="purchase",
            order_id="o-1",
            expires_at=expires,
        )

    # the order was paid 3 hours ago; its earn reached loyalty after a redemption made 2 hours ago
    events = [
        earn(5, 100, 100, 1),
        entry("points_redeemed", 2, 60, 40, 2, reason="coupon"),
        earn(3, 129, 169, 3),
    ]
    for order in itertools.permutations(events):
        assert F.value(fold(order), "loyalty", "balance") == 169
