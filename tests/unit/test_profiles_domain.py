"""Profiles rules without I/O: registration changes, the churn-warning workflow, summaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import Kind
from services.profiles import domain
from services.profiles.domain import ProfilesError, WarningStatus
from services.profiles.store import search_query, search_sort
from services.scoring.scores import segment_rule

AT = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def customer(**extra):
    attributes = {"customer_id": "c-1", "channel": "app", "name": "Ann", "email": "ann@example.com", **extra}
    return domain.register(attributes, AT).customer


def test_registration_publishes_every_attribute_and_refuses_self_referral():
    change = domain.register({"customer_id": "c-1", "channel": "web", "city": "Hangzhou"}, AT)
    ((kind, data),) = change.facts
    assert kind == "crm.customer.registered" and data["city"] == "Hangzhou" and data["registered_at"] == AT
    assert data["name"] is None and data["marketing_consent"] is False
    with pytest.raises(ProfilesError):
        domain.register({"customer_id": "c-1", "channel": "web", "referred_by": "c-1"}, AT)


def test_an_update_publishes_only_what_really_changed():
    change = domain.update(customer(), {"name": "Ann", "city": "Suzhou"})
    assert change.facts == [("crm.customer.updated", {"customer_id": "c-1", "changes": {"city": "Suzhou"}})]
    assert domain.update(customer(), {"name": "Ann"}).facts == []
    with pytest.raises(ProfilesError):
        domain.update(customer(), {"channel": "web"})


def test_consent_changes_once_and_nothing_changes_after_erasure():
    given = domain.set_consent(customer(), True, None, "web form", "agent", AT)
    every = {"email": True, "sms": True, "push": True}
    assert given.facts[0][1] == {
        "customer_id": "c-1",
        "marketing_consent": True,
        "channels": every,
        "source": "web form",
    }
    assert domain.set_consent(given.customer, True, None, None, "agent", AT).facts == []
    # One channel withdrawn (an unsubscribe link): the others stay, and the history says how.
    no_email = domain.set_consent(given.customer, None, {"email": False}, "unsubscribe", "agent-eng", AT)
    assert no_email.facts[0][1]["channels"] == {**every, "email": False}
    assert no_email.customer.marketing_consent is True
    assert [h["source"] for h in no_email.customer.consent_history] == ["web form", "unsubscribe"]
    assert no_email.customer.consent_history[-1]["by"] == "agent-eng"
    erased = domain.erase(customer(phone="+86 123456"), AT)
    assert (erased.name, erased.email, erased.phone, erased.erased_at) == (None, None, None, AT)
    assert erased.customer_id == "c-1" and erased.registered_at == AT
    with pytest.raises(ProfilesError) as refused:
        domain.update(erased, {"name": "Back"})
    assert refused.value.kind == Kind.CONFLICT


def warning(**extra):
    data = {
        "episode_id": "cw-c-1-1",
        "risk": 0.8,
        "level": "high",
        "reasons": [{"code": "open_complaint", "value": 1}],
        "recommended_action": "service_recovery",
        "abc_class": "A",
        "clv_cents": 50_000,
        "warned_at": AT,
        **extra,
    }
    return domain.warning_from_signal(data, "c-1")


def test_the_warning_workflow_from_open_to_retained():
    w = warning()
    assert w.status is WarningStatus.OPEN and w.value_at_risk_cents == 40_000
    w = domain.assign(w, "agent-7", "lead", AT)
    assert w.status is WarningStatus.ASSIGNED and w.assignee == "agent-7"
    w, facts = domain.act(w, "coupon", "10 % off", "agent-7", AT + timedelta(hours=1), "i-1", "phone")
    assert w.status is WarningStatus.ACTIONED and w.actions[0]["note"] == "10 % off"
    ((kind, interaction),) = facts
    assert kind == "crm.interaction.recorded" and interaction["kind"] == "churn_action"
    assert interaction["attributes"] == {"action": "coupon", "episode_id": "cw-c-1-1", "by": "agent-7"}
    assert (
        domain.assign(w, "agent-9", "lead", AT).status is WarningStatus.ACTIONED
    )  # reassigning keeps it actioned
    w = domain.close(w, "retained", "agent-7", AT + timedelta(days=2))
    assert (w.status, w.outcome, w.is_open) == (WarningStatus.CLOSED, "retained", False)
    with pytest.raises(ProfilesError) as closed:
        domain.act(w, "call", None, "agent-7", AT, "i-2", "phone")
    assert closed.value.kind == Kind.CONFLICT
    assert [h["what"] for h in w.history] == ["assigned", "action", "closed"]


def test_unknown_actions_and_outcomes_are_refused():
    with pytest.raises(ProfilesError):
        domain.act(warning(), "teleport", None, "a", AT, "i-1", "web")
    with pytest.raises(ProfilesError):
        domain.close(warning(), "maybe", "a", AT)


def test_recovery_closes_an_open_warning_but_keeps_an_agents_outcome():
    recovered = domain.recovered(warning(), AT)
    assert (recovered.status, recovered.outcome, recovered.recovered_at) == (
        WarningStatus.CLOSED,
        "recovered",
        AT,
    )
    assert domain.recovered(recovered, AT + timedelta(days=1)) == recovered  # redelivery changes nothing
    lost = domain.close(warning(), "lost", "a", AT)
    after = domain.recovered(lost, AT + timedelta(days=1))
    assert after.outcome == "lost" and after.recovered_at == AT + timedelta(days=1)


def test_erasure_scrubs_the_notes_agents_wrote():
    w, _ = domain.act(warning(), "call", "her husband lost his job", "a", AT, "i-1", "phone")
    assert domain.scrub_notes(w, "[erased]").actions[0]["note"] == "[erased]"


def test_group_summary_shares_and_averages():
    summary = domain.group_summary(
        [
            {"key": "A", "customers": 1, "revenue_cents": 750, "clv_cents": 900},
            {"key": "C", "customers": 3, "revenue_cents": 250, "clv_cents": 300},
        ]
    )
    assert summary["A"] == {
        "customers": 1,
        "customer_share": 0.25,
        "revenue_cents": 750,
        "revenue_share": 0.75,
        "average_clv_cents": 900,
    }
    assert summary["C"]["average_clv_cents"] == 100 and list(summary) == ["C", "A"]


def test_moves_are_counted_by_pair():
    moves = domain.moves_summary([("New", "Loyal"), ("New", "Loyal"), ("Loyal", "At Risk")])
    assert moves == {
        "total": 3,
        "by_move": [
            {"from": "New", "to": "Loyal", "customers": 2},
            {"from": "Loyal", "to": "At Risk", "customers": 1},
        ],
    }


def test_seasonal_index_per_year_and_overall():
    monthly = {(2024, 11): 300, (2024, 12): 100, (2025, 11): 100, (2025, 12): 100}
    season = domain.seasonal_index(monthly)
    assert season["by_year"]["2024"]["index"] == {"11": 1.5, "12": 0.5}
    assert season["by_year"]["2025"]["index"] == {"11": 1.0, "12": 1.0}
    # November averages 200, December 100, all months 150.
    assert season["index"] == {"11": 1.3333, "12": 0.6667} and season["months"] == 4
    assert domain.seasonal_index({}) == {"index": {}, "by_year": {}, "months": 0}


def test_search_sort_directions():
    def order_by(sort, order):
        return search_sort(sort, domain.ascending(sort, order))

    assert order_by("clv", None) == [("rank.clv", -1), ("_id", -1)]
    assert order_by("spend", "asc") == [("rank.spend", 1), ("_id", 1)]
    # Recency is an age: most recent first by default, i.e. the last purchase time descending.
    assert order_by("recency", None) == [("rank.last_purchase", -1), ("_id", -1)]
    assert order_by("recency", "desc") == [("rank.last_purchase", 1), ("_id", 1)]


def test_search_defaults_read_best_first_and_order_overrides():
    assert [domain.ascending(k, None) for k in ("clv", "risk", "spend", "recency")] == [
        False,
        False,
        False,
        True,
    ]
    assert domain.ascending("clv", "asc") is True and domain.ascending("recency", "desc") is False


def test_search_filters_become_a_query_on_the_profile_fields():
    since = datetime(2026, 1, 1, tzinfo=UTC)
    query = search_query(
        domain.ProfileFilters(segment="Champions", tier="gold", min_risk=0.5, registered_from=since)
    )
    assert query == {
        "rfm.segment": "Champions",
        "loyalty.tier": "gold",
        "rank.risk": {"$gte": 0.5},
        "identity.registered_at": {"$gte": since},
    }
    assert search_query(domain.ProfileFilters()) == {}


def test_the_main_currency_is_the_one_most_orders_were_paid_in():
    assert domain.main_currency({"EUR": 3, "CNY": 40, "USD": 12}) == "CNY"
    assert domain.main_currency({}) is None


@pytest.mark.parametrize(
    ("r", "f", "segment", "rule"),
    [(1, 2, "Hibernating", "R 1-2 & F 1-2"), (5, 1, "New", "R 5 & F 1"), (4, 5, "Loyal", "R 3-4 & F 4-5")],
)
def test_segment_rule_explains_the_segment(r, f, segment, rule):
    assert segment_rule(r, f) == (segment, rule)
    assert segment_rule(None, None) == ("Prospect", "no purchase yet")


def test_only_a_customer_the_scorer_warned_about_can_have_churn_warnings():
    assert not domain.ever_warned(None)
    assert not domain.ever_warned({"churn": {"warning": {"open": False, "episode": 0}}})
    assert domain.ever_warned({"churn": {"warning": {"open": False, "episode": 2}}})  # recovered since


def test_exported_cells_never_start_a_spreadsheet_formula():
    from services.profiles.models import csv_cell

    assert [csv_cell(v) for v in ("=1+1", "+31", "-x", "@A1", "\tx", "\rx", "Ada", "")] == [
        "'=1+1",
        "'+31",
        "'-x",
        "'@A1",
        "'\tx",
        "'\rx",
        "Ada",
        "",
    ]
    assert csv_cell(-5) == -5 and csv_cell(None) == ""  # numbers stay numbers
