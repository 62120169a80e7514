"""The case desk against the real stack: cases of every kind through one intake and their
queue; a complaint through the whole procedure with compensation paid through orders,
loyalty and engagement, exactly once whatever is retried or restarted; an escalation that
reaches the supervisor's inbox in the local SMTP server (with the staff directory, once its
service is part of the platform)."""

from __future__ import annotations

import importlib.util
import threading
import uuid
from datetime import timedelta

import httpx
import pytest

from services.common.clock import to_rfc3339
from services.stack.embedded import free_port
from services.stack.harness import Service, TopicReader, start_service, unique_id, until
from tests.conftest import NOW

HAS_STAFF = importlib.util.find_spec("services.staff") is not None
DESK = ("profiles", "orders", "loyalty", "engagement", "complaints") + (("staff",) if HAS_STAFF else ())


def once() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def desk(stack, prefix, clock_file) -> dict[str, Service]:
    """The services a case touches, each a process on the module's topics and clock; the
    complaints service pays and notifies with its own (admin) key."""
    db_prefix = f"t{uuid.uuid4().hex[:8]}_"
    ports = {name: free_port() for name in DESK}
    urls = {f"CRM_{name.upper()}_URL": f"http://127.0.0.1:{port}" for name, port in ports.items()}
    if not HAS_STAFF:  # nobody answers there: assignees are taken on their name alone
        urls["CRM_STAFF_URL"] = f"http://127.0.0.1:{free_port()}"
    extra = {
        "engagement": {
            **stack.mail_env(),
            "CRM_ENGAGEMENT_SEND_SECONDS": "0.2",
            "CRM_ENGAGEMENT_TIMEZONE": "UTC",
        },
        "complaints": {"CRM_COMPLAINTS_API_KEY": stack.keys["admin"], "CRM_SLA_WATCH_SECONDS": "0.3"},
    }
    started = {}
    for name in DESK:
        started[name] = start_service(
            stack,
            name,
            db_prefix=db_prefix,
            port=ports[name],
            CRM_TOPIC_PREFIX=prefix,
            CRM_CLOCK_FILE=str(clock_file),
            **urls,
            **extra.get(name, {}),
        )
    yield started
    for service in started.values():
        service.child.stop()


@pytest.fixture(scope="module")
def cases(desk) -> Service:
    return desk["complaints"]


@pytest.fixture(scope="module")
def reader(stack, prefix) -> TopicReader:
    topic_reader = TopicReader(stack, f"{prefix}crm.complaints.v1")
    yield topic_reader
    topic_reader.close()


def set_clock(clock_file, hours: float) -> None:
    clock_file.write_text(to_rfc3339(NOW + timedelta(hours=hours)))


def staff_user(desk, roles: list[str], locale: str = "en", name: str = "ann") -> str:
    """A person in the staff directory (when it is part of the platform; before that an
    assignee is taken on its name)."""
    user_id = f"{name}.{uuid.uuid4().hex[:6]}"
    if HAS_STAFF:
        made = desk["staff"].post(
            "/users",
            json={
                "id": user_id,
                "name": user_id,
                "email": f"{user_id}@staff.example.com",
                "locale": locale,
                "roles": roles,
                "team": None,
            },
        )
        assert made.status_code == 201, made.text
    return user_id


