"""The reports' use cases: keep the read model current from the events, pull the scores the
events do not carry from the profiles API, rebuild the snapshot off the request path, and
answer each report from the snapshot (one slice of in-memory arrays, no database read)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import Gauge, Histogram
from pymongo.database import Database

from services.common import kafka
from services.common.clock import Clock
from services.common.errors import Kind
from services.common.metrics import LATENCY_BUCKETS
from services.common.mongo import blocking_client
from services.common.peers import Peers, Unavailable
from services.common.settings import Settings

from . import domain
from .domain import Period, ReportsError, Snapshot
from .events import CONSUMED, GROUP
from .store import ReportsStore, read_model

log = structlog.get_logger(__name__)
BUILD_SECONDS = Histogram(
    "crm_reports_build_seconds", "Time to rebuild the reports' snapshot.", buckets=LATENCY_BUCKETS
)
SNAPSHOT_AGE = Gauge("crm_reports_snapshot_built_timestamp_seconds", "When the reports' snapshot was built.")


_builder_db: Database | None = None


def build_snapshot(mongo_url: str, db_name: str, now: int) -> Snapshot:
    """In the builder process: read the read model and aggregate it."""
    global _builder_db
    if _builder_db is None:
        _builder_db = blocking_client(mongo_url, serverSelectionTimeoutMS=10_000)[db_name]
    return domain.build(**read_model(_builder_db), now=now)


def _builder_pool() -> ProcessPoolExecutor:
    # spawn, not fork: the service process runs threads (Kafka clients) a fork would copy
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


class ReportsService:
    def __init__(
        self,
        store: ReportsStore,
        clock: Clock,
        peers: Peers | None,
        api_key: str | None,
        builder: tuple[str, str],
    ) -> None:
        """builder: the database URL and name the builder process reads."""
        self.store = store
        self.builder = builder
        self._pool = _builder_pool()
        self._erased_during_build: set[str] = set()
        self.clock = clock
        self.peers = peers
        self.authorization = f"Bearer {api_key}" if api_key else None
        self.snapshot: Snapshot | None = None
        self.pulled_at: datetime | None = None
        self._building = asyncio.Lock()

    # --- keeping current ------------------------------------------------------------------------

    async def consume(self, settings: Settings, stop: asyncio.Event) -> None:
        await kafka.consume(settings, GROUP, CONSUMED.topics, CONSUMED.one_by_one(self), stop)

    async def forget(self, customer_id: str) -> None:
        await self.store.forget(customer_id)
        self._erased_during_build.add(customer_id)  # a build already reading keeps them out too
        if self.snapshot is not None:
            domain.erase(self.snapshot, customer_id)  # no report lists the person from now on

    async def pull(self) -> bool:
        """Every profile's scores and the churn worklist, from the profiles API; False (and
        the last pull kept) when it does not answer."""
        if self.peers is None or self.authorization is None:
            return False  # no key to read the profiles API with: the stored scores stand
        try:
            rows = await self.peers.every_page("profiles", "/customers", self.authorization, sort="spend")
            warnings = await self.peers.every_page("profiles", "/churn-warnings", self.authorization)
        except Unavailable as exc:
            log.warning("profiles unavailable; reports keep the last scores", error=str(exc))
            return False
        await self.store.replace_scores(rows)
        await self.store.replace_warnings(warnings)
        self.pulled_at = self.clock.now()
        return True

    async def refresh(self, pull: bool = True) -> Snapshot:
        async with self._building:
            started = time.perf_counter()
            if pull:
                await self.pull()
            self._erased_during_build = set()
            now = int(self.clock.now().timestamp())
            loop = asyncio.get_running_loop()
            try:
                snapshot = await loop.run_in_executor(self._pool, build_snapshot, *self.builder, now)
            except BrokenProcessPool:
                self._pool = _builder_pool()  # the builder died (out of memory?): a new one next time
                raise
            for customer_id in self._erased_during_build:
                domain.erase(snapshot, customer_id)
            self.snapshot = snapshot
            BUILD_SECONDS.observe(time.perf_counter() - started)
            SNAPSHOT_AGE.set(now)
            log.info(
                "reports snapshot built",
                customers=snapshot.size,
                orders=len(snapshot.order_t),
                seconds=round(time.perf_counter() - started, 2),
            )
            return snapshot

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run_refresh(self, stop: asyncio.Event, every: float) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception:
                log.exception("reports refresh failed; the last snapshot stays")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    # --- answering ------------------------------------------------------------------------------

    def _answer(self, compute: Callable[[Snapshot], dict[str, Any]]) -> dict[str, Any]:
        snapshot = self.snapshot
        if snapshot is None:
            raise ReportsError("the reports are being built; try again in a moment", Kind.UNAVAILABLE)
        freshness = snapshot.freshness()
        freshness["age_seconds"] = max(0, int(self.clock.now().timestamp()) - snapshot.built_at)
        freshness["scores_pulled_at"] = self.pulled_at.isoformat() if self.pulled_at else None
        return {**compute(snapshot), "freshness": freshness}

    def composition(self, p: Period, by: tuple[str, ...]) -> dict[str, Any]:
        return self._answer(lambda s: domain.composition(s, p, by))

    def contribution(self, p: Period, top: int) -> dict[str, Any]:
        return self._answer(lambda s: domain.contribution(s, p, top))

    def retention(self, p: Period) -> dict[str, Any]:
        return self._answer(lambda s: domain.retention(s, p))

    def rfm(self, p: Period) -> dict[str, Any]:
        return self._answer(lambda s: domain.rfm_grid(s, p))

    def movement(self, p: Period) -> dict[str, Any]:
        def compute(s: Snapshot) -> dict[str, Any]:
            start = (
                p.start if p.start is not None else int(s.moves["t"].min()) if len(s.moves["t"]) else s.as_of
            )
            end = p.end if p.end is not None else s.as_of
            return domain.movement(s, start, end)

        return self._answer(compute)

    def churn(self, p: Period) -> dict[str, Any]:
        return self._answer(lambda s: domain.churn(s, p))

    def products(self, p: Period, by: str | None) -> dict[str, Any]:
        return self._answer(lambda s: domain.products(s, p, by))

    def next_categories(self, p: Period, category: str) -> dict[str, Any]:
        return self._answer(lambda s: domain.next_categories(s, p, category))

    def satisfaction(self, p: Period) -> dict[str, Any]:
        return self._answer(lambda s: domain.satisfaction(s, p))

    def seasonality(self, p: Period, horizon: int) -> dict[str, Any]:
        return self._answer(lambda s: domain.seasonality(s, p, horizon))
