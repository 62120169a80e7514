"""Wiring: the loyalty use cases, the event consumer and the expiry job on their database,
outbox and HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from services.common.clock import clock_from
from services.common.erasure import follow_erasures
from services.common.runtime import ServiceRuntime, service_app
from services.common.settings import Settings, get_settings

from . import api, store
from .service import LoyaltyService, load_programme


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    programme = load_programme(settings.loyalty_programme_file)  # a bad file stops the start, loudly

    def wire(runtime: ServiceRuntime, app: FastAPI) -> None:
        service = LoyaltyService(
            store.LoyaltyStore(runtime.mongo.db, programme),
            runtime.writes,
            clock_from(settings.clock_file),
            programme,
        )
        app.state.loyalty = service
        runtime.background("consumer", lambda stop: service.consume(settings, stop))
        runtime.background(
            "erasure",
            lambda stop: follow_erasures(settings, "loyalty", runtime.mongo.db, service.forget, stop),
        )
        runtime.background("sweeper", lambda stop: service.run_sweeper(stop, settings.loyalty_expiry_seconds))

    return service_app(
        service="loyalty",
        title="CRM loyalty",
        settings=settings,
        indexes=store.INDEXES,
        routers=[api.router],
        wire=wire,
        description="Points for spending and referrals, tiers by trailing spend, expiry and redemption.",
    )
