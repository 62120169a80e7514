"""The desk beside the whole platform: a customer's story told by the real services shows on one
timeline, newest first, paged; a callback comes due and goes overdue on the module's clock; a
churn warning opens one task; a seeded month of case events gives the service report's
hand-counted figures; erasure empties the personal content."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from services.common.clock import to_rfc3339
from services.common.contracts import build_event
from services.common.erasure import SCRUBBED
from services.common.kafka import ensure_topics
from services.stack.harness import Service, start_desk, unique_id, until
from services.stack.platform import free_port, start_service
from tests.conftest import NOW


@pytest.fixture(scope="module")
def desk(stack, platform) -> Service:
    """The desk beside the platform; it checks assignees with the platform's staff directory."""
    started = start_desk(stack, platform)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def agent(platform, desk) -> str:
    """A staff user tasks may be assigned to."""
    user = f"agent.{unique_id('u')[2:10]}"
    if "staff" in platform:
        made = platform["staff"].post(
            "/users",
            json={
                "id": user,
                "name": "Li Wei",
                "email": f"{user}@shop.example",
                "locale": "zh-CN",
                "roles": ["agent"],
                "team": None,
            },  # fmt: skip
        )
        assert made.status_code == 201, made.text
    return user


def set_clock(clock_file, when: datetime) -> None:
    clock_file.write_text(to_rfc3339(when))


