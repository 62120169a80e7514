"""The platform under test: `crm up`'s supervised launcher (services/stack/launcher.py) on
free ports, with handles on what the faults and the checks need (children's pids, the
database, the topics)."""

from __future__ import annotations

import os
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from rich.console import Console

from services.common import topics
from services.common.mongo import blocking_client
from services.common.settings import SERVICE_NAMES, Settings
from services.stack.embedded import Child, existing_services, free_port
from services.stack.launcher import KEYS_TEXT, Platform

# The services' timers, quick enough for a run of minutes: churn warnings need the population
# job (ABC thresholds, fitted models) and the review timer (silent customers re-scored).
QUICK_TIMERS = {
    "CRM_SCORING_CLOCK": "wall",
    "CRM_POPULATION_SECONDS": "10",
    "CRM_SCORING_REVIEW_SECONDS": "2",
    "CRM_OUTBOX_POLL_SECONDS": "0.5",
    "CRM_SLA_WATCH_SECONDS": "5",
}
DB_PREFIX = "crm_"


class ChaosPlatform:
    """Every part on a free port (never the default ones), supervised and restarted by the
    launcher exactly as `crm up` does (backoff 1, 2, 4 ... 30 s), its files under `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The launcher's children inherit this process's environment: the embedded stack (no
        # external addresses), each service on a free port, and the quick timers.
        for name in (
            "CRM_KAFKA_BOOTSTRAP",
            "CRM_MONGO_URL",
            *(f"CRM_{s.upper()}_URL" for s in SERVICE_NAMES),
        ):
            os.environ.pop(name, None)
        os.environ.update({f"CRM_{s.upper()}_PORT": str(free_port()) for s in SERVICE_NAMES})
        os.environ.update(QUICK_TIMERS)
        os.environ["CRM_DB_PREFIX"] = DB_PREFIX
        self.settings = Settings()
        self.launcher_log = open(self.data_dir / "launcher.log", "a")  # noqa: SIM115 - closed in down()
        self.platform = Platform(
            self.settings,
            self.data_dir,
            demo=False,
            broker_port=free_port(),
            mongo_port=free_port(),
            console=Console(file=self.launcher_log, width=140),
        )
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.keys: dict[str, str] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    def up(self) -> None:
        self.platform.up()
        keys_text = (self.data_dir / KEYS_TEXT).read_text()
        self.keys = dict(line.split("=", 1) for line in keys_text.split() if "=" in line)
        self._supervisor = threading.Thread(target=self.platform.supervise, args=(self._stop,), daemon=True)
        self._supervisor.start()

    def down(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        for child in self.children().values():  # a frozen child cannot stop politely
            with suppress(ProcessLookupError, TypeError):
                if child.alive:
                    os.killpg(child.pid, 18)  # SIGCONT
        self.platform.down()
        self.launcher_log.close()

    # --- the parts ---------------------------------------------------------------------------

    def children(self) -> dict[str, Child]:
        """broker, mongo and each service by name."""
        return {child.name: child for child in self.platform.children()}

    @property
    def bootstrap(self) -> str:
        return self.platform.bootstrap

    @property
    def mongo_url(self) -> str:
        return self.platform.mongo_url

    def url(self, service: str) -> str:
        return self.settings.url_of(service)

    def db_name(self, service: str) -> str:
        return self.settings.db_name(service)

    def headers(self, role: str = "agent") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def all_ready(self, timeout: float = 2.0) -> bool:
        """Every child alive and every service's /readyz green."""
        children = self.children()
        if not all(child.alive for child in children.values()):
            return False
        for name in existing_services():
            try:
                if httpx.get(f"{self.url(name)}/readyz", timeout=timeout).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
        return True

    def mongo(self, timeout_ms: int = 5000):
        """A blocking client with timeouts (a frozen database must not hang the checker)."""
        return blocking_client(
            self.mongo_url,
            serverSelectionTimeoutMS=timeout_ms,
            socketTimeoutMS=max(timeout_ms * 6, 30_000),
            connectTimeoutMS=timeout_ms,
            tz_aware=True,
        )

    def topic(self, logical: str) -> str:
        return topics.physical(logical, self.settings)

    def read_topic(self, logical: str, timeout: float = 30.0) -> list[Any]:
        """Every record the topic holds now, from the beginning (no consumer group)."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, request_timeout_ms=30_000
        )
        try:
            name = self.topic(logical)
            partitions = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
            consumer.assign(partitions)
            consumer.seek_to_beginning()
            ends = consumer.end_offsets(partitions)
            out: list[Any] = []
            deadline = threading.Event()
            timer = threading.Timer(timeout, deadline.set)
            timer.start()
            try:
                while not deadline.is_set() and any(consumer.position(tp) < ends[tp] for tp in partitions):
                    for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                        out.extend(batch)
            finally:
                timer.cancel()
            return out
        finally:
            consumer.close()

    def end_offsets(self) -> dict[str, int]:
        """Records each topic holds (its partitions' end offsets summed)."""
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        try:
            out = {}
            for logical in topics.ALL:
                name = self.topic(logical)
                partitions = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
                out[logical] = sum(consumer.end_offsets(partitions).values()) if partitions else 0
            return out
        finally:
            consumer.close()

    def consumer_lag(self) -> dict[str, int]:
        """Records not yet committed by each consumer group, summed over the partitions of every
        topic it has committed on (a partition it has not committed on counts from 0: after
        the broker came back empty, offsets start again)."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        try:
            lag: dict[str, int] = {}
            for group in admin.list_groups():
                group_id = group["group_id"] if isinstance(group, dict) else group[0]
                committed = admin.list_group_offsets({group_id: None}).get(group_id) or {}
                at = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
                partitions = [
                    TopicPartition(topic, p)
                    for topic in {tp.topic for tp in at}
                    for p in consumer.partitions_for_topic(topic) or ()
                ]
                ends = consumer.end_offsets(partitions) if partitions else {}
                lag[group_id] = sum(max(0, end - at.get(tp, 0)) for tp, end in ends.items())
            return lag
        finally:
            consumer.close()
            admin.close()
