"""The embedded stack's local SMTP server (aiosmtpd): it accepts every message and keeps it in
a Maildir, so `make run` delivers real email a person can read (engagement lists it at
GET /mailbox) and tests read it too. Run: python -m services.stack.smtp --port N --maildir DIR."""

from __future__ import annotations

import argparse
import asyncio
import mailbox
import signal
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class MaildirHandler:
    def __init__(self, path: Path) -> None:
        self.box = mailbox.Maildir(path, create=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.SMTP)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.box.add(message)
        return "250 kept in the local mailbox"


def read_mailbox(path: Path) -> list[dict[str, Any]]:
    """Every message kept, oldest first: headers, the text part and the HTML part."""
    box = mailbox.Maildir(path, create=False, factory=None)
    out = []
    for key in box.iterkeys():
        raw = box.get_bytes(key)
        mail: EmailMessage = message_from_bytes(raw, policy=policy.default)  # type: ignore[assignment]
        text = mail.get_body(("plain",))
        html = mail.get_body(("html",))
        out.append(
            {
                "key": key,
                "to": mail["To"],
                "from": mail["From"],
                "subject": mail["Subject"],
                "date": mail["Date"],
                "message_id": mail["X-CRM-Message-Id"],
                "list_unsubscribe": mail["List-Unsubscribe"],
                "list_unsubscribe_post": mail["List-Unsubscribe-Post"],
                "text": text.get_content() if text is not None else None,
                "html": html.get_content() if html is not None else None,
                "received": box.get_message(key).get_date(),
            }
        )
    out.sort(key=lambda m: m["received"])
    return out


async def serve(port: int, path: Path) -> None:
    controller = Controller(MaildirHandler(path), hostname="127.0.0.1", port=port)
    controller.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.maildir))


if __name__ == "__main__":
    main()
