"""Wiring: the engagement use cases, the event consumer, erasure and the sender on their
database, outbox and HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from services.common.clock import clock_from
from services.common.erasure import follow_erasures
from services.common.peers import Peers
from services.common.runtime import ServiceRuntime, service_app
from services.common.settings import Settings, get_settings

from . import api, store
from .service import EngagementService


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    def wire(runtime: ServiceRuntime, app: FastAPI) -> None:
        peers = Peers(settings)
        runtime.on_stop(peers.close)
        service = EngagementService(
            store.EngagementStore(runtime.mongo.db),
            runtime.writes,
            clock_from(settings.clock_file),
            settings,
            peers,
        )
        app.state.engagement = service
        runtime.background("consumer", lambda stop: service.consume(settings, stop))
        runtime.background(
            "erasure",
            lambda stop: follow_erasures(settings, "engagement", runtime.mongo.db, service.forget, stop),
        )
        runtime.background("stock", lambda stop: service.ensure_stock())
        runtime.background("sender", service.run_sender)
        runtime.background("enroller", service.run_enroller)
        runtime.background("holidays", service.run_holidays)

    return service_app(
        service="engagement",
        title="CRM engagement",
        settings=settings,
        indexes=store.INDEXES,
        routers=[api.router],
        wire=wire,
        # RFC 8058: mail clients post the one-click unsubscribe as a form.
        body_overrides={"/unsubscribe": ({"application/x-www-form-urlencoded", "multipart/form-data"}, 4096)},
        description="Campaigns by email, SMS and push with consent, coupons, and uplift against a control group.",
    )
