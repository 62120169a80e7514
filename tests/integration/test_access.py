"""Bad input and access across the platform, over real HTTP against the whole platform on the
embedded stack: peers that answer nonsense, bulk exports of personal data."""

from __future__ import annotations

import csv
import importlib
import io
import json
import re
import string
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from services.common.auth import ROLES
from services.common.mongo import blocking_client
from services.common.routes import ROUTE_ROLES, SHELL, routes_of, web_routes_of
from services.common.settings import Settings
from services.stack.harness import Service, start_console, start_desk, start_reports, start_service, until
from tests.conftest import NOW


@pytest.fixture(scope="module")
def profiles(platform) -> Service:
    return platform["profiles"]


@pytest.fixture(scope="module")
def desk(stack, platform) -> Service:
    """The desk beside the platform, for the tests that walk every service."""
    platform["desk"] = start_desk(stack, platform)
    yield platform["desk"]
    platform.pop("desk").stop()


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


def served_routes(service: str, data_dir) -> list[str]:
    """Every "METHOD /path" the service's app serves, read from the app itself (the scorer's
    faust web views too)."""
    app = importlib.import_module(f"services.{service}.main").create_app(Settings(data_dir=data_dir))
    if service == "scoring":
        return web_routes_of(app)
    return [name for name, _ in routes_of(app)]


@pytest.fixture(scope="module")
def reports(stack, platform) -> Service:
    started = start_reports(stack, platform)
    yield started
    started.stop()


@pytest.mark.parametrize(
    "service",
    ["orders", "complaints", "loyalty", "profiles", "scoring", "staff", "desk", "engagement", "reports"],
)
def test_every_route_needs_its_role_no_key_401_a_lower_role_403(platform, service, tmp_path, request):
    """Walks every route the service serves against the running platform; a route the table
    does not name fails here."""
    if service == "desk":
        request.getfixturevalue("desk")
    served = served_routes(service, tmp_path)
    table = ROUTE_ROLES[service]
    assert sorted(set(served) - table.keys()) == [], "routes missing from services/common/routes.py"
    assert sorted(table.keys() - set(served)) == [], "the table names routes the service does not serve"
    client = request.getfixturevalue("reports") if service == "reports" else platform[service]
    checked = 0
    for name in served:
        method, template = name.split(" ", 1)
        path = re.sub(r"\{[^}]+\}", "x-1", template)
        role = table[name]
        if role is None:
            # Open: no key asked for (an unknown id may still be a 404, a customer's signed link
            # without its query a 422).
            assert client.request(method, path, role=None).status_code not in (401, 403), name
            assert client.request(method, path, role=None).status_code < 500, name
            continue
        anonymous = client.request(method, path, role=None)
        assert anonymous.status_code == 401, (name, anonymous.status_code, anonymous.text)
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert anonymous.headers["content-type"].startswith("application/problem+json")
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
    assert checked == sum(1 for role in table.values() if role) > 0


def test_the_privacy_export_holds_every_survey_past_500(platform, profiles):
    """The export pages through every service; a customer with 501 surveys gets all 501."""
    customer = profiles.post("/customers", json={"channel": "app"}, role="agent").json()["customer_id"]
    complaints = platform["complaints"]
    scores = {d: 4 for d in ("website", "product", "payment", "service", "logistics", "overall")}

    def survey(_):
        return complaints.post(
            "/surveys", json={"customer_id": customer, "scores": scores, "recommend": 8}, role="agent"
        ).status_code

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(survey, range(501))) == {201}
    exported = profiles.get(f"/customers/{customer}/export", role="admin")
    assert exported.status_code == 200, exported.text
    surveys = exported.json()["surveys"]
    assert len(surveys) == 501 == len({s["survey_id"] for s in surveys})


