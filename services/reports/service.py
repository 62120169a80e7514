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
from .store import ReadModelReader, ReportsStore

log = structlog.get_logger(__name__)
BUILD_SECONDS = Histogram(
    "crm_reports_build_seconds", "Time to rebuild the reports' snapshot.", buckets=LATENCY_BUCKETS
)
SNAPSHOT_AGE = Gauge("crm_reports_snapshot_built_timestamp_seconds", "When the reports' snapshot was built.")


_builder_db: Database | None = None
_reader = ReadModelReader()  # the builder process's copy of the read model, kept between builds


def build_snapshot(mongo_url: str, db_name: str, now: int) -> Snapshot:
    """In the builder process: read what changed in the read model and aggregate it all."""
    global _builder_db
    if _builder_db is None:
        _builder_db = blocking_client(mongo_url, serverSelectionTimeoutMS=10_000)[db_name]
    started = time.perf_counter()
    model = _reader.read(_builder_db)
    read = time.perf_counter()
    snapshot = domain.build(**model, now=now)
    built = time.perf_counter()
    precompute(snapshot)
    snapshot.build_seconds = {
        "read": round(read - started, 2),
        "aggregate": round(built - read, 2),
        "common_answers": round(time.perf_counter() - built, 2),
    }
    return snapshot


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
                **snapshot.build_seconds,
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

    def _answer(self, report: str, p: Period, **params: Any) -> dict[str, Any]:
        snapshot = self.snapshot
        if snapshot is None:
            raise ReportsError("the reports are being built; try again in a moment", Kind.UNAVAILABLE)
        now = int(self.clock.now().timestamp())
        body = answer(snapshot, report, p, now, **params)
        freshness = snapshot.freshness()
        freshness["age_seconds"] = max(0, now - snapshot.built_at)
        freshness["scores_pulled_at"] = self.pulled_at.isoformat() if self.pulled_at else None
        freshness["computed_at"] = body.pop("computed_at")
        return {**body, "freshness": freshness}

    def composition(self, p: Period, by: tuple[str, ...]) -> dict[str, Any]:
        return self._answer("composition", p, by=by)

    def contribution(self, p: Period, top: int) -> dict[str, Any]:
        return self._answer("contribution", p, top=top)

    def retention(self, p: Period) -> dict[str, Any]:
        return self._answer("retention", p)

    def rfm(self, p: Period) -> dict[str, Any]:
        return self._answer("rfm", p)

    def movement(self, p: Period) -> dict[str, Any]:
        return self._answer("movement", p)

    def churn(self, p: Period) -> dict[str, Any]:
        return self._answer("churn", p)

    def products(self, p: Period, by: str | None) -> dict[str, Any]:
        return self._answer("products", p, by=by)

    def next_categories(self, p: Period, category: str) -> dict[str, Any]:
        return self._answer("next_categories", p, category=category)

    def satisfaction(self, p: Period) -> dict[str, Any]:
        return self._answer("satisfaction", p)

    def seasonality(self, p: Period, horizon: int) -> dict[str, Any]:
        return self._answer("seasonality", p, horizon=horizon)


def _movement(s: Snapshot, p: Period) -> dict[str, Any]:
    start = p.start if p.start is not None else int(s.moves["t"].min()) if len(s.moves["t"]) else s.as_of
    return domain.movement(s, start, p.end if p.end is not None else s.as_of)


KEPT_ANSWERS = 5000  # named periods' answers kept per snapshot (about 400 are computed with it)

# Each report: what computes it from a snapshot and a period with its own parameters.
REPORTS: dict[str, Callable[..., dict[str, Any]]] = {
    "composition": domain.composition,
    "contribution": domain.contribution,
    "retention": domain.retention,
    "rfm": domain.rfm_grid,
    "movement": _movement,
    "churn": domain.churn,
    "products": domain.products,
    "next_categories": domain.next_categories,
    "satisfaction": domain.satisfaction,
    "seasonality": domain.seasonality,
}


def answer(s: Snapshot, report: str, p: Period, now: int, **params: Any) -> dict[str, Any]:
    """The report over the period, with the period it covers and when it was computed. A
    named period's answer is kept with the snapshot (most were computed when it was built);
    any other is computed now."""
    key = (report, p.name, *sorted(params.items()))
    kept = s.answers.get(key) if p.name is not None else None
    if kept is not None:
        return dict(kept)
    bounds = domain.resolve(p, s.as_of)
    body = {**REPORTS[report](s, bounds, **params), "period": bounds.shown(), "computed_at": domain.iso(now)}
    if p.name is not None and len(s.answers) < KEPT_ANSWERS:
        s.answers[key] = body
        return dict(body)
    return body


def common_questions(s: Snapshot) -> list[tuple[str, dict[str, Any]]]:
    """The reports with the parameters asked for most, answered for every named period when
    the snapshot is built: composition and products by each single dimension, every
    category's next categories, and each other report with its defaults."""
    asked: list[tuple[str, dict[str, Any]]] = [("composition", {"by": (d,)}) for d in domain.DIMENSIONS]
    asked += [("products", {"by": by}) for by in (None, *domain.DIMENSIONS)]
    asked += [("next_categories", {"category": c}) for c in s.categories]
    asked += [
        ("contribution", {"top": domain.TOP_DEFAULT}),
        ("retention", {}),
        ("rfm", {}),
        ("movement", {}),
        ("churn", {}),
        ("satisfaction", {}),
        ("seasonality", {"horizon": domain.HORIZON_DEFAULT}),
    ]
    return asked


def precompute(s: Snapshot) -> None:
    for name in domain.PERIODS:
        for report, params in common_questions(s):
            answer(s, report, Period(name=name), s.as_of, **params)
