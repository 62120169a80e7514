"""Wiring: settings, database, outbox relay, SLA watcher and HTTP for the complaints service."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.common.clock import clock_from
from services.common.http import create_app as create_http_app
from services.common.runtime import ServiceRuntime
from services.common.settings import Settings, get_settings

from . import api, store
from .service import ComplaintService, load_policy


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    runtime = ServiceRuntime("complaints", settings)
    policy = load_policy(settings.sla_policy_file)  # a bad policy file stops the start, loudly

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await runtime.start(store.INDEXES)
        profiles_db = runtime.mongo.client[settings.db_name("profiles")]
        service = ComplaintService(
            store.ComplaintStore(runtime.mongo.db, profiles_db),
            runtime.writes,
            clock_from(settings.clock_file),
            policy,
        )
        app.state.complaints = service
        runtime.background("sla-watcher", lambda stop: service.run_watcher(stop, settings.sla_watch_seconds))
        yield
        await runtime.stop()

    return create_http_app(
        service="complaints",
        title="CRM complaints and satisfaction",
        settings=settings,
        routers=[api.router],
        lifespan=lifespan,
        ready_checks=runtime.ready_checks(),
        description="Complaints against SLAs with escalation, and satisfaction surveys (CSAT, NPS).",
    )