@pytest.mark.parametrize(
    ("service", "path"),
    [("complaints", "/complaints/stats"), ("complaints", "/surveys/stats"), ("profiles", "/segments")],
)
def test_period_summaries_a_viewer_can_ask_for_are_bounded(platform, service, path):
    """A viewer's summary over a period never runs over the whole history: at most 366 days."""
    client = platform[service]
    too_long = client.get(
        path, params={"from": "2020-01-01T00:00:00Z", "to": "2022-01-01T00:00:00Z"}, role="viewer"
    )
    assert too_long.status_code == 422, too_long.text
    assert too_long.json()["max_days"] == 366 and "366 days" in too_long.json()["detail"]
    backwards = client.get(
        path, params={"from": "2022-01-01T00:00:00Z", "to": "2021-01-01T00:00:00Z"}, role="viewer"
    )
    assert backwards.status_code == 422
    year = client.get(
        path, params={"from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, role="viewer"
    )
    assert year.status_code == 200, year.text
    unbounded = client.get(path, role="viewer")
    assert unbounded.status_code == 200
    period = unbounded.json().get("moves", unbounded.json())  # /segments reports its period under moves
    assert period["from"] is not None and period["to"] is not None


# --- fuzzing every operation from its OpenAPI ---------------------------------------------------

# Values that broke parsers and encoders before: lone surrogates, control characters, numbers a
# double or an int64 cannot hold, formula starts, long and empty text.
NASTY = [
    "\ud800",
    "a\udfffb",
    "\x00",
    "ada\x1f@example.com",
    "ada@exa\x00mple.com",
    "x\u202ey",
    "=1+1",
    "\U0001f600" * 50,
    "x" * 5000,
    "",
    " ",
    10**30,
    -(10**30),
    2**63,
    -(2**63) - 1,
    1e308,
    -0.0,
    5e-324,
    True,
    None,
]
OVERSIZED = 1_100_000  # more than the default body limit, CRM_MAX_BODY_BYTES
# Bodies no JSON encoder would write, sent as raw bytes.
RAW_BODIES = [
    b'{"name": "\\ud800"}',
    b'[{"customer_id": "c-1", "kind": "login", "attributes": {"k": "\\udc00"}}]',
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b"[1e400]",
    b'{"points": 1e400, "reason": "x"}',
    b'[{"customer_id": "c-1", "kind": "login", "attributes": {"n": 123456789012345678901234567890}}]',
    b'{"points": 123456789012345678901234567890, "reason": "x"}',
    b"NaN",
    b'{"x": Infinity}',
    b"\xff\xfe\x00",
    b'"\x01"',
    b'{"email": "a\\u0000b@c.de", "channel": "app"}',
    b"[" + b'{"customer_id": "c-1", "kind": "login"},' * 20_000 + b"{}]",
    b'{"a": "' + b"x" * OVERSIZED + b'"}',
]
EXAMPLES_PER_OPERATION = 25


@pytest.mark.parametrize(
    ("path", "raw", "status"),
    [
        ("/interactions", b'[{"customer_id": "c-1", "kind": "login", "attributes": {"k": "\\ud800"}}]', 422),
        ("/interactions", b"[" * 10_000 + b"]" * 10_000, 422),
        ("/interactions", b'[{"customer_id": "c-1", "kind": "login", "attributes": {"n": 1e400}}]', 422),
        ("/interactions", b'[{"customer_id": "c-1", "kind": "login", "attributes": {"n": NaN}}]', 422),
        (
            "/interactions",
            b'[{"customer_id": "c-1", "kind": "login", "attributes": {"n": 12345678901234567890123}}]',
            200,
        ),
        ("/customers", b'{"channel": "app", "email": "ada\\u0000@example.com"}', 422),
        ("/customers", b'{"channel": "app", "email": "ada\\u001f@example.com"}', 422),
        ("/customers", b'{"channel": "app", "name": "\\udfff"}', 422),
    ],
)
def test_bodies_no_encoder_writes_are_4xx_not_500(profiles, path, raw, status):
    answer = profiles.post(path, content=raw, headers={"Content-Type": "application/json"}, role="agent")
    assert answer.status_code == status, answer.text
    if status == 422:
        assert answer.headers["content-type"].startswith("application/problem+json")


def _json_values():
    leaves = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=20)
        | st.sampled_from(NASTY)
    )
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )


