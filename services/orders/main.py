"""Wiring: settings, database, outbox relay and HTTP for the orders service."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.common.clock import clock_from
from services.common.http import create_app as create_http_app
from services.common.runtime import ServiceRuntime
from services.common.settings import Settings, get_settings

from . import api, store
from .service import OrderService


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    runtime = ServiceRuntime("orders", settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await runtime.start(store.INDEXES)
        app.state.orders = OrderService(
            store.OrderStore(runtime.mongo.db), runtime.writes, clock_from(settings.clock_file)
        )
        yield
        await runtime.stop()

    return create_http_app(
        service="orders",
        title="CRM orders",
        settings=settings,
        routers=[api.router],
        lifespan=lifespan,
        ready_checks=runtime.ready_checks(),
        body_overrides={"/orders/import": (api.NDJSON_TYPES, settings.max_import_bytes)},
        description="Orders and their lifecycle; every change is published to crm.orders.v1.",
    )
