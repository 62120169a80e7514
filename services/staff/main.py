"""Wiring: the staff directory's use cases on its database, outbox and HTTP; this service checks
the keys it issued against its own store (no round trip to itself, no cache: a revocation holds
here at once)."""

from __future__ import annotations

from fastapi import FastAPI

from services.common.clock import clock_from
from services.common.runtime import ServiceRuntime, service_app
from services.common.settings import Settings, get_settings

from . import api, store
from .service import StaffService


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    def wire(runtime: ServiceRuntime, app: FastAPI) -> None:
        service = StaffService(
            store.StaffStore(runtime.mongo.db),
            runtime.writes,
            clock_from(settings.clock_file),
            settings.staff_last_used_seconds,
        )
        app.state.staff = service
        app.state.api_keys.lookup = service.key_answer
        app.state.api_keys.cache_seconds = 0.0

    return service_app(
        service="staff",
        title="CRM staff",
        settings=settings,
        indexes=store.INDEXES,
        routers=[api.router],
        wire=wire,
        description="Users in teams with roles, and the API keys issued to them: the directory every "
        "service checks a user's key against.",
    )
