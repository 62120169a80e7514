"""Complaint rules without I/O: business hours, SLA clocks, pausing, escalation, reopening."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import Kind
from services.complaints import domain
from services.complaints.domain import Calendar, ComplaintError, SlaPolicy, Status

MON_9 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # a Monday
OFFICE = Calendar.from_config(
    {
        "timezone": "UTC",
        "hours": {d: ["09:00", "17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        "holidays": ["2026-11-18"],
    }
)


def h(hours: float) -> timedelta:
    return timedelta(hours=hours)


def escalations(change: domain.Change) -> list:
    """The escalations a watcher round made (warnings before a breach are their own test)."""
    return [(t, d) for t, d in change.facts if t.endswith(".escalated")]


def breach_check(c: domain.Complaint, policy: SlaPolicy):
    """When the next breach (not warning) could happen."""
    due = domain.deadlines(c, policy)
    pending = [
        due[k]
        for k in (domain.FIRST_RESPONSE, domain.RESOLUTION, domain.OVERDUE)
        if due[k] and k not in c.breaches
    ]
    return min(pending, default=None) if c.status in domain.ACTIVE else None


def test_around_the_clock_counts_wall_time():
    cal = Calendar()
    assert cal.seconds_between(MON_9, MON_9 + h(30)) == 30 * 3600
    assert cal.add(MON_9, 3600) == MON_9 + h(1)


def test_office_hours_skip_nights_weekends_and_holidays():
    # Friday 16:00 + 2 business hours = Monday 10:00.
    friday_4pm = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
    assert OFFICE.add(friday_4pm, 2 * 3600) == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert OFFICE.seconds_between(friday_4pm, datetime(2026, 11, 23, 10, 0, tzinfo=UTC)) == 2 * 3600
    # Tuesday 16:00 + 2h: Wednesday is a holiday, so Thursday 10:00.
    assert OFFICE.add(datetime(2026, 11, 17, 16, 0, tzinfo=UTC), 7200) == datetime(
        2026, 11, 19, 10, 0, tzinfo=UTC
    )
    # A night is zero business time.
    assert (
        OFFICE.seconds_between(datetime(2026, 11, 16, 18, tzinfo=UTC), datetime(2026, 11, 17, 8, tzinfo=UTC))
        == 0
    )


def test_office_hours_in_another_time_zone():
    shanghai = Calendar.from_config({"timezone": "Asia/Shanghai", "hours": {"mon": ["09:00", "18:00"]}})
    # 09:00 in Shanghai is 01:00 UTC.
    assert shanghai.add(datetime(2026, 11, 16, 0, 0, tzinfo=UTC), 3600) == datetime(
        2026, 11, 16, 2, 0, tzinfo=UTC
    )


def opened(severity="high", vip=False, policy=None, at=MON_9):
    policy = policy or SlaPolicy.default()
    return domain.open_complaint(
        complaint_id="cp-1",
        customer_id="c-1",
        category="logistics",
        severity=severity,
        channel="phone",
        order_id=None,
        description="late",
        vip=vip,
        at=at,
        policy=policy,
        by="agent",
    )


def test_opening_states_the_targets_and_vip_targets_are_tighter():
    standard = opened("high")
    vip = opened("high", vip=True)
    assert standard.facts[0][1]["first_response_due"] == MON_9 + h(4)
    assert standard.facts[0][1]["resolution_due"] == MON_9 + h(24)
    assert vip.facts[0][1]["first_response_due"] == MON_9 + h(2)
    assert vip.facts[0][1]["resolution_due"] == MON_9 + h(12)


def test_breach_escalates_once_per_breach_and_never_twice():
    policy = SlaPolicy.default()
    c = opened("high").complaint
    assert escalations(domain.breaches_at(c, MON_9 + h(3.9), policy)) == []
    first = domain.breaches_at(c, MON_9 + h(4.1), policy)
    assert [(d["level"], d["reason"]) for _, d in escalations(first)] == [(1, "first_response_breach")]
    assert escalations(domain.breaches_at(first.complaint, MON_9 + h(5), policy)) == []
    later = domain.breaches_at(first.complaint, MON_9 + h(49), policy)
    assert [(d["level"], d["reason"]) for _, d in escalations(later)] == [
        (2, "resolution_breach"),
        (3, "resolution_breach"),
    ]
    assert escalations(domain.breaches_at(later.complaint, MON_9 + h(200), policy)) == []
    assert breach_check(later.complaint, policy) is None
    assert later.complaint.supervision_due == 3  # the top level waits for its supervisor


def test_awaiting_the_customer_stops_the_clock():
    policy = SlaPolicy.default()
    c = domain.assign(opened("high").complaint, MON_9 + h(1), "ann", "lead").complaint
    c = domain.await_customer(c, MON_9 + h(2), "ann", "asked for photos").complaint
    assert domain.next_check(c, policy) is None
    assert escalations(domain.breaches_at(c, MON_9 + h(30), policy)) == []  # 28 of those hours were paused
    c = domain.assign(c, MON_9 + h(30), "ann", "ann").complaint  # the customer answered
    assert domain.elapsed(c, MON_9 + h(30), policy.calendar) == pytest.approx(2 * 3600)
    assert breach_check(c, policy) == MON_9 + h(30 + 22)
    assert escalations(domain.breaches_at(c, MON_9 + h(51), policy)) == []
    assert len(escalations(domain.breaches_at(c, MON_9 + h(53), policy))) == 1


def test_business_hours_decide_when_a_breach_happens():
    policy = SlaPolicy.from_config(
        {"calendar": {"hours": {d: ["09:00", "17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}}}
    )
    friday_4pm = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
    c = opened("high", policy=policy, at=friday_4pm).complaint  # 4 business hours: due Monday 12:00
    assert breach_check(c, policy) == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert escalations(domain.breaches_at(c, datetime(2026, 11, 23, 11, 59, tzinfo=UTC), policy)) == []
    assert len(escalations(domain.breaches_at(c, datetime(2026, 11, 23, 12, 1, tzinfo=UTC), policy))) == 1


def test_resolution_reports_whether_it_was_within_sla():
    policy = SlaPolicy.default()
    c = domain.assign(opened("critical").complaint, MON_9 + h(0.5), "ann", "lead").complaint
    fast = domain.resolve(c, MON_9 + h(6), "refunded", "ann", policy)
    assert fast.facts[0][1]["within_sla"] is True and fast.facts[0][1]["resolution_hours"] == 6
    slow = domain.resolve(c, MON_9 + h(9), "refunded", "ann", policy)
    assert slow.facts[0][1]["within_sla"] is False


def test_reopen_within_the_window_resumes_the_clock_and_after_it_is_refused():
    policy = SlaPolicy.default()
    c = domain.assign(opened("high").complaint, MON_9 + h(1), "ann", "lead").complaint
    c = domain.resolve(c, MON_9 + h(10), "replaced", "ann", policy).complaint
    assert domain.next_check(c, policy) is None
    late = MON_9 + timedelta(days=15)
    with pytest.raises(ComplaintError) as caught:
        domain.reopen(c, late, "still broken", "ann", policy)
    assert caught.value.kind == Kind.CONFLICT
    back = domain.reopen(c, MON_9 + h(34), "still broken", "ann", policy)
    assert back.complaint.status is Status.ASSIGNED and back.complaint.reopen_count == 1
    # 10 hours ran before resolution; 24 stood still; 14 are left.
    assert breach_check(back.complaint, policy) == MON_9 + h(34 + 14)


def test_illegal_actions_say_what_is_allowed_and_escalation_tops_out():
    policy = SlaPolicy.default()
    c = opened().complaint
    with pytest.raises(ComplaintError) as caught:
        domain.close(c, MON_9 + h(1), "ann")
    assert caught.value.extra["allowed"] == ["assign", "resolve", "escalate"]
    for level in (1, 2, 3):
        c = domain.escalate(c, MON_9 + h(level), "lead", None).complaint
        assert c.level == level
    with pytest.raises(ComplaintError, match="top escalation level"):
        domain.escalate(c, MON_9 + h(4), "lead", None)
    resolved = domain.resolve(c, MON_9 + h(5), "done", "ann", policy).complaint
    assert domain.allowed_actions(resolved) == ["close", "reopen"]


def test_first_response_is_the_first_time_an_agent_acts():
    c = domain.assign(opened().complaint, MON_9 + h(2), "ann", "lead").complaint
    c = domain.assign(c, MON_9 + h(3), "bob", "lead").complaint
    assert c.first_response_at == MON_9 + h(2)


def test_a_csat_survey_follows_resolution_by_its_own_customer_once():
    policy = SlaPolicy.default()
    open_one = opened("high").complaint
    with pytest.raises(ComplaintError, match="follows resolution") as early:
        domain.with_survey(open_one, "c-1", "sv-1")
    assert early.value.kind == Kind.CONFLICT
    resolved = domain.resolve(open_one, MON_9 + h(2), "replaced", "ann", policy).complaint
    with pytest.raises(ComplaintError, match="another customer") as stranger:
        domain.with_survey(resolved, "c-2", "sv-1")
    assert stranger.value.kind == Kind.INVALID
    answered = domain.with_survey(resolved, "c-1", "sv-1")
    assert answered.survey_id == "sv-1"
    with pytest.raises(ComplaintError, match="already answered") as twice:
        domain.with_survey(answered, "c-1", "sv-2")
    assert twice.value.kind == Kind.CONFLICT
    closed = domain.close(resolved, MON_9 + h(3), "ann").complaint
    assert domain.with_survey(closed, "c-1", "sv-3").survey_id == "sv-3"
