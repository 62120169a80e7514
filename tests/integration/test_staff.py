"""The staff directory against the real stack: users in teams, keys issued to them and used on
other services, revoked and refused everywhere within seconds, and what happens while the
directory is away. Four services as real processes: staff, orders, loyalty and profiles."""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime

import httpx
import pytest

from services.common.auth import hash_key
from services.common.clock import parse_rfc3339
from services.common.mongo import blocking_client
from services.common.settings import Settings
from services.stack.embedded import free_port
from services.stack.harness import Service, TopicReader, start_service, stop_services, until

CACHE_SECONDS = Settings().auth_cache_seconds


@pytest.fixture(scope="module")
def desk(stack, prefix) -> dict[str, Service]:
    db_prefix = f"t{uuid.uuid4().hex[:8]}_"
    ports = {name: free_port() for name in ("staff", "orders", "loyalty", "profiles")}
    urls = {f"CRM_{name.upper()}_URL": f"http://127.0.0.1:{port}" for name, port in ports.items()}
    started = {
        name: start_service(
            stack,
            name,
            db_prefix=db_prefix,
            port=ports[name],
            CRM_TOPIC_PREFIX=prefix,
            CRM_STAFF_LAST_USED_SECONDS="1",
            **urls,
        )
        for name in ports
    }
    yield started
    stop_services(started.values())


@pytest.fixture(scope="module")
def staff(desk) -> Service:
    return desk["staff"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def add_user(staff: Service, roles: list[str], team: str | None = None, **extra) -> str:
    user_id = f"u.{uuid.uuid4().hex[:10]}"
    body = {"id": user_id, "name": f"Agent {user_id}", "email": f"{user_id}@shop.example", "roles": roles}
    if team:
        body["team"] = team
    created = staff.post("/users", json={**body, **extra})
    assert created.status_code == 201, created.text
    return user_id


def issue(staff: Service, user_id: str, label: str = "laptop") -> dict:
    issued = staff.post(f"/users/{user_id}/keys", json={"label": label})
    assert issued.status_code == 201, issued.text
    return issued.json()


def order_body(customer: str) -> dict:
    return {
        "customer_id": customer,
        "currency": "CNY",
        "items": [{"sku": "S-1", "category": "shoes", "brand": "Acme", "qty": 1, "unit_price_cents": 12900}],
    }


def statuses(desk: dict[str, Service], key: str) -> tuple[int, int]:
    """What orders and loyalty answer a read with this key."""
    orders = desk["orders"].get("/orders", role=None, params={"customer_id": "c-nobody"}, headers=bearer(key))
    loyalty = desk["loyalty"].get("/tiers", role=None, headers=bearer(key))
    return orders.status_code, loyalty.status_code


def key_row(staff: Service, user_id: str, key_id: str) -> dict:
    (row,) = [k for k in staff.get(f"/users/{user_id}/keys").json()["items"] if k["key_id"] == key_id]
    return row


def test_a_key_issued_to_a_user_works_on_every_service_names_them_and_stops_within_seconds_of_revocation(
    stack, desk, staff, prefix
):
    agent = add_user(staff, ["agent"])
    issued = issue(staff, agent)
    assert issued["key"].startswith("crm_user_") and issued["role"] == "agent"
    assert "key" not in key_row(staff, agent, issued["key_id"])  # listed without the key itself
    stored = blocking_client(stack.mongo_url)[staff.env["CRM_DB_PREFIX"] + "staff"]["keys"].find_one(
        {"_id": issued["key_id"]}
    )
    assert issued["key"] not in str(stored) and stored["key_hash"] == hash_key(issued["key"])

    assert statuses(desk, issued["key"]) == (200, 200)
    # What the user does is recorded under their name, not a shared key's label.
    placed = desk["orders"].post(
        "/orders", role=None, json=order_body("c-staff-1"), headers=bearer(issued["key"])
    )
    assert placed.status_code == 201, placed.text
    assert placed.json()["history"][0]["by"] == agent
    city = f"city-{uuid.uuid4().hex[:6]}"
    exported = desk["profiles"].get(
        "/customers", role=None, params={"city": city, "format": "csv"}, headers=bearer(issued["key"])
    )
    assert exported.status_code == 200, exported.text
    (record,) = blocking_client(stack.mongo_url)[staff.env["CRM_DB_PREFIX"] + "profiles"]["exports"].find(
        {"filters.city": city}
    )
    assert record["by"] == agent and record["role"] == "agent"
    # An agent is not an admin anywhere.
    assert (
        desk["loyalty"]
        .post(
            "/accounts/c-staff-1/adjustments",
            role=None,
            json={"points": 5, "reason": "goodwill"},
            headers={**bearer(issued["key"]), "Idempotency-Key": uuid.uuid4().hex},
        )
        .status_code
        == 403
    )

    revoked = staff.request("DELETE", f"/keys/{issued['key_id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_by"] == "admin"
    started = time.monotonic()
    until(
        lambda: statuses(desk, issued["key"]), lambda answer: answer == (401, 401), timeout=CACHE_SECONDS + 5
    )
    assert time.monotonic() - started <= CACHE_SECONDS + 2
    # On the staff service itself at once, and revoking again changes nothing.
    assert staff.get("/teams", role=None, headers=bearer(issued["key"])).status_code == 401
    again = staff.request("DELETE", f"/keys/{issued['key_id']}")
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]

    events = TopicReader(stack, f"{prefix}crm.staff.v1").collect(lambda e: e["subject"] == agent, count=3)
    assert [e["type"] for e in events] == [
        "crm.staff.user_created",
        "crm.staff.key_issued",
        "crm.staff.key_revoked",
    ]
    assert issued["key"] not in str(events) and hash_key(issued["key"]) not in str(events)


