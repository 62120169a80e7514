"""Bad input and access across the platform, over real HTTP against the whole platform on the
embedded stack: peers that answer nonsense, bulk exports of personal data."""

from __future__ import annotations

import csv
import importlib
import io
import re
import threading
import time
import uuid
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from services.common.auth import ROLES
from services.common.mongo import blocking_client
from services.common.routes import ROUTE_ROLES, routes_of
from services.common.settings import Settings
from services.stack.harness import Service, start_platform, start_service
from tests.conftest import NOW


def until(fetch, condition, timeout: float = 40.0):
    deadline = time.monotonic() + timeout
    while not condition(value := fetch()):
        assert time.monotonic() < deadline, f"never happened; last: {str(value)[:500]}"
        time.sleep(0.25)
    return value


@pytest.fixture(scope="module")
def platform(stack, prefix, clock_file, tmp_path_factory) -> dict[str, Service]:
    started = start_platform(
        stack, tmp_path_factory.mktemp("faust"), CRM_TOPIC_PREFIX=prefix, CRM_CLOCK_FILE=str(clock_file)
    )
    yield started
    for service in started.values():
        service.stop()


@pytest.fixture(scope="module")
def profiles(platform) -> Service:
    return platform["profiles"]


@pytest.fixture(scope="module")
def profiles_db(stack, platform) -> Any:
    return blocking_client(stack.mongo_url)[platform["profiles"].env["CRM_DB_PREFIX"] + "profiles"]


class _HtmlPage(BaseHTTPRequestHandler):
    """A peer gone wrong the way proxies do: 200 with an HTML page instead of JSON."""

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        body = b"<html><body>Service temporarily moved</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def html_peer() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_360_view_stays_partial_when_a_peer_answers_html(stack, platform, html_peer):
    """Orders "answers" 200 text/html: the 360 says orders is unavailable and shows the rest."""
    env = {k: v for k, v in platform["profiles"].env.items() if k.startswith("CRM_") and k.endswith("_URL")}
    env.pop("CRM_MONGO_URL", None)
    misrouted = start_service(
        stack,
        "profiles",
        db_prefix=platform["profiles"].env["CRM_DB_PREFIX"],
        CRM_TOPIC_PREFIX=platform["profiles"].env["CRM_TOPIC_PREFIX"],
        **{**env, "CRM_ORDERS_URL": html_peer},
    )
    try:
        registered = misrouted.post("/customers", json={"channel": "app", "name": "Ada"})
        assert registered.status_code == 201, registered.text
        customer = registered.json()["customer_id"]
        view = misrouted.get(f"/customers/{customer}/360")
        assert view.status_code == 200, view.text
        body = view.json()
        assert body["partial"] is True and body["unavailable"] == ["orders"]
        assert body["orders"]["status"] == "unavailable" and "text/html" in body["orders"]["error"]
        assert body["complaints"]["status"] == "ok" and body["loyalty"]["status"] == "ok"
    finally:
        misrouted.stop()


def test_bulk_csv_export_escapes_formulas_needs_agent_and_is_recorded(profiles, profiles_db):
    city = f"city-{uuid.uuid4().hex[:6]}"
    names = ['=HYPERLINK("http://evil","x")', "+1 555", "-2", "@SUM(A1)", "Plain Name"]
    customers = [
        profiles.post("/customers", json={"channel": "app", "name": name, "city": city}).json()["customer_id"]
        for name in names
    ]
    for customer in customers:
        until(
            lambda c=customer: profiles.get(f"/customers/{c}").json(), lambda p: p.get("status") == "scored"
        )

    refused = profiles.get("/customers", params={"city": city, "format": "csv"}, role="viewer")
    assert refused.status_code == 403 and "agent" in refused.json()["detail"]
    assert (
        profiles.get("/customers", params={"city": city}, role="viewer").status_code == 200
    )  # reads stay open

    exported = profiles.get("/customers", params={"city": city, "format": "csv"}, role="agent")
    assert exported.status_code == 200, exported.text
    rows = {r["customer_id"]: r["name"] for r in csv.DictReader(io.StringIO(exported.text))}
    assert [rows[c] for c in customers] == [
        '\'=HYPERLINK("http://evil","x")',
        "'+1 555",
        "'-2",
        "'@SUM(A1)",
        "Plain Name",
    ]

    recorded = list(profiles_db["exports"].find({"filters.city": city}))
    assert len(recorded) == 1  # the refused one was not an export
    (record,) = recorded
    assert record["by"] == "agent" and record["role"] == "agent" and record["format"] == "csv"
    assert record["filters"] == {"city": city}
    assert record["at"].replace(tzinfo=UTC) == NOW  # the platform's clock (the module's clock file)


def served_routes(service: str) -> list[str]:
    """Every "METHOD /path" the service's app serves, read from the app itself."""
    app = importlib.import_module(f"services.{service}.main").create_app(Settings())
    return [name for name, _ in routes_of(app)]


@pytest.mark.parametrize("service", ["orders", "complaints", "loyalty", "profiles"])
def test_every_route_needs_its_role_no_key_401_a_lower_role_403(platform, service):
    """Walks every route the service serves against the running platform; a route the table
    does not name fails here."""
    served = served_routes(service)
    table = ROUTE_ROLES[service]
    assert sorted(set(served) - table.keys()) == [], "routes missing from services/common/routes.py"
    assert sorted(table.keys() - set(served)) == [], "the table names routes the service does not serve"
    client = platform[service]
    checked = 0
    for name in served:
        method, template = name.split(" ", 1)
        path = re.sub(r"\{[^}]+\}", "x-1", template)
        role = table[name]
        if role is None:
            assert client.request(method, path, role=None).status_code < 400, name
            continue
        anonymous = client.request(method, path, role=None)
        assert anonymous.status_code == 401, (name, anonymous.status_code, anonymous.text)
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert (
            client.request(method, path, role=None, headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )
        lower = ROLES.index(role) - 1
        if lower >= 0:
            refused = client.request(method, path, role=ROLES[lower])
            assert refused.status_code == 403, (name, ROLES[lower], refused.status_code, refused.text)
        allowed = client.request(method, path, role=role)
        assert allowed.status_code not in (401, 403), (name, role, allowed.status_code, allowed.text)
        checked += 1
    assert checked >= 5
