"""The desk's pure rules: task states, the assignee rule, timeline entries and their erasure,
the case fold and the service report's figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import Kind
from services.desk import domain

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def task(due: datetime, now: datetime = T0, remind: int = 15) -> dict:
    return domain.new_task(
        "t-1", "c-1", "callback", "call back", due, "li.wei", None, "agent", now, timedelta(minutes=remind)
    )


def test_a_task_is_open_then_due_at_its_reminder_then_overdue_after_its_time():
    t = task(T0 + timedelta(hours=2))
    assert domain.task_status(t, T0) == "open"
    assert domain.task_status(t, T0 + timedelta(hours=1, minutes=44)) == "open"
    assert domain.task_status(t, T0 + timedelta(hours=1, minutes=45)) == "due"
    assert domain.task_status(t, T0 + timedelta(hours=2)) == "overdue"
    done = {**t, **domain.complete(t, "reached", "li.wei", T0 + timedelta(hours=3))}
    assert domain.task_status(done, T0 + timedelta(hours=5)) == "done"


def test_a_task_due_sooner_than_its_reminder_lead_is_reminded_at_once_not_in_the_past():
    t = task(T0 + timedelta(minutes=5))
    assert t["remind_s"] == T0.timestamp()


def test_a_task_is_completed_once():
    t = task(T0 + timedelta(hours=1))
    done = {**t, **domain.complete(t, "reached", "li.wei", T0)}
    with pytest.raises(domain.DeskError) as refused:
        domain.complete(done, "again", "li.wei", T0)
    assert refused.value.kind is Kind.CONFLICT


def test_a_task_notice_goes_to_the_assignee_else_the_team_s_level_1_supervisor():
    mine = task(T0 + timedelta(hours=2))
    queued = {**mine, "assignee": None, "team": "east"}
    assert domain.notice_recipient(mine, ["wang"]) == "li.wei"
    assert domain.notice_recipient(queued, ["wang", "zhao"]) == "wang"
    assert domain.notice_recipient(queued, []) is None and domain.notice_recipient(queued, None) is None


def test_a_task_notice_says_which_task_is_due_or_late_in_the_reader_s_language():
    t = {**task(T0 + timedelta(hours=2)), "case_id": "cs-9"}
    subject, text = domain.task_notice(t, "reminder", "en")
    assert subject == "[Task due soon] call back"
    assert "Task: t-1 (callback)" in text and "Customer: c-1" in text and "Due: 2026-10-01T11:00:00" in text
    assert "Case: cs-9" in text
    subject, text = domain.task_notice({**t, "assignee": None, "team": "east"}, "overdue", "zh-CN")
    assert subject == "[任务已逾期] call back"
    assert text.startswith("任务已逾期 (east)")
    assert domain.notice_key("t-1", "overdue") != domain.notice_key("t-1", "reminder")


def test_an_unknown_task_kind_is_refused():
    with pytest.raises(domain.DeskError, match="unknown task kind"):
        domain.new_task("t-1", "c-1", "visit", "x", T0, None, "team-a", "a", T0, timedelta(0))


@pytest.mark.parametrize(
    ("status", "user", "refused"),
    [
        ("ok", {"active": True, "roles": ["agent"]}, None),
        ("ok", {"active": True, "roles": ["supervisor"]}, None),
        ("ok", {"active": True, "roles": ["analyst"]}, "holds no agent role"),
        ("ok", {"active": False, "roles": ["agent"]}, "is deactivated"),
        ("not_found", None, "no staff user"),
        ("unavailable", None, "did not answer"),
    ],
)
def test_an_assignee_must_be_an_active_user_with_the_agent_role_or_above(status, user, refused):
    """As the staff directory answers: ok with the user, not_found, or unavailable."""
    refusal = domain.assignee_refusal("li.wei", status, user)
    if refused is None:
        assert refusal is None
    else:
        assert refused in refusal.detail
        assert refusal.kind is (Kind.UNAVAILABLE if status == "unavailable" else Kind.INVALID)


def test_an_id_the_directory_refuses_as_no_login_is_no_staff_user_not_an_outage():
    refusal = domain.assignee_refusal("Not A Login", "unavailable", None, 422)
    assert refusal.kind is Kind.INVALID and "no staff user" in refusal.detail
    assert domain.assignee_refusal("li.wei", "unavailable", None, 503).kind is Kind.UNAVAILABLE


def event(event_type: str, data: dict, eid: str = "e-1", time: datetime = T0) -> dict:
    return {"id": eid, "type": event_type, "time": iso(time), "data": {"customer_id": "c-1", **data}}


def test_a_timeline_entry_is_dated_by_what_happened_and_keeps_personal_content_apart():
    e = event(
        "crm.complaint.resolved",
        {
            "complaint_id": "cp-1",
            "resolved_at": iso(T0 + timedelta(hours=5)),
            "resolution": "Sent a new pair",
        },
    )
    entry = domain.timeline_entry(e)
    assert entry["at"] == T0 + timedelta(hours=5)
    assert entry["subject"] == "cp-1"
    assert entry["source"] == "crm.complaints.v1"
    assert entry["personal"] == {"resolution": "Sent a new pair"}
    assert "resolution" not in entry["summary"]
    erased = domain.timeline_entry(e, erased=True)
    assert erased["personal"] == {} and erased["erased"]


def test_loyalty_entries_are_dated_by_their_own_time_and_named_by_their_entry():
    e = event("crm.loyalty.points_earned", {"entry_id": "l-9", "earned_at": iso(T0 + timedelta(days=1))})
    entry = domain.timeline_entry(e)
    assert entry["at"] == T0 + timedelta(days=1)
    assert entry["subject"] == "l-9"


def test_an_event_without_its_own_time_is_dated_by_the_envelope():
    e = event("crm.interaction.recorded", {"interaction_id": "i-1"}, time=T0 + timedelta(minutes=3))
    assert domain.timeline_entry(e)["at"] == T0 + timedelta(minutes=3)


def opened(case: str, at: datetime, **extra) -> dict:
    return event(
        "crm.complaint.opened",
        {
            "complaint_id": case,
            "category": "logistics",
            "opened_at": iso(at),
            "resolution_due": iso(at + timedelta(hours=24)),
            **extra,
        },
        eid=f"{case}-o",
    )


def records(*events: dict) -> list[dict]:
    return [r for e in events if (r := domain.case_record(e)) is not None]


def test_the_case_fold_reads_complaints_as_cases_of_kind_complaint():
    history = records(
        opened("cp-1", T0),
        event(
            "crm.complaint.resolved",
            {
                "complaint_id": "cp-1",
                "resolved_at": iso(T0 + timedelta(hours=6)),
                "within_sla": True,
                "resolution": "refund",
            },
            "e2",
        ),  # fmt: skip
        event(
            "crm.complaint.reopened",
            {"complaint_id": "cp-1", "reopened_at": iso(T0 + timedelta(hours=8))},
            "e3",
        ),
        event(
            "crm.survey.submitted",
            {
                "survey_id": "s-1",
                "complaint_id": "cp-1",
                "kind": "csat",
                "scores": {"overall": 4},
                "submitted_at": iso(T0 + timedelta(days=1)),
            },
            "e4",
        ),  # fmt: skip
    )
    facts = domain.fold_case("cp-1", list(reversed(history)))  # order of arrival does not matter
    assert facts.kind == "complaint" and facts.category == "logistics"
    assert facts.resolved_at == T0 + timedelta(hours=6)
    assert facts.first_response_at == T0 + timedelta(hours=6)  # the resolution answered first
    assert facts.reopened and facts.within_sla is True
    assert facts.csat == [4]
    assert facts.value("agent") == "unassigned"
    assert all("resolution" not in r["fields"] for r in history)  # no texts kept for reports


def test_new_case_kinds_flow_in_with_agent_team_department_root_cause_and_compensation_once():
    case = {"case_id": "cs-1", "kind": "inquiry", "assignee": "li.wei", "team": "east"}
    history = records(
        event("crm.case.opened", {**case, "category": "product", "opened_at": iso(T0)}, "a"),
        event("crm.case.responded", {**case, "responded_at": iso(T0 + timedelta(minutes=30))}, "b"),
        event(
            "crm.case.compensated",
            {
                **case,
                "compensation_id": "cmp-1",
                "amount_cents": 500,
                "compensated_at": iso(T0 + timedelta(hours=1)),
            },
            "c",
        ),  # fmt: skip
        event(
            "crm.case.compensated",
            {
                **case,
                "compensation_id": "cmp-1",
                "amount_cents": 500,
                "compensated_at": iso(T0 + timedelta(hours=1)),
            },
            "c2",
        ),  # fmt: skip
        event(
            "crm.case.resolved",
            {
                **case,
                "department": "warehouse",
                "root_cause": "RC-PACK",
                "resolved_at": iso(T0 + timedelta(hours=2)),
            },
            "d",
        ),  # fmt: skip
    )
    facts = domain.fold_case("cs-1", history)
    assert (facts.kind, facts.agent, facts.team) == ("inquiry", "li.wei", "east")
    assert (facts.department, facts.root_cause) == ("warehouse", "RC-PACK")
    assert facts.first_response_at == T0 + timedelta(minutes=30)
    assert facts.compensation_cents == 500


def test_sla_is_the_case_services_judgement_else_the_due_time_and_an_open_late_case_breaches():
    on_time = domain.CaseFacts("a", opened_at=T0, resolved_at=T0 + timedelta(hours=1),
                               resolution_due=T0 + timedelta(hours=2))  # fmt: skip
    late_but_paused = domain.CaseFacts("b", opened_at=T0, resolved_at=T0 + timedelta(hours=3),
                                       resolution_due=T0 + timedelta(hours=2), within_sla=True)  # fmt: skip
    open_late = domain.CaseFacts("c", opened_at=T0, resolution_due=T0 + timedelta(hours=2))
    open_in_time = domain.CaseFacts("d", opened_at=T0, resolution_due=T0 + timedelta(hours=9))
    now = T0 + timedelta(hours=4)
    assert [domain.sla_met(c, now) for c in (on_time, late_but_paused, open_late, open_in_time)] == [
        True,
        True,
        False,
        None,
    ]


def test_the_report_figures_are_percentiles_rates_and_sums_by_dimension():
    def case(cid, agent, resolve_h, reopened=False, csat=(), pay=0):
        return domain.CaseFacts(
            cid, opened_at=T0, agent=agent, kind="complaint",
            resolved_at=None if resolve_h is None else T0 + timedelta(hours=resolve_h),
            resolution_due=T0 + timedelta(hours=5), reopened=reopened, csat=list(csat), compensation_cents=pay,
        )  # fmt: skip

    cases = [
        case("1", "li", 2, csat=[5]),
        case("2", "li", 4, reopened=True, csat=[2]),
        case("3", "li", 6, pay=1200),
        case("4", "wang", 8),
        case("5", "wang", None),
    ]
    report = domain.service_report(cases, "agent", T0 + timedelta(hours=10))
    li, wang = report["rows"]
    assert li["agent"] == "li" and li["cases"] == 3
    assert li["resolution_hours"] == {"p50": 4.0, "p90": 5.6}
    assert li["sla"] == {"met": 2, "breached": 1, "compliance": 0.6667}
    assert li["reopen_rate"] == 0.3333
    assert li["compensation_cents"] == 1200
    assert li["csat"] == {"responses": 2, "average": 3.5, "satisfied_share": 0.5}
    assert wang["sla"] == {"met": 0, "breached": 2, "compliance": 0.0}
    total = report["total"]
    assert total["cases"] == 5 and total["resolved"] == 4
    assert total["resolution_hours"] == {"p50": 5.0, "p90": 7.4}


def test_an_unknown_dimension_is_refused_naming_the_known_ones():
    with pytest.raises(domain.DeskError, match="unknown dimension 'colour'; one of agent, team"):
        domain.report_dimension("colour")
