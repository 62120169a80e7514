"""The SMS and push provider's webhook against a real local HTTP server: signed with HMAC,
5xx and no answer are retried, a 4xx is a refusal with the provider's reason; and the whole
engagement service against a provider that keeps answering 5xx: retried with backoff, then
failed with the reason."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.common.settings import Settings
from services.engagement.channels import Accepted, Outgoing, Refused, Retry, WebhookTransport
from services.engagement.domain import MAX_ATTEMPTS
from services.stack.embedded import free_port
from services.stack.harness import start_service, unique_id, until
from tests.integration.test_engagement import care_due, registered

SECRET = "provider-secret"


class Provider(BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        stamp = self.headers["X-CRM-Timestamp"]
        expected = (
            "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        status = (
            self.answers.pop(0) if hmac.compare_digest(expected, self.headers["X-CRM-Signature"]) else 401
        )
        self.received.append(
            {
                **json.loads(body),
                "status": status,
                "key": self.headers["Idempotency-Key"],
                "at": time.monotonic(),
            }
        )
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b'{"detail": "number not reachable"}' if status == 400 else b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def provider():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Provider.answers, Provider.received = [], []
    yield server
    server.shutdown()
    server.server_close()


def message(k: int) -> Outgoing:
    return Outgoing(f"m-{k}", "sms", "+86 138 0000 0000", "", f"Hello {k}", "", None, f"c-{k}")


def test_the_webhook_is_signed_and_its_answers_are_told_apart(provider):
    port = provider.server_address[1]
    transport = WebhookTransport(Settings(webhook_url=f"http://127.0.0.1:{port}/send", webhook_secret=SECRET))
    Provider.answers = [200, 503, 400]
    results = transport.send_batch([message(1), message(2), message(3)], None)
    assert isinstance(results[0], Accepted)
    assert isinstance(results[1], Retry) and "503" in str(results[1])
    assert isinstance(results[2], Refused) and "number not reachable" in str(results[2])
    assert [r["status"] for r in Provider.received] == [200, 503, 400]
    assert {k: v for k, v in Provider.received[0].items() if k != "at"} == {
        "message_id": "m-1",
        "channel": "sms",
        "to": "+86 138 0000 0000",
        "text": "Hello 1",
        "status": 200,
        "key": "m-1",
    }
    # Signed with another secret: the provider refuses it.
    forged = WebhookTransport(Settings(webhook_url=f"http://127.0.0.1:{port}/send", webhook_secret="guess"))
    assert isinstance(forged.send_batch([message(4)], None)[0], Refused)


def test_a_provider_that_does_not_answer_is_retried():
    transport = WebhookTransport(
        Settings(webhook_url=f"http://127.0.0.1:{free_port()}/send", webhook_secret=SECRET)
    )
    assert isinstance(transport.send_batch([message(1)], None)[0], Retry)


def test_a_provider_answering_5xx_is_retried_with_backoff_then_the_message_fails_with_the_reason(
    provider, stack, prefix, clock_file, publish
):
    Provider.answers = [503] * (MAX_ATTEMPTS + 2)
    first_wait = 0.1
    engagement = start_service(
        stack,
        "engagement",
        CRM_TOPIC_PREFIX=prefix,
        CRM_CLOCK_FILE=str(clock_file),
        CRM_ENGAGEMENT_SEND_SECONDS="0.05",
        CRM_ENGAGEMENT_RETRY_SECONDS=str(first_wait),
        CRM_ENGAGEMENT_TIMEZONE="UTC",
        CRM_WEBHOOK_URL=f"http://127.0.0.1:{provider.server_address[1]}/send",
        CRM_WEBHOOK_SECRET=SECRET,
    )
    try:
        created = engagement.post(
            "/campaigns",
            json={
                "name": "Birthday SMS",
                "trigger": "care_due",
                "channel": "sms",
                "control_share": 0,
                "default_locale": "en",
                "templates": {
                    "en": {"subject": "", "text": "Happy birthday, {{ customer.name }}!", "html": ""}
                },
            },
        )
        assert created.status_code == 201, created.text
        customer = unique_id()
        publish(registered(customer, name="Li Wei", email=None, consent=True, phone="+86 138 0000 0001"))
        until(lambda: engagement.get(f"/contacts/{customer}").status_code, lambda s: s == 200)
        publish(care_due(customer))

        def the_message() -> dict:
            items = engagement.get(f"/campaigns/{created.json()['campaign_id']}/messages").json()["items"]
            return items[0] if items else {}

        failed = until(the_message, lambda m: m.get("state") == "failed", timeout=60)
        assert failed["attempts"] == MAX_ATTEMPTS
        assert failed["reason"] == f"provider answered HTTP 503 ({MAX_ATTEMPTS} attempts)"
        tries = [r for r in Provider.received if r["message_id"] == failed["message_id"]]
        assert len(tries) == MAX_ATTEMPTS  # nothing more after giving up
        assert {r["text"] for r in tries} == {"Happy birthday, Li Wei!"} and {r["key"] for r in tries} == {
            failed["message_id"]
        }
        # Backoff: each wait at least the one before doubled (from the first wait).
        gaps = [b["at"] - a["at"] for a, b in zip(tries, tries[1:], strict=False)]
        assert all(gap >= first_wait * 2**k * 0.9 for k, gap in enumerate(gaps)), gaps
        report = engagement.get(f"/campaigns/{created.json()['campaign_id']}/report").json()
        assert (report["failed"], report["sent"]) == (1, 0)
    finally:
        engagement.stop()
