"""A private platform: the real embedded broker and database on free ports, and the services as
real processes over real HTTP against them. The test harness, the benchmarks and
`crm model evaluate` start their own copies with it."""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.common.auth import ROLES, new_key, write_keys_file
from services.common.kafka import ensure_topics
from services.common.settings import Settings
from services.stack.embedded import Child, broker_child, free_port, mongo_child, service_child, smtp_child

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    """A broker and a database of its own, each a real server process."""

    workdir: Path
    broker: Child
    mongo: Child
    keys: dict[str, str]
    keys_file: Path
    smtp: Child | None = None

    @property
    def maildir(self) -> Path:
        return self.workdir / "mail"

    def mail_server(self) -> Child:
        """The local SMTP server (started on first use), keeping what it gets in `maildir`."""
        if self.smtp is None:
            self.smtp = smtp_child(free_port(), self.maildir, self.workdir / "logs")
        if not self.smtp.alive:
            self.smtp.start()
            self.smtp.wait_ready(30)
        return self.smtp

    def mail_env(self) -> dict[str, str]:
        """What engagement needs to send through the local SMTP server and list its mailbox."""
        server = self.mail_server()
        return {
            "CRM_SMTP_PORT": str(server.port),
            "CRM_MAILBOX_DIR": str(self.maildir),
            "CRM_ENGAGEMENT_API_KEY": self.keys["agent"],
        }

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
        if self.smtp is not None:
            self.smtp.stop()
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
    """A service running as its own process against a Stack."""

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
