"""Wiring: the desk's use cases, the timeline consumer, erasure and the task watcher on their
database, outbox and HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from services.common.clock import clock_from
from services.common.erasure import follow_erasures
from services.common.peers import Peers
from services.common.runtime import ServiceRuntime, service_app
from services.common.settings import Settings, get_settings

from . import api, store
from .service import DeskService
from .staff import StaffDirectory


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    def wire(runtime: ServiceRuntime, app: FastAPI) -> None:
        peers = Peers(settings)
        runtime.on_stop(peers.close)
        service = DeskService(
            store.DeskStore(runtime.mongo.db),
            runtime.writes,
            clock_from(settings.clock_file),
            settings,
            StaffDirectory(peers, f"Bearer {settings.desk_api_key}" if settings.desk_api_key else None),
            peers,
        )
        app.state.desk = service
        runtime.background("consumer", lambda stop: service.consume(settings, stop))
        runtime.background(
            "erasure", lambda stop: follow_erasures(settings, "desk", runtime.mongo.db, service.forget, stop)
        )
        runtime.background("watcher", service.run_watcher)

    return service_app(
        service="desk",
        title="CRM desk",
        settings=settings,
        indexes=store.INDEXES,
        routers=[api.router],
        wire=wire,
        description="Notes and tasks on customers (callbacks, churn actions) with reminders and overdue "
        "lists, one timeline per customer from every service's events, and service reports.",
    )