def test_a_deactivated_users_keys_are_refused_and_no_key_is_issued_to_them(desk, staff):
    agent = add_user(staff, ["agent"])
    first, second = issue(staff, agent, "desk"), issue(staff, agent, "phone")
    assert statuses(desk, first["key"]) == (200, 200)
    deactivated = staff.request("PATCH", f"/users/{agent}", json={"active": False})
    assert deactivated.status_code == 200 and deactivated.json()["active"] is False
    keys = staff.get(f"/users/{agent}/keys").json()["items"]
    assert {k["key_id"] for k in keys if k["revoked_at"]} == {first["key_id"], second["key_id"]}
    for key in (first["key"], second["key"]):
        until(
            lambda key=key: statuses(desk, key),
            lambda answer: answer == (401, 401),
            timeout=CACHE_SECONDS + 5,
        )
    refused = staff.post(f"/users/{agent}/keys", json={"label": "again"})
    assert refused.status_code == 409 and "deactivated" in refused.json()["detail"]
    assert agent in {
        u["id"] for u in staff.get("/users", params={"active": "false", "limit": 500}).json()["items"]
    }


def test_last_used_at_moves_as_the_key_is_used(desk, staff):
    agent = add_user(staff, ["agent"])
    issued = issue(staff, agent)
    assert key_row(staff, agent, issued["key_id"])["last_used_at"] is None
    assert statuses(desk, issued["key"]) == (200, 200)
    first = until(
        lambda: key_row(staff, agent, issued["key_id"])["last_used_at"], lambda at: at is not None, timeout=10
    )
    time.sleep(CACHE_SECONDS + 1)  # each service asks again once its answer is this old
    assert statuses(desk, issued["key"]) == (200, 200)
    later = until(
        lambda: key_row(staff, agent, issued["key_id"])["last_used_at"], lambda at: at != first, timeout=10
    )
    assert parse_rfc3339(later) > parse_rfc3339(first)
    assert isinstance(parse_rfc3339(later), datetime)


def test_the_keys_file_admin_still_works_everywhere(desk, staff):
    for service in desk.values():
        assert service.get("/healthz").status_code == 200
    assert staff.get("/users").status_code == 200
    assert desk["orders"].get("/orders", params={"customer_id": "c-nobody"}).status_code == 200
    assert desk["loyalty"].get("/tiers").status_code == 200
    assert desk["orders"].get("/orders", role=None, headers=bearer("nope")).status_code == 401


def test_roles_rank_viewer_analyst_agent_supervisor_admin(desk, staff):
    analyst = issue(staff, add_user(staff, ["analyst"]))["key"]
    supervisor = issue(staff, add_user(staff, ["agent", "supervisor"]))["key"]
    orders = desk["orders"]
    assert (
        orders.get("/orders", role=None, params={"customer_id": "c-x"}, headers=bearer(analyst)).status_code
        == 200
    )
    assert (
        orders.post("/orders", role=None, json=order_body("c-x"), headers=bearer(analyst)).status_code == 403
    )
    assert (
        orders.post("/orders", role=None, json=order_body("c-x"), headers=bearer(supervisor)).status_code
        == 201
    )
    # an admin user may run the directory, like the keys file's admin
    admin = issue(staff, add_user(staff, ["admin"]))["key"]
    assert (
        staff.post(
            "/users/nobody-here/keys", role=None, json={"label": "x"}, headers=bearer(admin)
        ).status_code
        == 404
    )
    assert (
        staff.post(
            "/users/nobody-here/keys", role=None, json={"label": "x"}, headers=bearer(supervisor)
        ).status_code
        == 403
    )