@st.composite
def _poisoned(draw, base):
    """A valid value with some of its leaves swapped for nasty ones."""

    def walk(node):
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return draw(st.sampled_from(NASTY)) if draw(st.integers(0, 3)) == 0 else node

    return walk(draw(base))


def _schema_strategy(schema: dict[str, Any], components: dict[str, Any]):
    """Values for a schema of the OpenAPI, valid ones and poisoned ones; any JSON where the
    generator cannot read the schema."""
    try:
        valid = from_schema({**schema, "components": components})
        return valid | _poisoned(valid) | _json_values()
    except Exception:  # noqa: BLE001 - a schema hypothesis-jsonschema cannot generate from
        return _json_values()


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value)


def _encode(value: Any) -> bytes:
    # ensure_ascii writes a lone surrogate as the escape a client would send; allow_nan the
    # NaN and Infinity tokens some encoders write.
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


def _operations(spec: dict[str, Any]):
    for template, item in spec["paths"].items():
        for method, operation in item.items():
            yield method.upper(), template, operation


def _operation_strategy(template: str, operation: dict[str, Any], components: dict[str, Any]):
    parameters = operation.get("parameters", [])
    path_params = {
        p["name"]: _schema_strategy(p.get("schema", {}), components) | st.sampled_from(NASTY)
        for p in parameters
        if p["in"] == "path"
    }
    query_params = {
        p["name"]: st.none() | _schema_strategy(p.get("schema", {}), components) | st.sampled_from(NASTY)
        for p in parameters
        if p["in"] == "query"
    }
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        body = st.none() | _schema_strategy(content["application/json"].get("schema", {}), components).map(
            _encode
        )
        media_type = "application/json"
    elif content:
        media_type = next(iter(content))
        body = st.none() | st.builds(
            lambda lines: b"\n".join(lines), st.lists(_json_values().map(_encode), max_size=5)
        )
    else:
        body, media_type = st.none(), None
    key = st.none() | st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=40)
    return st.fixed_dictionaries(
        {
            "path": st.fixed_dictionaries(path_params),
            "query": st.fixed_dictionaries(query_params),
            "body": body,
            "key": key,
        }
    ), media_type


def _send(client: Service, method: str, template: str, case: dict[str, Any], media_type: str | None):
    path = template
    for name, value in case["path"].items():
        path = path.replace(
            "{" + name + "}", quote(_as_text(value).encode("utf-8", "surrogatepass"), safe="")
        )
    params = [
        (name, _as_text(value).encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
        for name, value in case["query"].items()
        if value is not None
    ]
    headers = {}
    if case["key"]:
        headers["Idempotency-Key"] = case["key"]
    if case["body"] is not None and media_type:
        headers["Content-Type"] = media_type
    return client.request(method, path, params=params, content=case["body"], headers=headers)


def _fuzz(strategy, send) -> None:
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # report every failure rather than spend minutes shrinking
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case):
        send(case)

    run()


@pytest.mark.parametrize("service", ["orders", "complaints", "loyalty", "profiles", "staff", "desk"])
def test_no_input_makes_any_operation_answer_5xx(platform, service, request):
    """Every operation of the service's OpenAPI, with values generated from its schemas (valid
    ones, ones with nasty leaves, any JSON) and raw bodies no encoder writes: never a 5xx."""
    if service == "desk":
        request.getfixturevalue("desk")
    client = platform[service]
    spec = client.get("/openapi.json", role=None).json()
    components = spec.get("components", {})
    failures: list[str] = []

    def check(method: str, template: str, answer, sent: Any) -> None:
        if answer.status_code >= 500:
            failures.append(
                f"{method} {template} -> {answer.status_code} {answer.text[:200]} for {str(sent)[:300]}"
            )

    started = time.monotonic()
    for method, template, operation in _operations(spec):
        strategy, media_type = _operation_strategy(template, operation, components)

        _fuzz(
            strategy,
            lambda case, m=method, t=template, mt=media_type: check(
                m, t, _send(client, m, t, case, mt), case
            ),
        )
        if media_type is not None:
            path = re.sub(r"\{[^}]+\}", "x-1", template)
            for raw in RAW_BODIES:
                try:
                    answer = client.request(
                        method,
                        path,
                        content=raw,
                        headers={"Content-Type": media_type, "Idempotency-Key": "k"},
                    )
                except httpx.TransportError:
                    # The oversized body: the server answers 413 from its Content-Length and
                    # closes the connection before reading it, which a client may see as a reset.
                    assert len(raw) > OVERSIZED, (method, template, raw[:100])
                    continue
                check(method, template, answer, raw[:100])
    assert failures == [], "\n".join(failures)
    assert time.monotonic() - started < 120


