"""`crm up`: the whole platform on one machine, supervised, stopped in order."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.common.auth import ROLES, new_key, write_keys_file
from services.common.kafka import ensure_topics
from services.common.settings import Settings

from .embedded import Child, broker_child, existing_services, mongo_child, service_child, smtp_child

KEYS_TEXT = "api-keys.txt"
KEYS_HASHED = "api-keys.hashed"


def ensure_api_keys(data_dir: Path) -> Path:
    """One key per role, readable in DIR/api-keys.txt (role=key); the services read only the
    hashes. Existing keys are kept across runs."""
    plain = data_dir / KEYS_TEXT
    hashed = data_dir / KEYS_HASHED
    if plain.exists():
        keys = dict(line.split("=", 1) for line in plain.read_text().split() if "=" in line)
    else:
        keys = {role: new_key(role) for role in ROLES}
        data_dir.mkdir(parents=True, exist_ok=True)
        plain.write_text("".join(f"{role}={key}\n" for role, key in keys.items()))
        plain.chmod(0o600)
    write_keys_file(hashed, keys)
    return plain


class Platform:
    def __init__(
        self,
        settings: Settings,
        data_dir: Path,
        *,
        demo: bool,
        broker_port: int,
        mongo_port: int,
        console: Console | None = None,
        demo_rate: float = 5.0,
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.demo = demo
        self.demo_rate = demo_rate
        self.console = console or Console()
        self.embedded_broker = "CRM_KAFKA_BOOTSTRAP" not in os.environ
        self.embedded_mongo = "CRM_MONGO_URL" not in os.environ
        self.bootstrap = f"127.0.0.1:{broker_port}" if self.embedded_broker else settings.kafka_bootstrap
        self.mongo_url = f"mongodb://127.0.0.1:{mongo_port}" if self.embedded_mongo else settings.mongo_url
        self.broker = broker_child(broker_port, self.log_dir) if self.embedded_broker else None
        self.mongo = (
            mongo_child(mongo_port, self.data_dir / "mongo", self.log_dir) if self.embedded_mongo else None
        )
        # The local SMTP server keeps engagement's mail for people and tests to read, unless a
        # real relay is configured (CRM_SMTP_HOST).
        self.embedded_smtp = "CRM_SMTP_HOST" not in os.environ
        self.maildir = self.data_dir / "mail"
        self.smtp = smtp_child(settings.smtp_port, self.maildir, self.log_dir) if self.embedded_smtp else None
        self.services: list[Child] = []
        self.extras: list[Child] = []
        self._next_restart: dict[str, float] = {}

    @property
    def child_env(self) -> dict[str, str]:
        return {
            "CRM_KAFKA_BOOTSTRAP": self.bootstrap,
            "CRM_MONGO_URL": self.mongo_url,
            "CRM_API_KEYS_FILE": str(self.data_dir / KEYS_HASHED),
            "CRM_DATA_DIR": str(self.data_dir),
            "PYTHONUNBUFFERED": "1",
        }

    def children(self) -> list[Child]:
        infra = [c for c in (self.broker, self.mongo, self.smtp) if c is not None]
        return infra + self.services + self.extras

    def up(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        keys_file = ensure_api_keys(self.data_dir)
        for infra in (self.broker, self.mongo, self.smtp):
            if infra is not None:
                self.console.print(f"starting {infra.name} on port {infra.port}")
                infra.start()
        for infra in (self.broker, self.mongo, self.smtp):
            if infra is not None:
                infra.wait_ready(30)
        self._ensure_topics()
        keys = dict(line.split("=", 1) for line in keys_file.read_text().split() if "=" in line)
        for name in existing_services():
            port = self.settings.port_of(name)
            env = {**self.child_env, **(self._engagement_env(keys_file) if name == "engagement" else {})}
            if name == "reports":  # reads the profiles API off the request path, with a viewer's key
                env = {**env, "CRM_REPORTS_API_KEY": keys["viewer"]}
            if name == "complaints":  # pays compensation (loyalty adjustments: admin) and notifies
                env = {**env, "CRM_COMPLAINTS_API_KEY": keys["admin"]}
            if name == "desk":  # emails task reminders (engagement's notices: agent)
                env = {**env, "CRM_DESK_API_KEY": keys["agent"]}
            child = service_child(name, env, port, self.log_dir)
            self.services.append(child)
            child.start()
        for child in self.services:
            child.wait_ready(90)
            self.console.print(f"[green]ready[/] {child.name}  http://127.0.0.1:{child.port}")
        if self.demo:
            demo = Child(
                "demo",
                [sys.executable, "-m", "services.stack.demo", "--rate", str(self.demo_rate)],
                self.log_dir / "demo.log",
                env={**self.child_env, "CRM_DEMO_KEYS": str(keys_file)},
            )
            self.extras.append(demo)
            demo.start()
        self._summary(keys_file)

    def _engagement_env(self, keys_file: Path) -> dict[str, str]:
        """Engagement changes consent in profiles when a customer unsubscribes: with the agent
        key; on the embedded stack it sends to the local SMTP server and lists its mailbox."""
        keys = dict(line.split("=", 1) for line in keys_file.read_text().split() if "=" in line)
        env = {"CRM_ENGAGEMENT_API_KEY": keys["agent"]}
        if self.smtp is not None:
            env.update(CRM_SMTP_PORT=str(self.smtp.port), CRM_MAILBOX_DIR=str(self.maildir))
        return env

    def _ensure_topics(self) -> None:
        settings = self.settings.model_copy(update={"kafka_bootstrap": self.bootstrap})
        created = ensure_topics(settings)
        fresh = sum(1 for state in created.values() if state == "created")
        self.console.print(
            f"topics: {len(created)} ready ({fresh} created, {settings.topic_partitions} partitions each)"
        )

    def _summary(self, keys_file: Path) -> None:
        table = Table(title="CRM platform is up", show_lines=False)
        table.add_column("part")
        table.add_column("address")
        table.add_column("pid")
        if self.broker:
            table.add_row("Kafka (Tansu, embedded)", self.bootstrap, str(self.broker.pid))
        if self.mongo:
            table.add_row("MongoDB (nx-27017, embedded)", self.mongo_url, str(self.mongo.pid))
        if self.smtp:
            table.add_row("SMTP (local mailbox)", f"127.0.0.1:{self.smtp.port}", str(self.smtp.pid))
        for child in self.services:
            page = "" if child.name == "console" else "/docs"
            table.add_row(child.name, f"http://127.0.0.1:{child.port}{page}", str(child.pid))
        for child in self.extras:
            table.add_row(child.name, f"log: {child.log_path}", str(child.pid))
        self.console.print(table)
        self.console.print(f"API keys (one per role: {', '.join(ROLES)}): [bold]{keys_file}[/]")
        if any(child.name == "console" for child in self.services):
            self.console.print(
                f"Console: [bold]http://127.0.0.1:{self.settings.port_of('console')}[/]  sign in with a key "
                f"from {keys_file} (agent= to act on customers, viewer= to read, admin= also exports)"
            )
        if any(child.name == "staff" for child in self.services):
            self.console.print(
                f"Staff directory: [bold]http://127.0.0.1:{self.settings.port_of('staff')}/docs[/]  an admin issues "
                "each person their own key (POST /users/{id}/keys)"
            )
        if self.smtp and any(child.name == "engagement" for child in self.services):
            self.console.print(
                f"Mail sent by engagement: [bold]http://127.0.0.1:{self.settings.port_of('engagement')}/mailbox[/]"
                f" (any key), kept in {self.maildir}"
            )
        self.console.print(f"logs: {self.log_dir}")
        self.console.print("Ctrl-C stops everything.")  # a line of its own: a long path never wraps it

    def supervise(self, stop: threading.Event) -> None:
        """Restart a child that died, with backoff, after showing the tail of its log."""
        while not stop.wait(0.5):
            for child in self.children():
                if child.alive:
                    continue
                due = self._next_restart.get(child.name)
                now = time.monotonic()
                if due is None:
                    delay = min(2**child.restarts, 30)
                    self.console.print(
                        f"[red]{child.name} exited ({child.process.returncode}); restarting in "
                        f"{delay}s[/]. Last lines of {child.log_path}:\n{child.tail(15)}"
                    )
                    self._next_restart[child.name] = now + delay
                elif now >= due:
                    del self._next_restart[child.name]
                    child.restarts += 1
                    child.start()
                    if child is self.broker:
                        try:
                            child.wait_ready(30)
                            self._ensure_topics()
                        except Exception as exc:  # noqa: BLE001 - keep supervising
                            self.console.print(f"[red]broker restart: {exc}[/]")

    def down(self) -> None:
        """Stop in reverse dependency order: demo, services, database, broker."""
        for child in reversed(self.extras + self.services):
            child.stop()
        for child in (self.smtp, self.mongo, self.broker):
            if child is not None:
                child.stop()
        self.console.print("stopped; no process or port left behind.")


def run_up(
    settings: Settings, data_dir: Path, *, demo: bool, broker_port: int, mongo_port: int, demo_rate: float
) -> int:
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    platform = Platform(
        settings, data_dir, demo=demo, broker_port=broker_port, mongo_port=mongo_port, demo_rate=demo_rate
    )
    try:
        platform.up()
        platform.supervise(stop)
        return 0
    except Exception as exc:  # noqa: BLE001 - report, then clean up everything started
        platform.console.print(f"[red]could not start the platform: {exc}[/]")
        return 1
    finally:
        platform.down()
