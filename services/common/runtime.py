"""What every service process has: its database, its outbox relay, background tasks that
stop cleanly, readiness checks, and the HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI

from . import logs, outbox, writes
from .kafka import broker_reachable
from .mongo import Mongo, ensure_indexes
from .outbox import Outbox
from .settings import Settings
from .writes import Writes

log = structlog.get_logger(__name__)


class ServiceRuntime:
    def __init__(self, service: str, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.mongo: Mongo
        self.outbox: Outbox
        self.writes: Writes

    async def start(self, indexes: dict[str, Iterable[Any]]) -> None:
        self.stop_event = asyncio.Event()
        self.mongo = await Mongo.open(self.settings, self.service)
        await ensure_indexes(self.mongo.db, {**outbox.INDEXES, **writes.INDEXES, **indexes})
        self.outbox = Outbox(self.mongo, self.settings, self.service)
        self.writes = Writes(self.mongo, self.outbox, self.settings.idempotency_ttl_hours)
        self.background("outbox-relay", self.outbox.run)

    def background(self, name: str, run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        """Run `run(stop_event)` until shutdown; a crash is logged and the task restarted."""

        async def supervised() -> None:
            while not self.stop_event.is_set():
                try:
                    await run(self.stop_event)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("background task crashed; restarting", task=name)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop_event.wait(), 2.0)

        self._tasks.append(asyncio.create_task(supervised(), name=name))

    def on_stop(self, close: Callable[[], Awaitable[None]]) -> None:
        """Run `close()` at shutdown, after the background tasks have ended."""
        self._closers.append(close)

    async def stop(self, grace: float = 10.0) -> None:
        self.stop_event.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()
        self._closers.clear()
        self.mongo.close()

    def ready_checks(self) -> dict[str, Callable[[], Awaitable[bool]]]:
        async def database() -> bool:
            return await self.mongo.ping()

        async def broker() -> bool:
            return await asyncio.to_thread(broker_reachable, self.settings)

        return {"database": database, "broker": broker}


def serve(app: FastAPI, settings: Settings, service: str) -> None:
    logs.configure(service, settings.log_level, settings.log_json)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port_of(service),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


def service_app(
    *,
    service: str,
    title: str,
    description: str,
    settings: Settings,
    indexes: dict[str, Iterable[Any]],
    routers: list,
    wire: Callable[[ServiceRuntime, FastAPI], None],
    body_overrides: dict[str, tuple[set[str], int]] | None = None,
) -> FastAPI:
    """A service's FastAPI app: on start, its database, indexes and outbox relay, then
    `wire(runtime, app)` puts the use cases on app.state and starts background tasks."""
    from .http import create_app

    runtime = ServiceRuntime(service, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await runtime.start(indexes)
        wire(runtime, app)
        yield
        await runtime.stop()

    return create_app(
        service=service,
        title=title,
        settings=settings,
        routers=routers,
        lifespan=lifespan,
        ready_checks=runtime.ready_checks(),
        body_overrides=body_overrides,
        description=description,
    )