@pytest.fixture(scope="module")
def console(stack, platform) -> Service:
    started = start_console(stack, platform)
    yield started
    started.stop()


def _console_session(console: Service, key: str | None) -> httpx.Client:
    """A browser's cookies: signed in with `key`, or not at all."""
    client = httpx.Client(base_url=console.url, timeout=30, follow_redirects=False)
    if key is not None:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/signin").text).group(1)
        assert client.post("/signin", data={"csrf": token, "api_key": key}).status_code == 303
    return client


def test_every_console_route_needs_a_session_and_the_role_its_action_needs(stack, console, tmp_path):
    """The console's routes walked like the services' (its pages are read with the signed-in
    person's key, so the services check again): without a session a page or a form sends to
    sign-in, never answers; a form's action refused to a role below the one it needs is 403.
    Every route the console serves is named here."""
    from services.console import api as console_api
    from services.console import domain as console_domain

    open_routes = {"GET /", "GET /signin", "POST /signin", "POST /language", *SHELL}
    pages = {"GET /customers", "GET /customers/{customer_id}", "GET /worklist", "GET /complaints",
             "GET /dashboard", "GET /reports", "GET /engagement", "GET /staff", "GET /staff/{user_id}",
             "POST /signout"}  # fmt: skip
    forms = {  # route -> {action: permission}
        "POST /customers/{customer_id}/{action}": {a: p for a, (p, _, _) in console_api.CUSTOMER_ACTIONS.items()},
        "POST /warnings/{warning_id}/{action}": {a: p for a, (p, _, _) in console_api.WARNING_ACTIONS.items()},
        "POST /complaints/{complaint_id}/move": {"move": "move_complaint"},
        "POST /staff/{user_id}/keys": {"issue": "manage_staff"},
        "POST /staff/keys/{key_id}/revoke": {"revoke": "manage_staff"},
    }  # fmt: skip
    app = importlib.import_module("services.console.main").create_app(Settings(data_dir=tmp_path))
    served = {name for name, _ in routes_of(app)}
    assert served - open_routes - pages - forms.keys() == set(), "console routes this walk does not know"
    assert (pages | forms.keys()) - served == set(), "the walk names routes the console does not serve"

    anonymous = _console_session(console, None)
    for name in sorted(pages):
        method, path = name.split(" ", 1)
        answer = anonymous.request(method, re.sub(r"\{[^}]+\}", "x-1", path))
        assert answer.status_code == 303 and answer.headers["location"].startswith("/signin"), name
    export = "/customers?format=csv"
    assert anonymous.get(export).headers["location"].startswith("/signin")

    sessions = {role: _console_session(console, key) for role, key in stack.keys.items()}
    for name, actions in forms.items():
        path = name.split(" ", 1)[1]
        for action, permission in actions.items():
            target = re.sub(r"\{action\}", action, re.sub(r"\{(?!action)[^}]+\}", "x-1", path))
            answer = anonymous.post(target, data={"csrf": "x"})
            assert answer.status_code == 303 and answer.headers["location"].startswith("/signin"), target
            needed = console_domain.PERMISSIONS[permission]
            for role, client in sessions.items():
                page = client.get("/customers")
                token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
                answer = client.post(target, data={"csrf": token, "form_token": "t" * 24})
                refused = ROLES.index(role) < ROLES.index(needed)
                assert (answer.status_code == 403) == refused, (target, role, answer.status_code)
    for role, client in sessions.items():
        allowed = ROLES.index(role) >= ROLES.index(console_domain.PERMISSIONS["export_csv"])
        assert (client.get(export).status_code == 403) != allowed, (export, role)
