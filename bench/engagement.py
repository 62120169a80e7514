"""A campaign to many recipients (BENCH_RECIPIENTS, default 100,000): enrolled (consent,
control group, pacing), rendered, claimed, handed to the local SMTP server and recorded by the
engagement service, in messages per second, beside a plain loop that sends the same number of
pre-rendered messages over one connection to the same server in the same run. And a saved
audience over as many profiles resolved through the profiles search (what a campaign does),
beside a plain indexed read of the same ids from the profiles collection."""

from __future__ import annotations

import os
import smtplib
import time
from datetime import UTC, datetime

from pymongo import InsertOne

from services.common.mongo import blocking_client
from services.common.settings import Settings
from services.engagement.channels import Outgoing, email_of
from services.engagement.stock import BIRTHDAY
from services.stack.embedded import free_port
from services.stack.harness import start_service

from .profiles_http import load_profiles
from .report import Row, show
from .stack import start_bench_stack

RECIPIENTS = int(os.environ.get("BENCH_RECIPIENTS", 100_000))


def daytime_zone() -> str:
    """A zone where it is midday now, so quiet hours hold nothing back."""
    offset = 12 - datetime.now(UTC).hour
    offset = offset - 24 if offset > 12 else offset
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def load_contacts(mongo_url: str, db_name: str, ids: list[str]) -> None:
    contacts = blocking_client(mongo_url)[db_name]["contacts"]
    consent = {"email": True, "sms": False, "push": False}
    batch = []
    for k, customer in enumerate(ids):
        batch.append(
            InsertOne(
                {
                    "_id": customer,
                    "name": f"Customer {k}",
                    "email": f"{customer}@example.com",
                    "consent": consent,
                }
            )
        )
        if len(batch) == 5000:
            contacts.bulk_write(batch, ordered=False)
            batch = []
    if batch:
        contacts.bulk_write(batch, ordered=False)


def plain_loop(port: int, count: int) -> float:
    """The baseline: pre-rendered messages, one connection, nothing recorded."""
    settings = Settings(smtp_port=port)
    mails = [
        email_of(
            Outgoing(
                f"m-plain-{k}", "email", f"p{k}@example.com", "Hi", "text", "<p>html</p>", None, f"p{k}"
            ),
            settings,
            datetime.now(UTC),
        )
        for k in range(count)
    ]
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for mail in mails:
            smtp.send_message(mail)
    return count / (time.perf_counter() - started)


def resolve_audience(stack, engagement, profiles) -> tuple[float, float]:
    """Seconds to count a saved audience of every profile, and to read their ids plainly."""
    load_profiles(stack.mongo_url, profiles.env["CRM_DB_PREFIX"] + "profiles", RECIPIENTS)
    saved = engagement.post("/audiences", json={"name": "Everyone", "filters": {}}, timeout=600)
    assert saved.status_code == 201, saved.text
    started = time.perf_counter()
    counted = engagement.get(f"/audiences/{saved.json()['audience_id']}", timeout=600).json()
    resolved = time.perf_counter() - started
    assert counted["count"] == RECIPIENTS, counted["count"]
    collection = blocking_client(stack.mongo_url)[profiles.env["CRM_DB_PREFIX"] + "profiles"]["profiles"]
    ids = [f"c-{k:07d}" for k in range(RECIPIENTS)]
    started = time.perf_counter()
    read = sum(
        len(collection.find({"_id": {"$in": ids[k : k + 1000]}}, {"_id": 1}).to_list(None))
        for k in range(0, RECIPIENTS, 1000)
    )
    plain = time.perf_counter() - started
    assert read == RECIPIENTS
    return resolved, plain


def main() -> None:
    stack = start_bench_stack()
    prefix = "bench_"
    profiles_port, engagement_port = free_port(), free_port()
    peers = {
        "CRM_PROFILES_URL": f"http://127.0.0.1:{profiles_port}",
        "CRM_ENGAGEMENT_URL": f"http://127.0.0.1:{engagement_port}",
    }
    profiles = start_service(stack, "profiles", db_prefix=prefix, port=profiles_port, **peers)
    engagement = start_service(
        stack,
        "engagement",
        db_prefix=prefix,
        port=engagement_port,
        CRM_ENGAGEMENT_TIMEZONE=daytime_zone(),
        CRM_ENGAGEMENT_SEND_SECONDS="0.2",
        **peers,
        **stack.mail_env(),
    )
    try:
        db = engagement.env["CRM_DB_PREFIX"] + "engagement"
        ids = [f"c-{k:07d}" for k in range(RECIPIENTS)]
        load_contacts(stack.mongo_url, db, ids)
        messages = blocking_client(stack.mongo_url)[db]["messages"]
        started = time.perf_counter()
        answer = engagement.post(
            "/campaigns",
            json={
                "name": "Bench",
                "kind": "one_off",
                "templates": BIRTHDAY,
                "control_share": 0.1,
                "recipients": ids,
            },
            timeout=600,
        )
        assert answer.status_code == 201, answer.text
        treated = None
        while True:
            if treated is None and blocking_client(stack.mongo_url)[db]["campaigns"].find_one(
                {"_id": answer.json()["campaign_id"], "status": "active"}
            ):
                treated = messages.count_documents({"group": "treated"})
            if treated is not None and messages.count_documents({"state": "sent"}) >= treated:
                break
            time.sleep(0.5)
        rate = treated / (time.perf_counter() - started)
        baseline = plain_loop(stack.mail_server().port, treated)
        # Shown at once: the audience below takes long at this size, and its answer must not
        # cost the send's.
        show(
            f"Engagement: a campaign to {RECIPIENTS:,} recipients ({treated:,} treated) to the local SMTP server",
            [
                Row(
                    "engagement",
                    "enrolled, rendered, sent and recorded",
                    rate,
                    "msg/s",
                    "plain loop of pre-rendered messages",
                    baseline,
                )
            ],
        )
        resolved, plain = resolve_audience(stack, engagement, profiles)
        show(
            f"Engagement: a saved audience of {RECIPIENTS:,} profiles",
            [
                Row(
                    "engagement",
                    f"saved audience of {RECIPIENTS:,} profiles resolved",
                    resolved,
                    "s",
                    "plain indexed read of the same ids",
                    plain,
                    higher_is_better=False,
                )
            ],
        )
    finally:
        engagement.stop()
        profiles.stop()
        stack.stop()


if __name__ == "__main__":
    main()
