"""How a message leaves: email over SMTP (any relay: host, port, TLS, credentials), SMS and
app push through the provider's webhook (JSON over HTTPS, signed with HMAC-SHA256). A
transport answers `Accepted`, or raises `Retry` (the other end is down or busy: try again
later) or `Refused` (it will never take this message). The provider's delivery receipts come
back signed the same way (`signed_by_provider`)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from typing import Any

import httpx
import orjson

from services.common.settings import Settings


class Retry(Exception):
    """The relay or provider is unreachable or answered a temporary failure."""


class Refused(Exception):
    """The relay or provider turned the message down for good (a bad address, 4xx)."""


@dataclass(frozen=True)
class Accepted:
    final: bool  # the receiving end is the customer's mailbox itself (the local SMTP server)


@dataclass(frozen=True)
class Outgoing:
    message_id: str
    channel: str
    to: str
    subject: str
    text: str
    html: str
    unsubscribe_url: str | None  # marketing only (RFC 8058 one-click)
    customer_id: str


# Headers longer than 78 characters (a signed unsubscribe link) stay on one line, as RFC 5322
# allows up to 998: folded, the link would start with a space where a reader unfolds it.
HEADERS_UNFOLDED = compat32.clone(max_line_length=998)


def email_of(out: Outgoing, settings: Settings, when: Any) -> Message:
    """The email, built with the classic MIME classes: their headers are kept as written, where
    the modern `EmailMessage` parses every header it is given (10 ms a message, most of a
    campaign's sending time). Text outside ASCII is encoded here (RFC 2047 and 2231 headers,
    base64 bodies), so the message is plain ASCII on the wire."""
    mail = MIMEMultipart("alternative", policy=HEADERS_UNFOLDED)
    mail["From"] = formataddr(parseaddr(settings.mail_from), charset="utf-8")
    mail["To"] = formataddr(("", out.to))
    mail["Subject"] = Header(out.subject, "utf-8").encode() if not out.subject.isascii() else out.subject
    mail["Date"] = format_datetime(when)
    # The message's own id: a relay that saw it before can tell a resend from a new message.
    mail["Message-ID"] = make_msgid(idstring=out.message_id, domain="crm.engagement")
    mail["X-CRM-Message-Id"] = out.message_id
    if out.unsubscribe_url:
        mail["List-Unsubscribe"] = f"<{out.unsubscribe_url}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail.attach(MIMEText(out.text, "plain", "utf-8"))
    mail.attach(MIMEText(out.html, "html", "utf-8"))
    return mail


Result = Accepted | Retry | Refused


class EmailTransport:
    """One connection to the relay for a batch of messages."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.smtp_tls == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
        if s.smtp_tls == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if s.smtp_user:
            smtp.login(s.smtp_user, s.smtp_password or "")
        return smtp

    def send_batch(self, batch: list[Outgoing], when: Any) -> list[Result]:
        results: list[Result] = []
        try:
            smtp = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            return [Retry(f"relay unreachable: {type(exc).__name__}: {exc}")] * len(batch)
        final = self.settings.mailbox_dir is not None
        try:
            for out in batch:
                try:
                    smtp.send_message(email_of(out, self.settings, when))
                    results.append(Accepted(final))
                except smtplib.SMTPRecipientsRefused as exc:
                    results.append(Refused(f"recipient refused: {exc.recipients}"))
                except smtplib.SMTPResponseException as exc:
                    temporary = 400 <= exc.smtp_code < 500
                    reason = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
                    results.append(Retry(reason) if temporary else Refused(reason))
        except (OSError, smtplib.SMTPException) as exc:
            # The connection broke: what was not answered yet is tried again later.
            results += [Retry(f"{type(exc).__name__}: {exc}")] * (len(batch) - len(results))
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()
        return results


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """What the provider checks: HMAC-SHA256 over the timestamp and the body."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


RECEIPT_TOLERANCE_SECONDS = 300


def signed_by_provider(
    secret: str, timestamp: str | None, body: bytes, given: str | None, now: float
) -> bool:
    """A delivery receipt's signature: the webhook's own scheme, the other way round, over a
    timestamp within five minutes of `now` (epoch seconds), so a receipt recorded on the way
    cannot be replayed later."""
    if not timestamp or not given or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > RECEIPT_TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body).encode(), given.encode())


class WebhookTransport:
    """SMS and push through the provider's webhook: one POST per message, retried by the
    sender with backoff while the provider answers 5xx or does not answer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = httpx.Client(timeout=settings.smtp_timeout_seconds)

    def send_batch(self, batch: list[Outgoing], when: Any) -> list[Result]:
        results: list[Result] = []
        for out in batch:
            try:
                results.append(self.send(out))
            except (Retry, Refused) as exc:
                results.append(exc)
        return results

    def send(self, out: Outgoing) -> Accepted:
        if not self.settings.webhook_url:
            raise Refused("no provider webhook configured (CRM_WEBHOOK_URL)")
        body = orjson.dumps(
            {"message_id": out.message_id, "channel": out.channel, "to": out.to, "text": out.text}
        )
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-CRM-Timestamp": stamp,
            "X-CRM-Signature": signature(self.settings.webhook_secret, stamp, body),
            "Idempotency-Key": out.message_id,
        }
        try:
            response = self.client.post(self.settings.webhook_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise Retry(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise Retry(f"provider answered HTTP {response.status_code}")
        if response.status_code >= 400:
            raise Refused(f"provider answered HTTP {response.status_code}: {response.text[:150]}")
        return Accepted(final=False)
