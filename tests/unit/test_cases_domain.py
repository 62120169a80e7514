"""Case rules without I/O: kinds with their own targets and actions, warnings before a
breach, the complaint procedure (decision, remedy, approval, compensation once, the
customer's confirmation), escalations handed to supervisors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import Kind
from services.complaints import domain
from services.complaints.domain import ComplaintError, Procedure, SlaPolicy, Status

T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
POLICY = SlaPolicy.default()
PROCEDURE = Procedure.from_config({"approval_above_cents": 10_000, "point_value_cents": 1})


def h(hours: float) -> timedelta:
    return timedelta(hours=hours)


def case(kind="complaint", severity="high", order_id="o-1", policy=POLICY, team="east"):
    return domain.open_complaint(
        complaint_id="cp-1" if kind == "complaint" else "cs-1",
        customer_id="c-1",
        category="logistics",
        severity=severity if kind == "complaint" else None,
        channel="phone",
        order_id=order_id,
        description="where is my parcel",
        vip=False,
        at=T0,
        policy=policy,
        by="ann",
        kind=kind,
        team=team,
    )


def test_each_kind_has_its_own_targets_and_event_family():
    policy = SlaPolicy.from_config({"kinds": {"inquiry": {"first_response_hours": 1, "resolution_hours": 4}}})
    inquiry = case("inquiry", policy=policy)
    assert inquiry.complaint.targets == domain.Targets(1, 4)
    assert inquiry.complaint.severity is None
    ((event_type, data),) = inquiry.facts
    assert event_type == "crm.case.opened" and data["resolution_due"] == T0 + h(4)
    assert case("suggestion").complaint.targets == domain.Targets(24, 120)  # the default
    assert case("complaint").facts[0][0] == "crm.complaint.opened"  # complaints keep their names
    with pytest.raises(ValueError, match="unknown case kind"):
        SlaPolicy.from_config({"kinds": {"rumour": {"first_response_hours": 1, "resolution_hours": 2}}})


def test_each_kind_has_its_own_actions():
    praise = case("praise").complaint
    assert domain.allowed_actions(praise) == ["assign", "resolve"]  # praise never escalates
    resolved = domain.resolve(praise, T0 + h(1), "thanked the customer", "ann", POLICY).complaint
    assert domain.allowed_actions(resolved) == ["close"]  # and is not reopened
    suggestion = domain.resolve(case("suggestion").complaint, T0 + h(1), "taken up", "ann", POLICY).complaint
    assert domain.allowed_actions(suggestion) == ["close"]
    with pytest.raises(ComplaintError, match="a praise cannot escalate"):
        domain.escalate(praise, T0 + h(1), "ann", None)


def test_an_inquiry_answered_within_its_sla_says_so():
    inquiry = case("inquiry").complaint  # 2 h to respond, 24 h to resolve by default
    assigned = domain.assign(inquiry, T0 + h(0.5), "ann", "lead")
    assert [t for t, _ in assigned.facts] == ["crm.case.assigned", "crm.case.responded"]
    assert assigned.facts[1][1]["within_sla"] is True
    answered = domain.resolve(assigned.complaint, T0 + h(3), "told them the tracking number", "ann", POLICY)
    assert answered.facts[0][0] == "crm.case.resolved" and answered.facts[0][1]["within_sla"] is True


def test_a_warning_comes_once_at_80_percent_of_the_target_before_the_breach():
    c = domain.assign(case("inquiry").complaint, T0 + h(0.5), "ann", "lead").complaint  # resolve in 24 h
    assert domain.breaches_at(c, T0 + h(19), POLICY).facts == []
    warned = domain.breaches_at(c, T0 + h(19.3), POLICY)
    assert [(t, d["warning"]) for t, d in warned.facts] == [("crm.case.sla_warning", "resolution_warning")]
    assert warned.facts[0][1]["due"] == T0 + h(24)
    assert domain.breaches_at(warned.complaint, T0 + h(20), POLICY).facts == []  # once
    assert domain.next_check(warned.complaint, POLICY) == T0 + h(24)  # next: the breach itself
    late = domain.breaches_at(warned.complaint, T0 + h(25), POLICY)
    assert [t for t, _ in late.facts] == ["crm.case.escalated"]
    assert late.complaint.supervision_due == 1


def test_the_queue_deadline_is_the_first_response_then_the_resolution():
    c = case("complaint").complaint  # high: 4 h, 24 h
    assert domain.due_at(c, POLICY) == T0 + h(4)
    c = domain.assign(c, T0 + h(1), "ann", "lead").complaint
    assert domain.due_at(c, POLICY) == T0 + h(24)
    c = domain.await_customer(c, T0 + h(2), "ann", None).complaint
    assert domain.due_at(c, POLICY) is None  # the clock stands still


def test_an_escalation_goes_to_the_supervisor_of_its_level():
    c = domain.assign(case().complaint, T0 + h(1), "ann", "lead").complaint
    raised = domain.escalate(c, T0 + h(2), "ann", "customer furious")
    assert raised.complaint.supervision_due == 1 and raised.complaint.level == 1
    handed = domain.supervised(raised.complaint, T0 + h(2), 1, "wang.wei", "to wang.wei")
    assert handed.complaint.assignee == "wang.wei" and handed.complaint.supervision_due is None
    assert handed.facts == [
        ("crm.case.assigned", {"assigned_at": T0 + h(2), "by": "supervision", "level": 1})
    ]
    assert domain.supervised(handed.complaint, T0 + h(3), 1, "wang.wei", "again").facts == []  # once
    nobody = domain.supervised(raised.complaint, T0 + h(2), 1, None, "team east names no supervisor")
    assert nobody.complaint.assignee == "ann" and nobody.complaint.supervision_due is None
    subject, text = domain.escalation_notice(raised.complaint, 1, "wang.wei", "supervisor", "zh-CN")
    assert "升级至第 1 级" in subject and "wang.wei" in text
    subject, _ = domain.escalation_notice(raised.complaint, 1, "wang.wei", "agent", "en")
    assert subject == "[Escalation] complaint cp-1 raised to level 1"


def decided(c=None, valid=True):
    c = c or domain.assign(case().complaint, T0 + h(1), "ann", "lead").complaint
    return domain.decide(
        c,
        T0 + h(2),
        "ann",
        valid=valid,
        reason="the parcel sat in the depot for a week",
        department="logistics" if valid else None,
        root_cause="logistics.late" if valid else None,
        procedure=PROCEDURE,
    ).complaint


REFUND = {"type": "refund", "amount_cents": 8_000}
POINTS = {"type": "points", "points": 5_000}


def test_the_decision_needs_a_catalogued_root_cause_and_department():
    c = domain.assign(case().complaint, T0 + h(1), "ann", "lead").complaint
    with pytest.raises(ComplaintError, match="unknown root cause") as refused:
        domain.decide(
            c,
            T0 + h(2),
            "ann",
            valid=True,
            reason="x",
            department="logistics",
            root_cause="bad.luck",
            procedure=PROCEDURE,
        )
    assert refused.value.kind is Kind.INVALID
    with pytest.raises(ComplaintError, match="unknown department"):
        domain.decide(
            c,
            T0 + h(2),
            "ann",
            valid=True,
            reason="x",
            department="astrology",
            root_cause="logistics.late",
            procedure=PROCEDURE,
        )
    with pytest.raises(ComplaintError, match="part of the complaint procedure"):
        domain.decide(
            case("inquiry").complaint,
            T0 + h(2),
            "ann",
            valid=True,
            reason="x",
            department="logistics",
            root_cause="logistics.late",
            procedure=PROCEDURE,
        )


def test_compensation_above_the_amount_needs_approval_and_is_paid_once():
    c = decided()
    proposed = domain.propose_remedy(
        c,
        T0 + h(3),
        "ann",
        description="refund and points",
        compensations=[REFUND, POINTS],
        procedure=PROCEDURE,
    )
    remedy = proposed.complaint.remedy
    assert remedy["value_cents"] == 13_000 and remedy["needs_approval"] is True
    with pytest.raises(ComplaintError, match="needs a supervisor's approval") as refused:
        domain.compensations_due(proposed.complaint)
    assert refused.value.kind is Kind.CONFLICT
    with pytest.raises(ComplaintError, match="compensation is not carried out"):
        domain.resolve(proposed.complaint, T0 + h(3), "done", "ann", POLICY)
    with pytest.raises(ComplaintError, match="someone other than who proposed it"):
        domain.approve_remedy(proposed.complaint, T0 + h(4), "ann", "my own")
    approved = domain.approve_remedy(proposed.complaint, T0 + h(4), "wang.wei", "ok").complaint
    with pytest.raises(ComplaintError, match="approved by wang.wei"):
        domain.approve_remedy(approved, T0 + h(4), "wang.wei", None)
    due = domain.compensations_due(approved)
    assert [i for i, _ in due] == [0, 1]
    assert domain.compensation_key(approved, 1, 0) == "case-cp-1-remedy-1-0"
    paid = domain.compensated(approved, T0 + h(5), 1, 0, paid=True, reference="o-1", detail=None)
    assert paid.facts[0][0] == "crm.case.compensated"
    assert paid.facts[0][1]["compensation_id"] == "case-cp-1-remedy-1-0"
    assert paid.facts[0][1]["amount_cents"] == 8_000
    again = domain.compensated(paid.complaint, T0 + h(5), 1, 0, paid=True, reference="o-1", detail=None)
    assert again.facts == [] and again.complaint == paid.complaint  # recorded once
    assert [i for i, _ in domain.compensations_due(paid.complaint)] == [1]
    with pytest.raises(ComplaintError, match="has begun"):
        domain.propose_remedy(
            paid.complaint, T0 + h(5), "ann", description="less", compensations=[], procedure=PROCEDURE
        )
    done = domain.compensated(paid.complaint, T0 + h(6), 1, 1, paid=True, reference="le-1", detail=None)
    assert domain.compensations_due(done.complaint) == []
    assert done.facts[0][1]["points"] == 5_000 and done.facts[0][1]["amount_cents"] == 5_000


def test_small_compensation_needs_no_approval_and_a_refund_needs_an_order():
    small = domain.propose_remedy(
        decided(), T0 + h(3), "ann", description="points", compensations=[POINTS], procedure=PROCEDURE
    ).complaint
    assert small.remedy["needs_approval"] is False
    assert [i for i, _ in domain.compensations_due(small)] == [0]
    with pytest.raises(ComplaintError, match="needs no approval"):
        domain.approve_remedy(small, T0 + h(4), "wang.wei", None)
    no_order = domain.assign(case(order_id=None).complaint, T0 + h(1), "ann", "lead").complaint
    with pytest.raises(ComplaintError, match="needs the complaint's order"):
        domain.propose_remedy(
            decided(no_order),
            T0 + h(3),
            "ann",
            description="refund",
            compensations=[REFUND],
            procedure=PROCEDURE,
        )
    with pytest.raises(ComplaintError, match="follows a decision that the complaint is valid"):
        domain.propose_remedy(
            decided(valid=False), T0 + h(3), "ann", description="x", compensations=[], procedure=PROCEDURE
        )


def test_a_complaint_through_the_procedure_closes_after_the_customer_confirms():
    c = domain.propose_remedy(
        decided(), T0 + h(3), "ann", description="apology", compensations=[], procedure=PROCEDURE
    ).complaint
    resolved = domain.resolve(c, T0 + h(4), "apologised", "ann", POLICY).complaint
    assert domain.allowed_actions(resolved) == ["reopen"]
    with pytest.raises(ComplaintError, match="before the customer confirmed"):
        domain.close(resolved, T0 + h(5), "ann")
    unhappy = domain.confirm(resolved, T0 + h(5), "ann", False, "wants a refund", POLICY)
    assert [t for t, _ in unhappy.facts] == ["crm.case.confirmed", "crm.complaint.reopened"]
    assert unhappy.complaint.status is Status.ASSIGNED
    again = domain.resolve(unhappy.complaint, T0 + h(6), "apologised again", "ann", POLICY).complaint
    happy = domain.confirm(again, T0 + h(7), "ann", True, None, POLICY)
    assert happy.facts[0][1]["satisfied"] is True
    assert domain.close(happy.complaint, T0 + h(8), "ann").complaint.status is Status.CLOSED


def test_a_complaint_handled_without_the_procedure_closes_as_before():
    resolved = domain.resolve(case().complaint, T0 + h(2), "sent a new one", "ann", POLICY).complaint
    assert domain.allowed_actions(resolved) == ["close", "reopen"]


def test_erasure_scrubs_the_procedures_free_text():
    c = domain.propose_remedy(
        decided(), T0 + h(3), "ann", description="call Ms Li at home", compensations=[], procedure=PROCEDURE
    ).complaint
    scrubbed = domain.anonymise(c, "[erased]")
    assert scrubbed.decision["reason"] == "[erased]" and scrubbed.remedy["description"] == "[erased]"
    assert scrubbed.decision["root_cause"] == "logistics.late"  # what the reports count stays


def test_a_refused_compensation_calls_for_a_new_remedy():
    c = domain.propose_remedy(
        decided(), T0 + h(3), "ann", description="refund", compensations=[POINTS, REFUND], procedure=PROCEDURE
    ).complaint
    c = domain.approve_remedy(c, T0 + h(3), "wang.wei", None).complaint
    c = domain.compensated(c, T0 + h(4), 1, 0, paid=True, reference="le-1", detail=None).complaint
    refused = domain.compensated(c, T0 + h(4), 1, 1, paid=False, reference=None, detail="not delivered yet")
    assert refused.facts == [] and refused.complaint.remedy["compensations"][1]["status"] == "refused"
    with pytest.raises(ComplaintError, match="propose a new remedy"):
        domain.resolve(refused.complaint, T0 + h(5), "done", "ann", POLICY)
    again = domain.propose_remedy(
        refused.complaint,
        T0 + h(5),
        "ann",
        description="a coupon instead",
        compensations=[],
        procedure=PROCEDURE,
    ).complaint
    assert again.remedy["number"] == 2
    assert domain.resolve(again, T0 + h(6), "coupon sent", "ann", POLICY).complaint.status is Status.RESOLVED


def test_the_procedure_configuration_is_checked():
    assert Procedure.from_config({}).approval_above_cents == 20_000
    with pytest.raises(ValueError, match="point_value_cents"):
        Procedure.from_config({"point_value_cents": 0})
    with pytest.raises(ValueError, match="between 0 and 1"):
        SlaPolicy.from_config({"warn_at": 1.2})