def open_case(cases: Service, kind: str, customer: str | None = None, **extra) -> dict:
    answer = cases.post(
        "/cases",
        role="agent",
        json={
            "kind": kind,
            "channel": "phone",
            "customer_id": customer or unique_id(),
            "category": "logistics",
            "text": "Where is my parcel?",
            **({"severity": "high"} if kind == "complaint" else {}),
            **extra,
        },
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_an_inquiry_is_answered_within_its_sla_and_every_change_is_an_event(desk, cases, clock_file, reader):
    set_clock(clock_file, 0)
    agent = staff_user(desk, ["agent"])
    customer = unique_id()
    inquiry = open_case(cases, "inquiry", customer)
    assert inquiry["kind"] == "inquiry" and inquiry["severity"] is None
    assert (
        inquiry["sla"]["first_response_target_hours"] == 2 and inquiry["sla"]["resolution_target_hours"] == 24
    )
    queue = cases.get("/cases", params={"kind": "inquiry", "customer_id": customer}).json()["items"]
    assert [c["case_id"] for c in queue] == [inquiry["case_id"]]
    assert queue[0]["sla"]["time_left_hours"] == 2.0  # the first response is due first
    case_id = inquiry["case_id"]
    set_clock(clock_file, 0.5)
    assert cases.post(f"/cases/{case_id}/assign", role="agent", json={"assignee": agent}).status_code == 200
    set_clock(clock_file, 3)
    answered = cases.post(
        f"/cases/{case_id}/resolve", role="agent", json={"resolution": "tracking number given"}
    )
    assert answered.status_code == 200, answered.text
    sla = answered.json()["sla"]
    assert sla["resolved_within_sla"] is True and sla["resolution_hours"] == 3
    assert sla["first_response_hours"] == 0.5
    closed = cases.post(f"/cases/{case_id}/close", role="agent")
    assert closed.json()["status"] == "closed"
    events = list({e["id"]: e for e in reader.collect(lambda e: e["subject"] == customer, 5)}.values())
    assert [e["type"] for e in events] == [
        "crm.case.opened",
        "crm.case.assigned",
        "crm.case.responded",
        "crm.case.resolved",
        "crm.case.closed",
    ]
    for event in events:
        data = event["data"]
        assert (data["case_id"], data["kind"], data["category"]) == (case_id, "inquiry", "logistics")
    assert events[3]["data"]["within_sla"] is True and events[3]["data"]["assignee"] == agent


def test_the_queue_sorts_by_time_left_and_filters(cases, clock_file):
    set_clock(clock_file, 3)
    team = f"team-{uuid.uuid4().hex[:6]}"
    suggestion = open_case(cases, "suggestion", team=team)  # 24 h to a first response
    set_clock(clock_file, 3.1)
    complaint = open_case(cases, "complaint", team=team)  # high: 4 h
    set_clock(clock_file, 3.2)
    inquiry = open_case(cases, "inquiry", team=team)  # 2 h, and the newest
    queue = cases.get("/cases", params={"team": team}).json()["items"]
    assert [c["case_id"] for c in queue] == [inquiry["case_id"], complaint["case_id"], suggestion["case_id"]]
    newest = cases.get("/cases", params={"team": team, "sort": "newest"}).json()["items"]
    assert newest[0]["case_id"] == inquiry["case_id"]
    assert [
        c["kind"] for c in cases.get("/cases", params={"team": team, "kind": "complaint"}).json()["items"]
    ] == ["complaint"]
    cases.post(f"/cases/{complaint['case_id']}/escalate", role="agent", json={"note": "angry"})
    raised = cases.get("/cases", params={"team": team, "level": 1}).json()["items"]
    assert [c["case_id"] for c in raised] == [complaint["case_id"]]
    assert cases.get("/cases", params={"kind": "rumour"}).status_code == 422
    assert cases.get("/cases", params={"colour": "red"}).status_code in (400, 422)
    # praise is acknowledged and closed; it does not escalate
    praise = open_case(cases, "praise")
    refused = cases.post(f"/cases/{praise['case_id']}/escalate", role="agent")
    assert refused.status_code == 409 and "a praise cannot escalate" in refused.json()["detail"]


def test_a_warning_comes_before_the_breach(cases, clock_file, reader):
    set_clock(clock_file, 4)
    customer = unique_id()
    inquiry = open_case(cases, "inquiry", customer)  # first response due in 2 h
    set_clock(clock_file, 4 + 1.7)  # 85 %
    warned = until(
        lambda: cases.get(f"/cases/{inquiry['case_id']}").json(),
        lambda c: c["sla"]["warnings"] == ["first_response_warning"],
        timeout=20,
    )
    assert warned["escalation_level"] == 0
    set_clock(clock_file, 4 + 2.1)
    until(lambda: cases.get(f"/cases/{inquiry['case_id']}").json(), lambda c: c["escalation_level"] == 1, 20)
    types = [e["type"] for e in reader.collect(lambda e: e["subject"] == customer, 3)]
    assert types == ["crm.case.opened", "crm.case.sla_warning", "crm.case.escalated"]


# --- the complaint procedure ------------------------------------------------------------------


def registered_buyer(desk) -> tuple[str, str]:
    """A registered customer (engagement knows their address) with a delivered order of 300 yuan."""
    customer = unique_id()
    answer = desk["profiles"].post(
        "/customers",
        json={"customer_id": customer, "name": "Li Na", "email": f"{customer}@example.com", "channel": "web"},
    )
    assert answer.status_code == 201, answer.text
    order = desk["orders"].post(
        "/orders",
        json={
            "customer_id": customer,
            "currency": "CNY",
            "channel": "web",
            "items": [
                {"sku": "s-1", "category": "shoes", "brand": "b", "qty": 1, "unit_price_cents": 30_000}
            ],
        },
    )
    assert order.status_code == 201, order.text
    order_id = order.json()["order_id"]
    for action in ("pay", "ship", "deliver"):  # a goodwill refund follows delivery
        moved = desk["orders"].post(f"/orders/{order_id}/{action}", json={}, headers=once())
        assert moved.status_code == 200, moved.text
    until(lambda: desk["engagement"].get(f"/contacts/{customer}").status_code, lambda s: s == 200)
    return customer, order_id


def test_a_complaint_through_the_whole_procedure_pays_once_with_approval(desk, cases, clock_file, stack):
    set_clock(clock_file, 8)
    customer, order_id = registered_buyer(desk)
    complaint = open_case(cases, "complaint", customer, order_id=order_id)
    case_id = complaint["case_id"]
    agent = staff_user(desk, ["agent"])
    assert cases.post(f"/cases/{case_id}/assign", role="agent", json={"assignee": agent}).status_code == 200
    bad = cases.post(
        f"/cases/{case_id}/decision",
        role="agent",
        json={"valid": True, "reason": "late", "department": "logistics", "root_cause": "bad.luck"},
    )
    assert bad.status_code == 422 and "root cause" in bad.json()["detail"]
    decided = cases.post(
        f"/cases/{case_id}/decision",
        role="agent",
        json={
            "valid": True,
            "reason": "the parcel sat a week in the depot",
            "department": "logistics",
            "root_cause": "logistics.late",
        },
    )
    assert decided.status_code == 200, decided.text
    remedy = cases.post(
        f"/cases/{case_id}/remedy",
        role="agent",
        json={
            "description": "apologise, refund 150 yuan, 5,000 points and a 100 yuan coupon",
            "compensations": [
                {"type": "refund", "amount_cents": 15_000},
                {"type": "points", "points": 5_000},
                {"type": "coupon", "amount_cents": 10_000, "min_spend_cents": 20_000},
            ],
        },
    )
    assert remedy.status_code == 200, remedy.text
    assert remedy.json()["procedure"]["remedy"]["value_cents"] == 30_000  # above 200 yuan: approval
    # Refused without the approval, and an agent cannot approve.
    refused = cases.post(f"/cases/{case_id}/compensate", role="agent", headers=once())
    assert refused.status_code == 409 and "approval" in refused.json()["detail"]
    assert cases.post(f"/cases/{case_id}/compensate", role="agent").status_code == 400  # the key is required
    assert cases.post(f"/cases/{case_id}/approve", role="agent", json={}).status_code == 403
    assert desk["orders"].get(f"/orders/{order_id}").json()["refunded_cents"] == 0
    approved = cases.post(f"/cases/{case_id}/approve", role="supervisor", json={"note": "goodwill"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["procedure"]["remedy"]["approved_by"] == "supervisor"

    # Engagement is away: refund and points go, the coupon waits; the service restarts mid-way.
    desk["engagement"].child.stop()
    first_key = once()
    waiting = cases.post(f"/cases/{case_id}/compensate", role="agent", headers=first_key)
    assert waiting.status_code == 503 and "coupon" in waiting.json()["detail"]
    cases.restart()
    desk["engagement"].restart()
    # Two agents press the button at once, and the first request is retried as well.
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(
            target=lambda h=h: answers.append(
                cases.post(f"/cases/{case_id}/compensate", role="agent", headers=h)
            )
        )
        for h in (once(), once(), first_key)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200, 200, 200], [a.text for a in answers]
    shown = cases.get(f"/cases/{case_id}").json()
    assert [c["status"] for c in shown["procedure"]["remedy"]["compensations"]] == ["paid"] * 3

    # Paid exactly once at each paying service.
    assert desk["orders"].get(f"/orders/{order_id}").json()["refunded_cents"] == 15_000
    ledger = until(
        lambda: desk["loyalty"].get(f"/accounts/{customer}/ledger").json()["items"],
        lambda items: any(e.get("kind") == "adjustment" or "compensation" in str(e) for e in items),
    )
    assert sum(1 for e in ledger if "compensation" in str(e.get("reason", ""))) == 1
    coupon_mail = until(
        lambda: desk["engagement"].get("/mailbox", params={"to": f"{customer}@example.com"}).json()["items"],
        lambda items: len(items) >= 1,
    )
    assert len(coupon_mail) == 1
    again = cases.post(f"/cases/{case_id}/compensate", role="agent", headers=once())
    assert again.status_code == 200
    assert desk["orders"].get(f"/orders/{order_id}").json()["refunded_cents"] == 15_000

    # Resolved, then closed only after the customer's confirmation.
    resolved = cases.post(
        f"/cases/{case_id}/resolve", role="agent", json={"resolution": "refunded and sorry"}
    )
    assert resolved.status_code == 200, resolved.text
    early = cases.post(f"/cases/{case_id}/close", role="agent")
    assert early.status_code == 409 and "confirmed" in early.json()["detail"]
    confirmed = cases.post(f"/cases/{case_id}/confirm", role="agent", json={"satisfied": True})
    assert confirmed.status_code == 200, confirmed.text
    assert cases.post(f"/cases/{case_id}/close", role="agent").json()["status"] == "closed"


# --- supervision ----------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_STAFF, reason="the staff directory (services/staff) is not in this tree yet")
def test_an_escalation_reaches_the_supervisors_inbox(desk, cases, clock_file):
    staff = desk["staff"]
    agent, boss = staff_user(desk, ["agent"]), staff_user(desk, ["supervisor"], "zh-CN", "wang")
    team = f"east-{uuid.uuid4().hex[:6]}"
    assert staff.post("/teams", json={"id": team, "name": "East", "supervisors": [boss]}).status_code == 201
    set_clock(clock_file, 12)
    case = open_case(cases, "complaint", team=team)
    assert (
        cases.post(f"/cases/{case['case_id']}/assign", role="agent", json={"assignee": agent}).status_code
        == 200
    )
    assert (
        cases.post(f"/cases/{case['case_id']}/escalate", role="agent", json={"note": "angry"}).status_code
        == 200
    )
    handed = until(lambda: cases.get(f"/cases/{case['case_id']}").json(), lambda c: c["assignee"] == boss)
    assert handed["escalation_level"] == 1
    mail = desk["engagement"]
    to_boss = until(
        lambda: mail.get("/mailbox", params={"to": f"{boss}@staff.example.com"}).json()["items"],
        lambda items: len(items) == 1,
    )
    assert "升级至第 1 级" in to_boss[0]["subject"]
    to_agent = until(
        lambda: mail.get("/mailbox", params={"to": f"{agent}@staff.example.com"}).json()["items"],
        lambda items: len(items) == 1,
    )
    assert to_agent[0]["subject"].startswith("[Escalation]")
    unknown = cases.post(f"/cases/{case['case_id']}/assign", role="agent", json={"assignee": "nobody.here"})
    assert unknown.status_code == 422
