"""The SMS and push provider's webhook against a real local HTTP server: signed with HMAC,
5xx and no answer are retried, a 4xx is a refusal with the provider's reason; and the whole
engagement service against a provider that keeps answering 5xx: retried with backoff, then
failed with the reason; and the provider's signed delivery receipts moving sent messages to
delivered or failed once, with their events, in the campaign report."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from services.common.settings import Settings
from services.engagement.channels import Accepted, Outgoing, Refused, Retry, WebhookTransport
from services.engagement.domain import MAX_ATTEMPTS
from services.stack.embedded import free_port
from services.stack.harness import Service, TopicReader, start_service, unique_id, until
from tests.integration.test_engagement import care_due, registered

SECRET = "provider-secret"


def provider_signature(stamp: str, body: bytes, secret: str = SECRET) -> str:
    """The scheme written out here, not imported: the test checks the service against it."""
    return "sha256=" + hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Provider(BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        stamp = self.headers["X-CRM-Timestamp"]
        expected = provider_signature(stamp, body)
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


def sms_engagement(stack, prefix, clock_file, provider, **env: str) -> Service:
    return start_service(
        stack,
        "engagement",
        CRM_TOPIC_PREFIX=prefix,
        CRM_CLOCK_FILE=str(clock_file),
        CRM_ENGAGEMENT_SEND_SECONDS="0.05",
        CRM_ENGAGEMENT_TIMEZONE="UTC",
        CRM_WEBHOOK_URL=f"http://127.0.0.1:{provider.server_address[1]}/send",
        CRM_WEBHOOK_SECRET=SECRET,
        **env,
    )


def birthday_sms(engagement: Service) -> dict:
    created = engagement.post(
        "/campaigns",
        json={
            "name": "Birthday SMS",
            "trigger": "care_due",
            "channel": "sms",
            "control_share": 0,
            "default_locale": "en",
            "templates": {"en": {"subject": "", "text": "Happy birthday, {{ customer.name }}!", "html": ""}},
        },
    )
    assert created.status_code == 201, created.text
    return created.json()


def test_a_provider_answering_5xx_is_retried_with_backoff_then_the_message_fails_with_the_reason(
    provider, stack, prefix, clock_file, publish
):
    Provider.answers = [503] * (MAX_ATTEMPTS + 2)
    first_wait = 0.1
    engagement = sms_engagement(
        stack, prefix, clock_file, provider, CRM_ENGAGEMENT_RETRY_SECONDS=str(first_wait)
    )
    try:
        created = birthday_sms(engagement)
        customer = unique_id()
        publish(registered(customer, name="Li Wei", email=None, consent=True, phone="+86 138 0000 0001"))
        until(lambda: engagement.get(f"/contacts/{customer}").status_code, lambda s: s == 200)
        publish(care_due(customer))

        def the_message() -> dict:
            items = engagement.get(f"/campaigns/{created['campaign_id']}/messages").json()["items"]
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
        report = engagement.get(f"/campaigns/{created['campaign_id']}/report").json()
        assert (report["failed"], report["sent"]) == (1, 0)
    finally:
        engagement.stop()


def signed_receipt(body: dict, secret: str = SECRET, stamp: int | None = None) -> dict:
    """A receipt as the provider sends it: the body's bytes signed as the webhook's are."""
    raw = json.dumps(body).encode()
    at = str(stamp if stamp is not None else int(time.time()))
    return {
        "content": raw,
        "headers": {
            "Content-Type": "application/json",
            "X-CRM-Timestamp": at,
            "X-CRM-Signature": provider_signature(at, raw, secret),
        },
    }


def test_the_providers_receipts_move_sent_messages_to_delivered_or_failed_once(
    provider, stack, prefix, clock_file, publish
):
    Provider.answers = [200, 200]
    engagement = sms_engagement(stack, prefix, clock_file, provider)
    try:
        campaign_id = birthday_sms(engagement)["campaign_id"]
        customers = [unique_id(), unique_id(), unique_id()]  # the last one did not consent
        for k, customer in enumerate(customers):
            phone = f"+86 138 0000 001{k}"
            publish(registered(customer, name="Li Wei", email=None, consent=k < 2, phone=phone))
        for customer in customers:
            until(lambda c=customer: engagement.get(f"/contacts/{c}").status_code, lambda s: s == 200)
            publish(care_due(customer))

        def messages() -> dict[str, dict]:
            items = engagement.get(f"/campaigns/{campaign_id}/messages").json()["items"]
            return {m["customer_id"]: m for m in items}

        settled = ("sent", "suppressed")
        sent = until(messages, lambda ms: len(ms) == 3 and all(m["state"] in settled for m in ms.values()))
        reaches, fails, never = (sent[c]["message_id"] for c in customers)
        assert sent[customers[2]]["state"] == "suppressed"

        def receipt(channel: str = "sms", **body) -> httpx.Response:
            return engagement.post(f"/providers/{channel}/receipts", role=None, **signed_receipt(body))

        # Who may report: only the provider, with the webhook's key, lately.
        delivered = {"message_id": reaches, "status": "delivered"}
        unsigned = engagement.post("/providers/sms/receipts", role=None, json=delivered)
        assert unsigned.status_code == 401, unsigned.text
        forged = engagement.post("/providers/sms/receipts", role=None, **signed_receipt(delivered, "guess"))
        assert forged.status_code == 401
        replayed = signed_receipt(delivered, stamp=int(time.time()) - 3600)
        assert engagement.post("/providers/sms/receipts", role=None, **replayed).status_code == 401
        # What it names must exist on that channel; what it says must be a receipt.
        assert receipt(message_id="m-nobody", status="delivered").status_code == 404
        assert receipt("push", **delivered).status_code == 404  # an SMS, not a push message
        assert receipt(message_id=reaches, status="read").status_code == 422
        assert receipt(message_id=fails, status="failed").status_code == 422  # no reason
        assert receipt(message_id=reaches, status="delivered", extra=1).status_code == 422
        # A message the provider was never handed takes no receipt.
        assert receipt(message_id=never, status="delivered").status_code == 409

        first = receipt(**delivered, provider_message_id="prov-1")
        assert first.status_code == 200, first.text
        assert first.json() == {"message_id": reaches, "state": "sent", "delivered": True, "reason": None}
        failing = {"message_id": fails, "status": "failed", "reason": "handset switched off"}
        second = receipt(**failing)
        assert second.json() == {
            "message_id": fails,
            "state": "failed",
            "delivered": False,
            "reason": "provider: handset switched off",
        }
        # The same receipts again, and late ones contradicting them: nothing changes.
        assert receipt(**delivered).json() == first.json()
        assert receipt(**failing).json() == second.json()
        assert receipt(message_id=reaches, status="failed", reason="late").json() == first.json()
        assert receipt(message_id=fails, status="delivered").json() == second.json()

        report = engagement.get(f"/campaigns/{campaign_id}/report").json()
        assert (report["sent"], report["delivered"], report["failed"]) == (1, 1, 1)
        stored = messages()
        assert stored[customers[0]]["provider_message_id"] == "prov-1"
        assert stored[customers[1]]["reason"] == "provider: handset switched off"
        # Each event exactly once, through the outbox, for the scorer and everyone else.
        events = TopicReader(stack, prefix + "crm.engagement.v1").collect(
            lambda e: (
                e["data"]["message_id"] in (reaches, fails)
                and e["type"] in ("crm.message.delivered", "crm.message.failed")
            ),
            count=2,
        )
        assert sorted((e["type"], e["data"]["message_id"]) for e in events) == sorted(
            [("crm.message.delivered", reaches), ("crm.message.failed", fails)]
        )
        failed_event = next(e for e in events if e["type"] == "crm.message.failed")
        assert (failed_event["data"]["reason"], failed_event["data"]["attempts"]) == (
            "provider: handset switched off",
            1,
        )
    finally:
        engagement.stop()
