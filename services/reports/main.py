"""Wiring: the reports' read model kept current from the events, scores pulled from the
profiles API, and the snapshot rebuilt on a timer, behind HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from services.common.clock import clock_from
from services.common.erasure import follow_erasures
from services.common.peers import Peers
from services.common.runtime import ServiceRuntime, service_app
from services.common.settings import Settings, get_settings

from . import api, store
from .service import ReportsService


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    def wire(runtime: ServiceRuntime, app: FastAPI) -> None:
        # the pull pages through every profile: a longer timeout than an agent's request
        peers = Peers(settings, timeout=max(settings.peer_timeout_seconds, 30.0))
        runtime.on_stop(peers.close)
        service = ReportsService(
            store.ReportsStore(runtime.mongo.db),
            clock_from(settings.clock_file),
            peers,
            settings.reports_api_key,
            (settings.mongo_url, runtime.mongo.db.name),
        )

        async def close_builder() -> None:
            service.close()

        runtime.on_stop(close_builder)
        app.state.reports = service
        runtime.background("consumer", lambda stop: service.consume(settings, stop))
        runtime.background(
            "erasure",
            lambda stop: follow_erasures(settings, "reports", runtime.mongo.db, service.forget, stop),
        )
        runtime.background(
            "refresh", lambda stop: service.run_refresh(stop, settings.reports_refresh_seconds)
        )

    return service_app(
        service="reports",
        title="CRM reports",
        settings=settings,
        indexes=store.INDEXES,
        routers=[api.router],
        wire=wire,
        description="The managers' weekly questions: composition, contribution, retention, RFM, churn, "
        "products, satisfaction and seasonality, each over a chosen period, as JSON or CSV.",
    )
