"""Wiring: the profiles use cases on their database, outbox, the other services and HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from services.common.clock import clock_from
from services.common.peers import Peers
from services.common.runtime import ServiceRuntime, service_app
from services.common.settings import Settings, get_settings

from . import api, store
from .service import ProfilesService


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    def wire(runtime: ServiceRuntime, app: FastAPI) -> None:
        peers = Peers(settings)
        profiles = store.ProfilesStore(runtime.mongo.db)
        service = ProfilesService(profiles, runtime.writes, clock_from(settings.clock_file), peers)
        app.state.profiles = service
        runtime.background("epoch-seconds", lambda stop: profiles.add_epoch_seconds())
        runtime.background("signals", lambda stop: service.follow_signals(settings, stop))
        runtime.background("activity", lambda stop: service.follow_activity(settings, stop))
        runtime.on_stop(peers.close)

    return service_app(
        service="profiles",
        title="CRM customer profiles",
        settings=settings,
        indexes=store.INDEXES,
        routers=[api.router],
        wire=wire,
        description="Customers, the live profile and 360 view, search and segments, the churn-warning "
        "workflow, export and erasure.",
    )
