"""Bad input and access across the platform, over real HTTP against the whole platform on the
embedded stack: peers that answer nonsense, bulk exports of personal data."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from services.common.mongo import blocking_client
from services.stack.harness import Service, start_platform, start_service


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