def test_teams_name_supervisors_by_level_and_bad_input_is_refused(staff):
    first, second = add_user(staff, ["supervisor"]), add_user(staff, ["agent", "supervisor"])
    agent = add_user(staff, ["agent"])
    team_id = f"t-{uuid.uuid4().hex[:8]}"
    refused = staff.post("/teams", json={"id": team_id, "name": "East", "supervisors": [first, agent]})
    assert (
        refused.status_code == 422 and f"level 2: {agent} does not hold the supervisor role" in refused.text
    )
    created = staff.post("/teams", json={"id": team_id, "name": "East", "supervisors": [first, second]})
    assert created.status_code == 201, created.text
    assert staff.post("/teams", json={"id": team_id, "name": "East"}).status_code == 409
    moved = staff.request("PATCH", f"/users/{agent}", json={"team": team_id})
    assert moved.status_code == 200 and moved.json()["team"] == team_id
    team = staff.get(f"/teams/{team_id}").json()
    assert team["supervisors"] == [first, second]
    assert {m["id"] for m in team["members"]} == {agent}
    assert {u["id"] for u in staff.get("/users", params={"team": team_id}).json()["items"]} == {agent}
    assert staff.get("/users", params={"role": "supervisor", "limit": 500}).status_code == 200

    base = {"name": "N", "email": "n@shop.example", "roles": ["agent"]}
    cases = [
        ({**base, "id": "A"}, 422),  # capitals
        ({**base, "id": "ok-id", "roles": ["viewer"]}, 422),
        ({**base, "id": "ok-id", "roles": []}, 422),
        ({**base, "id": "ok-id", "email": "not-an-email"}, 422),
        ({**base, "id": "ok-id", "locale": "fr"}, 422),
        ({**base, "id": "ok-id", "team": "no-such-team"}, 422),
        ({**base, "id": agent}, 409),
    ]
    for body, status in cases:
        answer = staff.post("/users", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["detail"]
    assert staff.get("/users/no-such-user").status_code == 404
    assert staff.request("PATCH", f"/users/{agent}", json={"name": None}).status_code == 422
    assert staff.get("/auth/keys/" + "0" * 64).status_code == 404
    assert staff.get("/auth/keys/not-a-hash").status_code == 404


def test_the_demo_fills_the_directory_with_two_teams_of_agents_and_two_supervisors_each(stack, staff):
    from services.stack.demo import DEMO_TEAMS, Demo

    demo = Demo(Settings(staff_url=staff.url), stack.keys, rate=1.0, customers=0, seed=1)
    demo.directory()
    demo.directory()  # a second run changes nothing
    teams = staff.get("/teams").json()["items"]
    assert {t["id"] for t in teams} >= {team_id for team_id, _ in DEMO_TEAMS}
    east = staff.get("/teams/east").json()
    assert east["supervisors"] == ["wang.fang", "zhao.lei"]
    assert {m["id"] for m in east["members"]} == {login for login, _, _ in DEMO_TEAMS[("east", "华东客服组")]}
    roles = {u["id"]: u["roles"] for u in staff.get("/users", params={"limit": 500}).json()["items"]}
    assert (
        roles["huang.xd"] == ["analyst"] and roles["shop.admin"] == ["admin"] and roles["li.na"] == ["agent"]
    )
    # The demo works its cases with the demo agent's own key, so their histories name her.
    keys = staff.get("/users/li.na/keys").json()["items"]
    assert [k["label"] for k in keys if k["revoked_at"] is None] == ["demo"]
    case_key = demo.case_agent["Authorization"].removeprefix("Bearer ")
    assert staff.get(f"/auth/keys/{hash_key(case_key)}").json()["user"] == "li.na"


def signed_in_console(console: Service, key: str, accept_language: str = "en") -> httpx.Client:
    client = httpx.Client(
        base_url=console.url, timeout=30, follow_redirects=False, headers={"Accept-Language": accept_language}
    )
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/signin").text).group(1)
    answer = client.post("/signin", data={"csrf": token, "api_key": key, "next": "/staff"})
    assert answer.status_code == 303, answer.text
    return client


def form_fields(page: str, action: str) -> dict[str, str]:
    """The hidden fields of the form posting to `action` (its CSRF and one-time tokens)."""
    form = page.split(f'action="{action}"', 1)[1].split("</form>", 1)[0]
    return dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form))


