"""The complaints service over real HTTP with the real broker and database, and a clock the
test moves (CRM_CLOCK_FILE)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.common.clock import to_rfc3339
from services.common.mongo import blocking_client
from services.stack.embedded import free_port
from services.stack.harness import Service, TopicReader, start_service, start_stack, unique_id, until

T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC
OFFICE_POLICY = """
[sla.calendar]
timezone = "UTC"
[sla.calendar.hours]
mon = ["09:00", "17:00"]
tue = ["09:00", "17:00"]
wed = ["09:00", "17:00"]
thu = ["09:00", "17:00"]
fri = ["09:00", "17:00"]
"""


class Clock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(T0)

    def set(self, when: datetime) -> None:
        self.path.write_text(to_rfc3339(when))


@pytest.fixture(scope="module")
def clock(tmp_path_factory) -> Clock:
    return Clock(tmp_path_factory.mktemp("clock") / "now")


def nobody_listening() -> str:
    """The address of a service that is down: a free port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def profiles(stack) -> Service:
    """The profiles service whose API complaints asks for the live profile (VIP targets)."""
    service = start_service(stack, "profiles")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def complaints(stack, clock, profiles) -> Service:
    service = start_service(
        stack,
        "complaints",
        db_prefix=profiles.env["CRM_DB_PREFIX"],
        CRM_CLOCK_FILE=str(clock.path),
        CRM_SLA_WATCH_SECONDS="0.2",
        CRM_PROFILES_URL=profiles.url,
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def reader(stack) -> TopicReader:
    topic_reader = TopicReader(stack, "crm.complaints.v1")
    yield topic_reader
    topic_reader.close()


def open_one(service: Service, customer: str, severity: str = "high", **extra) -> dict:
    answer = service.post(
        "/complaints",
        json={
            "customer_id": customer,
            "category": "logistics",
            "severity": severity,
            "channel": "phone",
            **extra,
        },
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def escalations(reader: TopicReader, customer: str, count: int) -> list[dict]:
    return reader.collect(
        lambda e: e["subject"] == customer and e["type"] == "crm.complaint.escalated",
        count,
        timeout=15,
        settle=1.5,
    )


def test_an_sla_breach_escalates_exactly_once(complaints, clock, reader):
    clock.set(T0)
    customer = unique_id()
    complaint = open_one(complaints, customer)
    assert complaint["sla"]["first_response_due"] == to_rfc3339(T0 + timedelta(hours=4))
    clock.set(T0 + timedelta(hours=3, minutes=59))
    time.sleep(0.8)
    assert complaints.get(f"/complaints/{complaint['complaint_id']}").json()["escalation_level"] == 0
    clock.set(T0 + timedelta(hours=4, minutes=1))
    events = escalations(reader, customer, 1)  # waits out several watcher rounds for a duplicate
    assert [(e["data"]["level"], e["data"]["reason"]) for e in events] == [(1, "first_response_breach")]
    shown = complaints.get(f"/complaints/{complaint['complaint_id']}").json()
    assert shown["escalation_level"] == 1 and shown["sla"]["breaches"] == ["first_response_breach"]
    clock.set(T0 + timedelta(hours=25))
    later = escalations(reader, customer, 1)  # the reader goes on from where it stopped
    assert [(e["data"]["level"], e["data"]["reason"]) for e in later] == [(2, "resolution_breach")]
    listed = complaints.get("/complaints", params={"customer_id": customer, "breached": "true"}).json()[
        "items"
    ]
    assert [c["complaint_id"] for c in listed] == [complaint["complaint_id"]]


def test_awaiting_the_customer_pauses_the_clock(complaints, clock, reader):
    clock.set(T0)
    customer = unique_id()
    cid = open_one(complaints, customer)["complaint_id"]
    clock.set(T0 + timedelta(hours=1))
    assert complaints.post(f"/complaints/{cid}/assign", json={"assignee": "ann"}).status_code == 200
    clock.set(T0 + timedelta(hours=2))
    waiting = complaints.post(f"/complaints/{cid}/await-customer", json={"note": "asked for photos"}).json()
    assert waiting["status"] == "awaiting_customer" and waiting["sla"]["paused"] is True
    clock.set(T0 + timedelta(hours=40))
    time.sleep(0.8)
    shown = complaints.get(f"/complaints/{cid}").json()
    assert shown["escalation_level"] == 0 and shown["sla"]["elapsed_hours"] == 2.0
    resumed = complaints.post(f"/complaints/{cid}/assign", json={"assignee": "ann"}).json()
    assert resumed["sla"]["resolution_due"] == to_rfc3339(T0 + timedelta(hours=40 + 22))
    assert escalations(reader, customer, 0) == []


def test_vip_customers_get_tighter_targets(stack, complaints, profiles, clock):
    clock.set(T0)
    # The live profiles as the scorer writes them; complaints reads them through the profiles API.
    scored = blocking_client(stack.mongo_url)[profiles.env["CRM_DB_PREFIX"] + "profiles"]["profiles"]
    gold, class_a, regular = unique_id(), unique_id(), unique_id()
    scored.insert_many(
        [
            {"_id": gold, "loyalty": {"tier": "gold"}, "value": {"abc_class": "C"}},
            {"_id": class_a, "value": {"abc_class": "A"}},
        ]
    )
    for customer, vip, due_hours in ((gold, True, 2), (class_a, True, 2), (regular, False, 4)):
        shown = open_one(complaints, customer)
        assert shown["vip"] is vip
        assert shown["sla"]["first_response_due"] == to_rfc3339(T0 + timedelta(hours=due_hours))


def test_with_profiles_down_a_complaint_opens_on_standard_targets(stack, tmp_path):
    clock = Clock(tmp_path / "now")
    alone = start_service(
        stack, "complaints", CRM_CLOCK_FILE=str(clock.path), CRM_PROFILES_URL=nobody_listening()
    )
    try:
        started = time.monotonic()
        shown = open_one(alone, unique_id())
        assert time.monotonic() - started < 5
        assert shown["vip"] is False
        assert shown["sla"]["first_response_due"] == to_rfc3339(T0 + timedelta(hours=4))
        told = open_one(alone, unique_id(), vip=True)  # an agent who knows better says so
        assert told["vip"] is True
        assert told["sla"]["first_response_due"] == to_rfc3339(T0 + timedelta(hours=2))
    finally:
        alone.stop()


def test_business_hours_count_toward_the_sla(stack, profiles, tmp_path):
    clock = Clock(tmp_path / "now")
    policy = tmp_path / "policy.toml"
    policy.write_text(OFFICE_POLICY)
    office = start_service(
        stack,
        "complaints",
        CRM_CLOCK_FILE=str(clock.path),
        CRM_SLA_POLICY_FILE=str(policy),
        CRM_SLA_WATCH_SECONDS="0.2",
        CRM_PROFILES_URL=profiles.url,
    )
    try:
        friday_4pm = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
        clock.set(friday_4pm)
        shown = open_one(office, unique_id())
        assert shown["sla"]["first_response_due"] == "2026-11-23T12:00:00Z"  # 1 h Friday + 3 h Monday
        assert shown["sla"]["resolution_due"] == "2026-11-25T16:00:00Z"  # 1 Fri + 8 Mon + 8 Tue + 7 Wed
        clock.set(datetime(2026, 11, 23, 11, 0, tzinfo=UTC))
        time.sleep(0.8)
        assert office.get(f"/complaints/{shown['complaint_id']}").json()["escalation_level"] == 0
        clock.set(datetime(2026, 11, 23, 12, 30, tzinfo=UTC))
        deadline = time.monotonic() + 10
        while office.get(f"/complaints/{shown['complaint_id']}").json()["escalation_level"] == 0:
            assert time.monotonic() < deadline, "no escalation after the business-hours deadline"
            time.sleep(0.2)
    finally:
        office.stop()


def test_resolve_reopen_within_the_window_and_not_after(complaints, clock, reader):
    clock.set(T0)
    customer = unique_id()
    cid = open_one(complaints, customer, severity="low")["complaint_id"]
    clock.set(T0 + timedelta(hours=2))
    resolved = complaints.post(f"/complaints/{cid}/resolve", json={"resolution": "sent a replacement"}).json()
    assert resolved["status"] == "resolved" and resolved["sla"]["resolved_within_sla"] is True
    clock.set(T0 + timedelta(days=3))
    reopened = complaints.post(f"/complaints/{cid}/reopen", json={"reason": "replacement broken too"})
    assert reopened.status_code == 200 and reopened.json()["status"] == "open"
    clock.set(T0 + timedelta(days=3, hours=1))
    complaints.post(f"/complaints/{cid}/resolve", json={"resolution": "refunded"})
    clock.set(T0 + timedelta(days=30))
    late = complaints.post(f"/complaints/{cid}/reopen", json={"reason": "again"})
    assert late.status_code == 409 and "reopen window" in late.json()["detail"]
    assert complaints.post(f"/complaints/{cid}/close").json()["status"] == "closed"
    history = [h["action"] for h in complaints.get(f"/complaints/{cid}").json()["history"]]
    assert history == ["open", "resolve", "reopen", "resolve", "close"]
    # Delivery is at least once (docs/architecture.md, "Delivery guarantees"): consumers drop
    # a repeated event id. One CI run under load saw this relay publish `reopened` twice with
    # one id; why it repeated is open (issue 18). Each change must still be published once.
    events = reader.collect(lambda e: e["subject"] == customer, 6)
    story = list({e["id"]: e for e in events}.values())
    assert [e["type"].rsplit(".", 1)[1] for e in story] == [
        "opened",
        "responded",  # crm.case.responded: resolving at once was the first response
        "resolved",
        "reopened",
        "resolved",
        "closed",
    ]


def test_illegal_changes_are_409_with_the_allowed_ones(complaints, clock):
    clock.set(T0)
    cid = open_one(complaints, unique_id())["complaint_id"]
    answer = complaints.post(f"/complaints/{cid}/close")
    assert answer.status_code == 409
    assert answer.json()["allowed"] == ["assign", "resolve", "escalate"]
    for level in (1, 2, 3):
        assert (
            complaints.post(f"/complaints/{cid}/escalate", json={"note": "angry"}).json()["escalation_level"]
            == level
        )
    assert complaints.post(f"/complaints/{cid}/escalate").status_code == 409
    assert complaints.post("/complaints/cp-nope/assign", json={"assignee": "x"}).status_code == 404
    assert complaints.post(f"/complaints/{cid}/resolve", json={}).status_code == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"category": "weather"}, "category"),
        ({"severity": "meh"}, "severity"),
        ({"description": "x" * 5001}, "description"),
        ({"customer_id": "no spaces allowed"}, "customer_id"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_bad_complaints_are_refused_and_nothing_is_stored(complaints, body, field):
    customer = unique_id()
    answer = complaints.post(
        "/complaints", json={"customer_id": customer, "category": "product", "severity": "low", **body}
    )
    assert answer.status_code == 422 and field in answer.json()["detail"]
    assert complaints.get("/complaints", params={"customer_id": customer}).json()["items"] == []


def test_surveys_are_checked_and_answered_once(complaints, clock, reader):
    clock.set(T0)
    customer = unique_id()
    cid = open_one(complaints, customer)["complaint_id"]
    csat = {"customer_id": customer, "complaint_id": cid, "scores": {"overall": 4}}
    early = complaints.post("/surveys", json=csat)
    assert early.status_code == 409 and "resolution" in early.json()["detail"]
    complaints.post(f"/complaints/{cid}/resolve", json={"resolution": "done"})
    assert complaints.post("/surveys", json={**csat, "scores": {"overall": 6}}).status_code == 422
    assert complaints.post("/surveys", json={**csat, "customer_id": unique_id()}).status_code == 422
    first = complaints.post("/surveys", json=csat)
    assert first.status_code == 201 and first.json()["kind"] == "csat"
    again = complaints.post("/surveys", json=csat)
    assert again.status_code == 409 and "already answered" in again.json()["detail"]
    general = {"customer_id": customer, "scores": {"website": 4, "product": 5}, "recommend": 9}
    missing = complaints.post("/surveys", json=general)
    assert missing.status_code == 422 and "payment" in missing.json()["detail"]
    assert complaints.post("/surveys", json={**general, "recommend": 11}).status_code == 422
    assert len(complaints.get("/surveys", params={"customer_id": customer}).json()["items"]) == 1
    events = reader.collect(lambda e: e["subject"] == customer and e["type"] == "crm.survey.submitted", 1)
    assert events[0]["data"]["complaint_id"] == cid and events[0]["data"]["kind"] == "csat"


def test_stats_and_nps_on_known_data(complaints, clock):
    start = datetime(2031, 3, 2, 9, 0, tzinfo=UTC)  # a period no other test touches
    plan = [
        ("logistics", "high", 1, 10),
        ("logistics", "high", 5, 30),
        ("product", "low", 2, None),
        ("product", "critical", 0.5, 6),
    ]  # (category, severity, first response h, resolution h)
    for category, severity, first, resolution in plan:
        clock.set(start)
        cid = complaints.post(
            "/complaints", json={"customer_id": unique_id(), "category": category, "severity": severity}
        ).json()["complaint_id"]
        clock.set(start + timedelta(hours=first))
        complaints.post(f"/complaints/{cid}/assign", json={"assignee": "ann"})
        if resolution is not None:
            clock.set(start + timedelta(hours=resolution))
            complaints.post(f"/complaints/{cid}/resolve", json={"resolution": "ok"})
    window = {"from": "2031-03-01T00:00:00Z", "to": "2031-04-01T00:00:00Z"}
    stats = complaints.get("/complaints/stats", params=window).json()
    total = stats["total"]
    assert (total["count"], total["open"], total["resolved"]) == (4, 1, 3)
    assert total["resolution_sla_compliance"] == round(2 / 3, 4)  # 30 h > 24 h target
    assert total["first_response_sla_compliance"] == 0.75  # 5 h > 4 h target
    assert total["median_hours_to_first_response"] == 1.5
    assert total["median_hours_to_resolution"] == 10.0
    assert stats["by_category"]["logistics"]["count"] == 2
    assert stats["by_severity"]["critical"]["resolution_sla_compliance"] == 1.0

    recommends = [10, 9, 9, 8, 7, 6, 3, 0, 10, 10]  # 5 promoters, 3 detractors: NPS 20
    for k, recommend in enumerate(recommends):
        clock.set(start + timedelta(days=3, minutes=k))
        scores = {
            "website": 4,
            "product": 5,
            "payment": 3,
            "service": 2 + k % 2,
            "logistics": 1,
            "overall": 4,
        }
        assert (
            complaints.post(
                "/surveys", json={"customer_id": unique_id(), "scores": scores, "recommend": recommend}
            ).status_code
            == 201
        )
    surveys = complaints.get("/surveys/stats", params=window).json()
    assert surveys["nps"] == {"responses": 10, "score": 20.0, "promoters": 5, "passives": 2, "detractors": 3}
    assert surveys["dimensions"]["service"] == 2.5 and surveys["dimensions"]["logistics"] == 1.0
    assert complaints.get("/complaints/stats", params={"from": "yesterday"}).status_code == 422
    assert complaints.get("/complaints/stats", params={"bogus": "1"}).status_code == 400


def test_events_are_published_exactly_once_across_a_broker_restart(tmp_path):
    stack = start_stack(tmp_path)
    clock = Clock(tmp_path / "now")
    service = start_service(
        stack, "complaints", CRM_CLOCK_FILE=str(clock.path), CRM_PROFILES_URL=nobody_listening()
    )
    try:
        customer = unique_id()
        stack.broker.stop()
        cid = open_one(service, customer)["complaint_id"]
        clock.set(T0 + timedelta(hours=1))
        assert service.post(f"/complaints/{cid}/resolve", json={"resolution": "ok"}).status_code == 200
        time.sleep(1.5)
        stack.start_broker()
        reader = TopicReader(stack, "crm.complaints.v1")
        events = reader.collect(lambda e: e["subject"] == customer, 3, timeout=60, settle=3)
        reader.close()
        assert [e["type"] for e in events] == [
            "crm.complaint.opened",
            "crm.case.responded",  # resolving at once was the first response
            "crm.complaint.resolved",
        ]
    finally:
        service.stop()
        stack.stop()


def test_stats_select_by_epoch_seconds_also_for_what_was_stored_before(stack, complaints, clock):
    """Period reads select on epoch seconds (an index serves that on every server); complaints
    and surveys stored before those were kept get them when the service starts."""
    start = datetime(2032, 6, 1, 9, 0, tzinfo=UTC)  # a period no other test touches
    clock.set(start)
    for _ in range(2):
        opened = complaints.post(
            "/complaints", json={"customer_id": unique_id(), "category": "product", "severity": "low"}
        )
        assert opened.status_code == 201, opened.text
    scores = {d: 3 for d in ("website", "product", "payment", "service", "logistics", "overall")}
    complaints.post("/surveys", json={"customer_id": unique_id(), "scores": scores, "recommend": 5})
    window = {"from": "2032-06-01T00:00:00Z", "to": "2032-07-01T00:00:00Z"}
    database = blocking_client(stack.mongo_url)[complaints.env["CRM_DB_PREFIX"] + "complaints"]
    in_window = {"opened_at": {"$gte": start - timedelta(hours=1), "$lt": start + timedelta(hours=1)}}
    assert database["complaints"].count_documents({**in_window, "opened_ts": {"$exists": True}}) == 2
    # As stored before: no epoch seconds. After a restart they are back and counted.
    database["complaints"].update_many(in_window, {"$unset": {"opened_ts": ""}})
    database["surveys"].update_many({"recommend": 5, "scores.website": 3}, {"$unset": {"submitted_ts": ""}})
    complaints.restart()
    until(
        lambda: complaints.get("/complaints/stats", params=window).json()["total"]["count"], lambda n: n == 2
    )
    until(lambda: complaints.get("/surveys/stats", params=window).json()["surveys"], lambda n: n == 1)
