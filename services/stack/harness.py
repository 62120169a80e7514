"""Harness for tests and benchmarks: a private platform (services/stack/platform.py: the real
embedded broker and database on free ports, services as real processes over real HTTP), the
whole platform with the tests' quick timers, and a reader that collects what a topic holds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from services.stack.embedded import free_port
from services.stack.platform import ROOT, Service, Stack, start_service, start_stack

__all__ = [
    "PLATFORM",
    "ROOT",
    "Service",
    "Stack",
    "TopicReader",
    "start_console",
    "start_desk",
    "start_platform",
    "start_reports",
    "start_service",
    "start_stack",
    "stop_services",
    "unique_id",
    "until",
]


class TopicReader:
    """Reads a topic from the beginning (no consumer group) and keeps what matches."""

    def __init__(self, stack: Stack, topic: str) -> None:
        self.topic = topic
        self.consumer = KafkaConsumer(
            bootstrap_servers=stack.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            consumer_timeout_ms=200,
        )
        partitions = self.consumer.partitions_for_topic(topic) or set()
        self.consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        self.consumer.seek_to_beginning()

    def collect(
        self, where: Callable[[dict[str, Any]], bool], count: int, timeout: float = 20.0, settle: float = 1.0
    ) -> list[dict[str, Any]]:
        """Events matching `where`, once `count` arrived and nothing more came for `settle`
        seconds (so a duplicate would be seen)."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            polled = self.consumer.poll(timeout_ms=200, max_records=5000)
            fresh = [orjson.loads(r.value) for batch in polled.values() for r in batch]
            matched = [e for e in fresh if _safe(where, e)]
            found.extend(matched)
            if len(found) >= count:
                if matched or quiet_since is None:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= settle:
                    break
        return found

    def records(self, timeout: float = 5.0) -> list[Any]:
        """Every raw record currently readable (for dead-letter checks)."""
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            polled = self.consumer.poll(timeout_ms=300, max_records=5000)
            batch = [r for b in polled.values() for r in b]
            if not batch and out:
                break
            out.extend(batch)
        return out

    def close(self) -> None:
        self.consumer.close()


def _safe(where: Callable[[dict[str, Any]], bool], event: Any) -> bool:
    try:
        return bool(where(event))
    except Exception:  # noqa: BLE001 - a record of another shape does not match
        return False


def until(fetch: Callable[[], Any], condition: Callable[[Any], bool], timeout: float = 40.0) -> Any:
    """What `fetch` answers once `condition` holds for it; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if condition(value):
            return value
        assert time.monotonic() < deadline, f"never happened; last: {str(value)[:800]}"
        time.sleep(0.25)


def unique_id(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def once() -> dict[str, str]:
    """A fresh Idempotency-Key header: money routes need one (a retry would move money twice)."""
    return {"Idempotency-Key": uuid.uuid4().hex}


# The staff directory first: every service checks a staff user's key with it.
PLATFORM = ("staff", "orders", "complaints", "loyalty", "scoring", "profiles", "engagement")


def start_console(stack: Stack, platform: dict[str, Service], **env: str) -> Service:
    """The console in front of a running platform, on the platform's database prefix."""
    peers = {f"CRM_{name.upper()}_URL": service.url for name, service in platform.items()}
    db_prefix = platform["profiles"].env["CRM_DB_PREFIX"]
    return start_service(stack, "console", db_prefix=db_prefix, **{**peers, **env})


def start_reports(stack: Stack, platform: dict[str, Service], **env: str) -> Service:
    """The reports service beside a running platform, on its database prefix and topics, with
    a viewer's key for the profiles API (quick refreshes unless `env` says otherwise)."""
    peers = {f"CRM_{name.upper()}_URL": service.url for name, service in platform.items()}
    shared = {
        k: v for k, v in platform["profiles"].env.items() if k in ("CRM_TOPIC_PREFIX", "CRM_CLOCK_FILE")
    }
    return start_service(
        stack,
        "reports",
        db_prefix=platform["profiles"].env["CRM_DB_PREFIX"],
        **{
            **peers,
            **shared,
            "CRM_REPORTS_API_KEY": stack.keys["viewer"],
            "CRM_REPORTS_REFRESH_SECONDS": "1",
            **env,
        },
    )


def start_desk(stack: Stack, platform: dict[str, Service], **env: str) -> Service:
    """The desk beside a running platform, on its database prefix, topics and clock, with the
    tests' quick task watcher; it asks the platform's staff directory about assignees and emails
    task reminders through the platform's engagement service with its own (agent) key."""
    peers = {f"CRM_{name.upper()}_URL": service.url for name, service in platform.items()}
    shared = {
        k: v for k, v in platform["profiles"].env.items() if k in ("CRM_TOPIC_PREFIX", "CRM_CLOCK_FILE")
    }
    return start_service(
        stack,
        "desk",
        db_prefix=platform["profiles"].env["CRM_DB_PREFIX"],
        **{
            **peers,
            **shared,
            "CRM_DESK_WATCH_SECONDS": "0.5",
            "CRM_DESK_API_KEY": stack.keys["agent"],
            **env,
        },
    )


def stop_services(services: Iterable[Service]) -> None:
    """Stop services side by side: each shutdown (the scorer's above all) waits on its own."""
    services = list(services)
    if services:
        with ThreadPoolExecutor(len(services)) as pool:
            list(pool.map(Service.stop, services))


def start_platform(stack: Stack, data_dir: Path, **env: str) -> dict[str, Service]:
    """Every service on one database prefix, each told where the others answer; `env` goes
    to all of them (topic prefix, clock file) and overrides the tests' quick timers."""
    db_prefix = f"t{uuid.uuid4().hex[:8]}_"
    # Ports are chosen first so each service knows every other, also those started after it
    # (complaints asks profiles for VIP status).
    ports = {name: free_port() for name in PLATFORM}

    def start(name: str) -> Service:
        extra = {
            f"CRM_{peer.upper()}_URL": f"http://127.0.0.1:{port}"
            for peer, port in ports.items()
            if peer != name
        }
        if name == "scoring":
            extra.update(
                CRM_SCORING_CLOCK="wall",
                CRM_SCORING_REVIEW_SECONDS="0.5",
                CRM_POPULATION_SECONDS="2",
                CRM_DATA_DIR=str(data_dir),
            )
        if name == "complaints":
            extra.update(CRM_SLA_WATCH_SECONDS="0.5", CRM_COMPLAINTS_API_KEY=stack.keys["admin"])
        if name == "staff":
            extra["CRM_STAFF_LAST_USED_SECONDS"] = "1"
        if name == "engagement":
            extra.update(stack.mail_env(), CRM_ENGAGEMENT_SEND_SECONDS="0.2")
        return start_service(stack, name, db_prefix=db_prefix, port=ports[name], **{**extra, **env})

    # Started side by side: each service waits for its interpreter and its connections, not
    # for the others (readiness needs only the broker and the database).
    with ThreadPoolExecutor(len(PLATFORM)) as pool:
        starting = {name: pool.submit(start, name) for name in PLATFORM}
        wait(starting.values())
    started = {name: f.result() for name, f in starting.items() if f.exception() is None}
    failed = next((f.exception() for f in starting.values() if f.exception() is not None), None)
    if failed is not None:
        stop_services(started.values())
        raise failed
    return started
