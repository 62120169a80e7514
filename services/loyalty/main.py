"""Wiring: settings, database, outbox relay, the event consumer, the expiry job and HTTP."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.common.clock import clock_from
from services.common.http import create_app as create_http_app
from services.common.runtime import ServiceRuntime
from services.common.settings import Settings, get_settings

from . import api, store
from .service import LoyaltyService, load_programme


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    runtime = ServiceRuntime("loyalty", settings)
    programme = load_programme(settings.loyalty_programme_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await runtime.start(store.INDEXES)
        service = LoyaltyService(
            store.LoyaltyStore(runtime.mongo.db, programme),
            runtime.writes,
            clock_from(settings.clock_file),
            programme,
        )
        app.state.loyalty = service
        runtime.background("consumer", lambda stop: service.consume(settings, stop))
        runtime.background("sweeper", lambda stop: service.run_sweeper(stop, settings.loyalty_expiry_seconds))
        yield
        await runtime.stop()

    return create_http_app(
        service="loyalty",
        title="CRM loyalty",
        settings=settings,
        routers=[api.router],
        lifespan=lifespan,
        ready_checks=runtime.ready_checks(),
        description="Points for spending and referrals, tiers by trailing spend, expiry and redemption.",
    )
