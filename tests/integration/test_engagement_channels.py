"""The SMS and push provider's webhook against a real local HTTP server: signed with HMAC,
5xx and no answer are retried, a 4xx is a refusal with the provider's reason."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.common.settings import Settings
from services.engagement.channels import Accepted, Outgoing, Refused, Retry, WebhookTransport
from services.stack.embedded import free_port

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
        self.received.append({**json.loads(body), "status": status, "key": self.headers["Idempotency-Key"]})
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
    assert Provider.received[0] == {
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