def test_the_console_lists_the_directory_and_an_admin_issues_and_revokes_a_key(stack, desk, staff):
    console = start_service(
        stack,
        "console",
        db_prefix=staff.env["CRM_DB_PREFIX"],
        CRM_STAFF_URL=staff.url,
        CRM_ORDERS_URL=desk["orders"].url,
    )
    try:
        supervisor = add_user(staff, ["agent", "supervisor"])
        team_id = f"t-{uuid.uuid4().hex[:8]}"
        assert (
            staff.post(
                "/teams", json={"id": team_id, "name": "华东客服组", "supervisors": [supervisor]}
            ).status_code
            == 201
        )
        admin = signed_in_console(console, stack.keys["admin"])
        listing = admin.get("/staff")
        assert (
            listing.status_code == 200
            and "华东客服组" in listing.text
            and f"/staff/{supervisor}" in listing.text
        )

        page = admin.get(f"/staff/{supervisor}").text
        assert "No key yet." in page
        issued = admin.post(
            f"/staff/{supervisor}/keys",
            data={**form_fields(page, f"/staff/{supervisor}/keys"), "label": "front desk"},
        )
        assert issued.status_code == 200 and "Key issued." in issued.text
        assert issued.headers["cache-control"] == "no-store"
        key = re.search(r'<code class="secret">([^<]+)</code>', issued.text).group(1)
        assert key.startswith("crm_user_") and key not in admin.get(f"/staff/{supervisor}").text  # shown once

        # The person signs in with it (in Chinese), named by their login with their highest role.
        person = signed_in_console(console, key, "zh-CN")
        own = person.get("/staff")
        assert own.status_code == 200 and supervisor in own.text and "主管" in own.text and "员工" in own.text
        assert "API 密钥" not in person.get(f"/staff/{supervisor}").text  # keys are for admins
        assert statuses(desk, key) == (200, 200)

        page = admin.get(f"/staff/{supervisor}").text
        (key_id,) = re.findall(r'action="/staff/keys/([^/"]+)/revoke"', page)
        revoked = admin.post(
            f"/staff/keys/{key_id}/revoke", data=form_fields(page, f"/staff/keys/{key_id}/revoke")
        )
        assert (
            revoked.status_code == 303
            and revoked.headers["location"] == f"/staff/{supervisor}?done=key_revoked"
        )
        assert "Revoked" in admin.get(f"/staff/{supervisor}").text
        until(lambda: statuses(desk, key), lambda answer: answer == (401, 401), timeout=CACHE_SECONDS + 5)
        # and the person's console session ends with it
        until(
            lambda: person.get("/staff").status_code, lambda status: status == 303, timeout=CACHE_SECONDS + 5
        )
        # a viewer sees the directory but may not issue keys
        viewer = signed_in_console(console, stack.keys["viewer"])
        page = viewer.get(f"/staff/{supervisor}").text
        assert "Issue a key" not in page
        refused = viewer.post(
            f"/staff/{supervisor}/keys",
            data={
                "csrf": re.search(r'name="csrf" value="([^"]+)"', page).group(1),
                "form_token": "a" * 24,
                "label": "x",
            },
        )
        assert refused.status_code == 403
    finally:
        console.stop()


def test_with_the_directory_away_cached_keys_keep_working_and_unknown_ones_get_503(desk, staff):
    """Runs last: it stops the staff service and starts it again."""
    agent = add_user(staff, ["agent"])
    known, unseen = issue(staff, agent, "used"), issue(staff, agent, "never used")
    assert statuses(desk, known["key"]) == (200, 200)
    staff.child.stop()
    try:
        time.sleep(CACHE_SECONDS + 0.5)  # past the cache: the services would ask again
        assert statuses(desk, known["key"]) == (200, 200)
        answer = desk["orders"].get(
            "/orders", role=None, params={"customer_id": "c-x"}, headers=bearer(unseen["key"])
        )
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert "staff directory" in answer.json()["detail"]
        # neither the keys file nor a token that is no staff key needs the directory
        assert desk["orders"].get("/orders", params={"customer_id": "c-x"}).status_code == 200
        assert desk["orders"].get("/orders", role=None, headers=bearer("nope")).status_code == 401
    finally:
        staff.child.start()
        staff.child.wait_ready(60)
    until(lambda: statuses(desk, unseen["key"]), lambda answer: answer == (200, 200), timeout=10)
    with httpx.Client() as client:
        assert client.get(f"{staff.url}/healthz").status_code == 200