def entries(desk: Service, customer: str, **params: Any) -> dict:
    answer = desk.get(f"/customers/{customer}/timeline", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


STORY_TYPES = [
    "crm.note.added",
    "crm.interaction.recorded",
    "crm.survey.submitted",
    "crm.complaint.opened",
    "crm.order.placed",
]


@pytest.fixture(scope="module")
def story(platform, desk, clock_file) -> dict[str, str]:
    """One customer's story through the real services, an hour apart: an order, a complaint,
    a survey, an interaction and a note."""
    profiles, orders, complaints = platform["profiles"], platform["orders"], platform["complaints"]
    registered = profiles.post("/customers", json={"channel": "app", "name": "Chen Jing"})
    assert registered.status_code == 201, registered.text
    customer = registered.json()["customer_id"]
    try:
        placed = orders.post(
            "/orders",
            json={"customer_id": customer, "currency": "CNY", "placed_at": to_rfc3339(NOW - timedelta(hours=5)),
                  "items": [{"sku": "S-1", "category": "shoes", "brand": "Acme", "qty": 1, "unit_price_cents": 9900}]},
        )  # fmt: skip
        assert placed.status_code == 201, placed.text
        set_clock(clock_file, NOW - timedelta(hours=4))
        opened = complaints.post(
            "/complaints", json={"customer_id": customer, "category": "logistics", "severity": "low"}
        )
        assert opened.status_code == 201, opened.text
        set_clock(clock_file, NOW - timedelta(hours=3))
        scores = dict.fromkeys(("website", "product", "payment", "service", "logistics", "overall"), 4)
        surveyed = complaints.post(
            "/surveys", json={"customer_id": customer, "scores": scores, "recommend": 8}
        )
        assert surveyed.status_code == 201, surveyed.text
        recorded = profiles.post(
            "/interactions",
            json=[{"customer_id": customer, "kind": "message", "channel": "chat",
                   "occurred_at": to_rfc3339(NOW - timedelta(hours=2)),
                   "attributes": {"text": "Where is my parcel? Call me on 138 0000 0000"}}],
        )  # fmt: skip
        assert recorded.status_code == 200 and recorded.json()["accepted"] == 1, recorded.text
        set_clock(clock_file, NOW - timedelta(hours=1))
        noted = desk.post(
            f"/customers/{customer}/notes",
            json={"text": "Works nights; call after 14:00 at her sister's number", "pinned": True},
            role="agent",
        )
        assert noted.status_code == 201, noted.text
    finally:
        set_clock(clock_file, NOW)
    return {
        "customer": customer,
        "order": placed.json()["order_id"],
        "complaint": opened.json()["complaint_id"],
        "survey": surveyed.json()["survey_id"],
        "note": noted.json()["note_id"],
    }


def test_the_timeline_shows_every_service_s_story_newest_first_in_pages(desk, story):
    customer = story["customer"]
    until(
        lambda: entries(desk, customer, type=STORY_TYPES, limit=50),
        lambda page: sorted(e["type"] for e in page["items"]) == sorted(STORY_TYPES),
    )
    seen, cursor = [], None
    for _ in range(3):
        page = entries(desk, customer, type=STORY_TYPES, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += page["items"]
        cursor = page["next_cursor"]
    assert cursor is None  # five entries: pages of 2, 2 and 1
    assert [e["type"] for e in seen] == STORY_TYPES
    assert [e["at"] for e in seen] == [to_rfc3339(NOW - timedelta(hours=h)) for h in (1, 2, 3, 4, 5)]
    subjects = {e["type"]: e["subject"] for e in seen}
    assert subjects["crm.order.placed"] == story["order"]
    assert subjects["crm.complaint.opened"] == story["complaint"]
    assert subjects["crm.survey.submitted"] == story["survey"]
    assert subjects["crm.note.added"] == story["note"]
    assert seen[0]["data"]["text"].startswith("Works nights") and seen[0]["data"]["pinned"] is True
    # the whole timeline (every type) holds the same story once each, newest first
    whole = entries(desk, customer, limit=500)["items"]
    assert [e["at"] for e in whole] == sorted((e["at"] for e in whole), reverse=True)
    assert len({e["event_id"] for e in whole}) == len(whole)
    assert desk.get(f"/customers/{customer}/timeline", params={"cursor": "nonsense"}).status_code == 400


def test_notes_are_listed_pinned_first_and_can_be_unpinned(desk, story):
    customer = story["customer"]
    later = desk.post(f"/customers/{customer}/notes", json={"text": "Asked about gift wrap"}, role="agent")
    assert later.status_code == 201, later.text
    listed = desk.get(f"/customers/{customer}/notes").json()["items"]
    assert [n["note_id"] for n in listed] == [story["note"], later.json()["note_id"]]
    unpinned = desk.request("PATCH", f"/notes/{story['note']}", json={"pinned": False}, role="agent")
    assert unpinned.status_code == 200 and unpinned.json()["pinned"] is False
    assert desk.post(f"/customers/{customer}/notes", json={"text": "x"}, role="viewer").status_code == 403
    assert desk.request("PATCH", "/notes/n-missing", json={"pinned": True}, role="agent").status_code == 404


def mail(platform: dict[str, Service], user: str, task_id: str) -> list[dict]:
    """What the local SMTP server received about a task for a staff user (their directory email)."""
    answer = platform["engagement"].get("/mailbox", params={"to": f"{user}@shop.example"})
    assert answer.status_code == 200, answer.text
    return [m for m in answer.json()["items"] if task_id in m["text"]]


def test_a_callback_comes_due_then_goes_overdue_and_leaves_the_late_lists_when_done(
    desk, platform, agent, clock_file
):
    customer, team = unique_id(), unique_id("team")
    created = desk.post(
        "/tasks",
        json={"customer_id": customer, "kind": "callback", "title": "Call back about the refund",
              "due_at": to_rfc3339(NOW + timedelta(hours=1)), "assignee": agent, "team": team},
        role="agent",
    )  # fmt: skip
    assert created.status_code == 201, created.text
    task_id = created.json()["task_id"]
    assert created.json()["status"] == "open"

    def task() -> dict:
        return desk.get(f"/tasks/{task_id}").json()

    def listed(**params: str) -> list[str]:
        answer = desk.get("/tasks", params=params)
        assert answer.status_code == 200, answer.text
        return [t["task_id"] for t in answer.json()["items"]]

    assert listed(assignee=agent, status="open") == [task_id]
    try:
        set_clock(clock_file, NOW + timedelta(minutes=50))  # within the 15 minutes before it is due
        until(
            task,
            lambda t: t["status"] == "due" and t["reminded_at"] == to_rfc3339(NOW + timedelta(minutes=50)),
        )
        assert listed(assignee=agent, status="overdue") == []
        reminded = until(lambda: mail(platform, agent, task_id), lambda items: len(items) == 1)
        assert reminded[0]["subject"] == "[任务即将到期] Call back about the refund"  # the agent reads zh-CN
        assert task_id in reminded[0]["text"] and customer in reminded[0]["text"]
        set_clock(clock_file, NOW + timedelta(hours=1, minutes=1))
        until(task, lambda t: t["status"] == "overdue" and t["overdue_at"] is not None)
        notices = until(lambda: mail(platform, agent, task_id), lambda items: len(items) == 2)
        assert {m["subject"].split("]")[0] for m in notices} == {"[任务即将到期", "[任务已逾期"}
        assert listed(assignee=agent, status="overdue") == [task_id]
        assert listed(team=team, status="overdue") == [task_id]
        timeline = until(
            lambda: entries(desk, customer)["items"],
            lambda items: (
                [e["type"] for e in items] == ["crm.task.overdue", "crm.task.reminded", "crm.task.created"]
            ),
        )
        assert timeline[0]["data"]["assignee"] == agent
        done = desk.post(
            f"/tasks/{task_id}/complete", json={"outcome": "Reached; refund explained"}, role="agent"
        )
        assert done.status_code == 200 and done.json()["status"] == "done", done.text
        again = desk.post(f"/tasks/{task_id}/complete", json={"outcome": "again"}, role="agent")
        assert again.status_code == 409
        assert listed(assignee=agent, status="overdue") == [] and listed(team=team, status="done") == [
            task_id
        ]
        time.sleep(1.5)  # three more watcher rounds: nothing is sent again
        assert len(mail(platform, agent, task_id)) == 2
    finally:
        set_clock(clock_file, NOW)


def test_a_team_task_overdue_reaches_the_team_s_level_1_supervisor_once(desk, platform, clock_file):
    staff = platform["staff"]
    boss, team = f"boss.{unique_id('u')[2:10]}", unique_id("team")
    made = staff.post(
        "/users",
        json={"id": boss, "name": "Ann Boss", "email": f"{boss}@shop.example", "locale": "en",
              "roles": ["supervisor"], "team": None},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    assert staff.post("/teams", json={"id": team, "name": "Queue", "supervisors": [boss]}).status_code == 201
    created = desk.post(
        "/tasks",
        json={"customer_id": unique_id(), "kind": "follow_up", "title": "Check the replacement arrived",
              "due_at": to_rfc3339(NOW + timedelta(minutes=5)), "team": team},
        role="agent",
    )  # fmt: skip
    assert created.status_code == 201, created.text
    task_id = created.json()["task_id"]
    try:
        # within its reminder lead already, then past its time
        reminded = until(lambda: mail(platform, boss, task_id), lambda items: len(items) == 1)
        assert reminded[0]["subject"] == "[Task due soon] Check the replacement arrived"
        set_clock(clock_file, NOW + timedelta(minutes=6))
        late = until(lambda: mail(platform, boss, task_id), lambda items: len(items) == 2)
        assert {m["subject"] for m in late} == {
            "[Task due soon] Check the replacement arrived",
            "[Task overdue] Check the replacement arrived",
        }
        assert f"({team})" in late[0]["text"]
        time.sleep(1.5)
        assert len(mail(platform, boss, task_id)) == 2
    finally:
        set_clock(clock_file, NOW)


def test_a_task_needs_someone_and_a_known_kind(desk):
    body = {"customer_id": unique_id(), "title": "x", "due_at": to_rfc3339(NOW)}
    assert "assignee or a team" in desk.post("/tasks", json=body, role="agent").text
    refused = desk.post("/tasks", json={**body, "team": "t-1", "kind": "visit"}, role="agent")
    assert refused.status_code == 422
    assert desk.get("/tasks", params={"status": "late"}).status_code == 422


def test_an_assignee_must_be_an_active_staff_user_with_the_agent_role(desk, platform):
    body = {"customer_id": unique_id(), "title": "x", "due_at": to_rfc3339(NOW), "assignee": "nobody.here"}
    refused = desk.post("/tasks", json=body, role="agent")
    assert refused.status_code == 422 and "no staff user" in refused.json()["detail"]
    analyst = f"analyst.{unique_id('u')[2:10]}"
    made = platform["staff"].post(
        "/users",
        json={
            "id": analyst,
            "name": "Zhou Min",
            "email": f"{analyst}@shop.example",
            "locale": "en",
            "roles": ["analyst"],
            "team": None,
        },  # fmt: skip
    )
    assert made.status_code == 201, made.text
    refused = desk.post("/tasks", json={**body, "assignee": analyst}, role="agent")
    assert refused.status_code == 422 and "no agent role" in refused.json()["detail"]


def test_a_churn_warning_opens_one_churn_action_task(desk, publish):
    customer, episode = unique_id(), unique_id("ep")
    data = {"customer_id": customer, "episode_id": episode, "risk": 0.81, "level": "high",
            "reasons": [{"code": "overdue", "value": 64, "threshold": 40}], "recommended_action": "call",
            "abc_class": "A", "clv_cents": 120_000, "value_at_risk_cents": 97_200,
            "warned_at": to_rfc3339(NOW)}  # fmt: skip
    warning = build_event("crm.profile.churn_warning", data, source="/services/scoring", time=NOW)
    publish(
        warning, warning, build_event("crm.profile.churn_warning", data, source="/services/scoring", time=NOW)
    )
    tasks = until(
        lambda: desk.get("/tasks", params={"customer_id": customer}).json()["items"],
        lambda items: len(items) == 1,
    )
    (task,) = tasks
    assert task["kind"] == "churn_action" and task["episode_id"] == episode
    assert task["due_at"] == to_rfc3339(NOW + timedelta(hours=48)) and task["assignee"] is None
    until(lambda: entries(desk, customer)["items"], lambda items: len(items) == 1)
    assert len(desk.get("/tasks", params={"customer_id": customer}).json()["items"]) == 1


# --- the service report for a seeded month ----------------------------------------------------------

OCT = datetime(2026, 10, 1, tzinfo=NOW.tzinfo)


def at(day: int, hour: int, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=NOW.tzinfo)


def complaint_events(case: str, customer: str, category: str, opened: datetime, **later: Any) -> list[dict]:
    """The complaint service's events for one case: opened, then what `later` says."""
    source = "/services/complaints"
    ids = {"complaint_id": case, "customer_id": customer}
    out = [
        build_event(
            "crm.complaint.opened",
            {**ids, "category": category, "severity": "medium", "channel": "web", "order_id": None,
             "opened_at": to_rfc3339(opened), "first_response_due": to_rfc3339(opened + timedelta(hours=4)),
             "resolution_due": to_rfc3339(opened + timedelta(hours=24)), "vip": False},
            source=source, time=opened,
        )
    ]  # fmt: skip
    for resolved, within in later.get("resolved", []):
        hours = (resolved - opened).total_seconds() / 3600
        out.append(build_event(
            "crm.complaint.resolved",
            {**ids, "resolved_at": to_rfc3339(resolved), "resolution": "Sent a replacement to her home",
             "within_sla": within, "resolution_hours": hours},
            source=source, time=resolved,
        ))  # fmt: skip
    if "reopened" in later:
        out.append(build_event(
            "crm.complaint.reopened",
            {**ids, "reopened_at": to_rfc3339(later["reopened"]), "reason": "still broken"},
            source=source, time=later["reopened"],
        ))  # fmt: skip
    if "escalated" in later:
        out.append(build_event(
            "crm.complaint.escalated",
            {**ids, "level": 1, "reason": "resolution_breach", "escalated_at": to_rfc3339(later["escalated"])},
            source=source, time=later["escalated"],
        ))  # fmt: skip
    if "csat" in later:
        score, when = later["csat"]
        out.append(build_event(
            "crm.survey.submitted",
            {"survey_id": f"s-{case}", "customer_id": customer, "complaint_id": case, "kind": "csat",
             "scores": {"overall": score}, "recommend": None, "submitted_at": to_rfc3339(when)},
            source=source, time=when,
        ))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def seeded_month(desk, publish) -> None:
    """October 2026: five cases opened in it (one resolved on 1 November), one before it."""
    who = unique_id()
    a = complaint_events("cp-a", who, "logistics", at(2, 9), resolved=[(at(2, 13), True)], csat=(5, at(3, 9)))
    b = complaint_events("cp-b", who, "logistics", at(5, 10), resolved=[(at(6, 20), False), (at(8, 10), True)],
                         reopened=at(7, 9), csat=(2, at(9, 9)))  # fmt: skip
    c = complaint_events("cp-c", who, "product", at(10, 8), resolved=[(at(10, 10), True)])
    d = complaint_events("cp-d", who, "product", at(20, 12), escalated=at(21, 13))
    e = complaint_events("cp-e", who, "payment", at(31, 23), resolved=[(at(1, 1, month=11), True)])
    before = complaint_events(
        "cp-f", who, "payment", at(30, 9, month=9), resolved=[(at(30, 10, month=9), True)]
    )
    publish(a, b, c, d, e, before, a[1])  # the resolution of cp-a delivered twice
    until(
        lambda: report(desk, by="kind")["total"],
        lambda total: total["cases"] == 5 and total["resolved"] == 4 and total["csat"]["responses"] == 2,
    )


def report(desk: Service, **params: str) -> dict:
    answer = desk.get(
        "/reports/service", params={"from": to_rfc3339(OCT), "to": to_rfc3339(at(1, 0, month=11)), **params}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_service_report_for_a_seeded_month_matches_the_hand_counted_figures(desk, seeded_month):
    by_category = report(desk, by="category")
    rows = {r["category"]: r for r in by_category["rows"]}
    assert [r["category"] for r in by_category["rows"]] == ["logistics", "product", "payment"]
    # logistics: cp-a resolved in 4 h (in SLA, CSAT 5); cp-b resolved in 34 h (late, CSAT 2), reopened
    assert rows["logistics"]["cases"] == 2 and rows["logistics"]["resolved"] == 2
    assert rows["logistics"]["resolution_hours"] == {"p50": 19.0, "p90": 31.0}
    assert rows["logistics"]["first_response_hours"] == {"p50": 19.0, "p90": 31.0}
    assert rows["logistics"]["sla"] == {"met": 1, "breached": 1, "compliance": 0.5}
    assert rows["logistics"]["reopened"] == 1 and rows["logistics"]["reopen_rate"] == 0.5
    assert rows["logistics"]["csat"] == {"responses": 2, "average": 3.5, "satisfied_share": 0.5}
    # product: cp-c resolved in 2 h; cp-d escalated and still open a month past its due time
    assert rows["product"]["resolved"] == 1 and rows["product"]["resolution_hours"] == {
        "p50": 2.0,
        "p90": 2.0,
    }
    assert rows["product"]["sla"] == {"met": 1, "breached": 1, "compliance": 0.5}
    assert rows["product"]["escalated"] == 1 and rows["product"]["csat"]["responses"] == 0
    # payment: cp-e, opened 31 October 23:00, resolved 2 h later in November; cp-f is September's
    assert rows["payment"]["cases"] == 1 and rows["payment"]["sla"]["compliance"] == 1.0
    total = by_category["total"]
    assert total["cases"] == 5 and total["resolved"] == 4
    assert total["resolution_hours"] == {"p50": 3.0, "p90": 25.0}  # 2, 2, 4, 34
    assert total["sla"] == {"met": 3, "breached": 2, "compliance": 0.6}
    assert total["reopen_rate"] == 0.25 and total["compensation_cents"] == 0
    by_agent = report(desk, by="agent")  # complaint events name no assignee yet
    assert [(r["agent"], r["cases"]) for r in by_agent["rows"]] == [("unassigned", 5)]
    assert [(r["kind"], r["cases"]) for r in report(desk, by="kind")["rows"]] == [("complaint", 5)]


def test_the_service_report_refuses_what_it_cannot_answer(desk):
    unknown = desk.get("/reports/service", params={"by": "colour"})
    assert unknown.status_code == 422 and "agent, team, kind" in unknown.json()["detail"]
    inverted = desk.get(
        "/reports/service", params={"from": "2026-11-01T00:00:00Z", "to": "2026-10-01T00:00:00Z"}
    )
    assert inverted.status_code == 422


# --- erasure (last: it removes the story's customer) --------------------------------------------------


def test_erasure_empties_notes_and_the_timeline_of_personal_content_and_keeps_what_happened(
    platform, desk, story, publish
):
    customer = story["customer"]
    until(
        lambda: entries(desk, customer, limit=500)["items"],
        lambda items: set(STORY_TYPES) <= {e["type"] for e in items},
    )
    erased = platform["profiles"].request("DELETE", f"/customers/{customer}", role="admin")
    assert erased.status_code in (200, 202, 204), erased.text
    items = until(
        lambda: entries(desk, customer, limit=500)["items"], lambda items: all(e["erased"] for e in items)
    )
    assert set(STORY_TYPES) <= {e["type"] for e in items}  # what happened stays
    for entry in items:
        assert not {"text", "attributes", "resolution", "reason", "title"} & entry["data"].keys(), entry
    notes = desk.get(f"/customers/{customer}/notes").json()["items"]
    assert notes and all(n["text"] == SCRUBBED and n["erased"] for n in notes)
    # an event that arrives after the erasure is kept without its personal content
    late = build_event(
        "crm.interaction.recorded",
        {"interaction_id": unique_id("i"), "customer_id": customer, "kind": "message", "channel": "chat",
         "occurred_at": to_rfc3339(NOW), "attributes": {"text": "my new address is ..."}},
        source="/services/profiles", time=NOW,
    )  # fmt: skip
    publish(late)
    arrived = until(
        lambda: [e for e in entries(desk, customer, limit=500)["items"] if e["event_id"] == late["id"]],
        lambda found: len(found) == 1,
    )
    assert arrived[0]["erased"] and "attributes" not in arrived[0]["data"]


def test_a_reminder_waits_while_engagement_is_away_and_goes_once_after_a_restart(
    stack, platform, agent, clock_file
):
    """A desk of its own (database and topics) whose engagement is away: the reminder stays owed
    (counted), and the desk restarted with engagement back sends it exactly once."""
    topic_prefix = f"m{uuid.uuid4().hex[:8]}."
    ensure_topics(stack.settings(topic_prefix=topic_prefix))
    db_prefix = f"t{uuid.uuid4().hex[:8]}_"
    env = {
        "CRM_TOPIC_PREFIX": topic_prefix,
        "CRM_CLOCK_FILE": str(clock_file),
        "CRM_STAFF_URL": platform["staff"].url,
        "CRM_DESK_API_KEY": stack.keys["agent"],
        "CRM_DESK_WATCH_SECONDS": "0.3",
    }
    lone = start_service(
        stack, "desk", db_prefix=db_prefix, CRM_ENGAGEMENT_URL=f"http://127.0.0.1:{free_port()}", **env
    )
    try:
        created = lone.post(
            "/tasks",
            json={"customer_id": unique_id(), "kind": "callback", "title": "Call about the parcel",
                  "due_at": to_rfc3339(NOW + timedelta(hours=1, minutes=5)), "assignee": agent},
            role="agent",
        )  # fmt: skip
        assert created.status_code == 201, created.text
        task_id = created.json()["task_id"]
        set_clock(clock_file, NOW + timedelta(hours=1))
        until(lambda: lone.get(f"/tasks/{task_id}").json(), lambda t: t["reminded_at"] is not None)
        until(
            lambda: lone.get("/metrics", role=None).text,
            lambda text: 'crm_desk_task_notices_total{notice="reminder",outcome="unavailable"}' in text,
        )
        assert mail(platform, agent, task_id) == []
    finally:
        lone.stop()
    back = start_service(
        stack, "desk", db_prefix=db_prefix, CRM_ENGAGEMENT_URL=platform["engagement"].url, **env
    )
    try:
        until(lambda: mail(platform, agent, task_id), lambda items: len(items) == 1)
        time.sleep(1)  # more rounds: nothing is sent again
        assert len(mail(platform, agent, task_id)) == 1
        assert (
            'crm_desk_task_notices_total{notice="reminder",outcome="sent"} 1.0'
            in back.get("/metrics", role=None).text
        )
    finally:
        back.stop()
        set_clock(clock_file, NOW)
