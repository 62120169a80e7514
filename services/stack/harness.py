"""Harness for tests and benchmarks: the real embedded broker and database on free ports, services as real
processes over real HTTP, and a reader that collects what a topic holds."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from kafka import KafkaConsumer, TopicPartition

from services.common.auth import ROLES, new_key, write_keys_file
from services.common.kafka import ensure_topics
from services.common.settings import Settings
from services.stack.embedded import Child, broker_child, free_port, mongo_child, service_child

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    """A broker and a database for the tests, each a real server process."""

    workdir: Path
    broker: Child
    mongo: Child
    keys: dict[str, str]
    keys_file: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker.port}"

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo.port}"

    def settings(self, **overrides: Any) -> Settings:
        return Settings(
            kafka_bootstrap=self.bootstrap,
            mongo_url=self.mongo_url,
            api_keys_file=self.keys_file,
            **overrides,
        )

    def start_broker(self) -> None:
        """Start the broker again after `broker.stop()`. Memory storage: it comes back empty,
        so the topics are created again."""
        self.broker.start()
        self.broker.wait_ready(30)
        ensure_topics(self.settings())

    def headers(self, role: str = "admin", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}", **extra}

    def stop(self) -> None:
        self.mongo.stop()
        self.broker.stop()


def start_stack(workdir: Path | None = None, database_dir: Path | None = None) -> Stack:
    """database_dir: where the database keeps its files (default `workdir/mongo`)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="crm-test-"))
    logs = workdir / "logs"
    broker = broker_child(free_port(), logs)
    mongo = mongo_child(free_port(), database_dir or workdir / "mongo", logs)
    broker.start()
    mongo.start()
    broker.wait_ready(30)
    mongo.wait_ready(30)
    keys = {role: new_key(role) for role in ROLES}
    keys_file = workdir / "api-keys.hashed"
    write_keys_file(keys_file, keys)
    stack = Stack(workdir, broker, mongo, keys, keys_file)
    ensure_topics(stack.settings())
    return stack


@dataclass
class Service:
    """A service running as its own process against the test stack."""

    name: str
    child: Child
    env: dict[str, str]
    stack: Stack
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.child.port}"

    def request(self, method: str, path: str, role: str | None = "admin", **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if role is not None:
            headers.setdefault("Authorization", f"Bearer {self.stack.keys[role]}")
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def restart(self) -> None:
        self.child.stop()
        self.child.start()
        self.child.wait_ready(60)

    def stop(self) -> None:
        self.client.close()
        self.child.stop()


def start_service(
    stack: Stack, name: str, *, db_prefix: str | None = None, port: int | None = None, **env: str
) -> Service:
    db_prefix = db_prefix or f"t{uuid.uuid4().hex[:8]}_"
    port = port or free_port()
    full_env = {
        "CRM_KAFKA_BOOTSTRAP": stack.bootstrap,
        "CRM_MONGO_URL": stack.mongo_url,
        "CRM_API_KEYS_FILE": str(stack.keys_file),
        "CRM_DB_PREFIX": db_prefix,
        f"CRM_{name.upper()}_PORT": str(port),
        "CRM_OUTBOX_POLL_SECONDS": "0.2",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    child = service_child(name, full_env, port, stack.workdir / "logs" / db_prefix)
    child.start()
    child.wait_ready(60)
    return Service(name, child, full_env, stack)


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


PLATFORM = ("orders", "complaints", "loyalty", "scoring", "profiles")


def start_console(stack: Stack, platform: dict[str, Service], **env: str) -> Service:
    """The console in front of a running platform, on the platform's database prefix."""
    peers = {f"CRM_{name.upper()}_URL": service.url for name, service in platform.items()}
    db_prefix = platform["profiles"].env["CRM_DB_PREFIX"]
    return start_service(stack, "console", db_prefix=db_prefix, **{**peers, **env})


def start_platform(stack: Stack, data_dir: Path, **env: str) -> dict[str, Service]:
    """Every service on one database prefix, each told where the others answer; `env` goes
    to all of them (topic prefix, clock file) and overrides the tests' quick timers."""
    db_prefix = f"t{uuid.uuid4().hex[:8]}_"
    # Ports are chosen first so each service knows every other, also those started after it
    # (complaints asks profiles for VIP status).
    ports = {name: free_port() for name in PLATFORM}
    started: dict[str, Service] = {}
    for name in PLATFORM:
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
            extra["CRM_SLA_WATCH_SECONDS"] = "0.5"
        started[name] = start_service(stack, name, db_prefix=db_prefix, port=ports[name], **{**extra, **env})
    return started
