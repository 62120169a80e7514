"""Wiring: the orders service's use cases on its database, outbox and HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from services.common.clock import clock_from
from services.common.erasure import follow_erasures
from services.common.peers import Peers
from services.common.runtime import ServiceRuntime, service_app
from services.common.settings import Settings, get_settings

from . import api, store
from .service import OrderService


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    def wire(runtime: ServiceRuntime, app: FastAPI) -> None:
        peers = Peers(settings)
        runtime.on_stop(peers.close)
        app.state.orders = orders = OrderService(
            store.OrderStore(runtime.mongo.db), runtime.writes, clock_from(settings.clock_file), peers
        )
        runtime.background("sales-rebuild", lambda stop: orders.rebuild_sales())
        # Orders hold amounts and items, nothing personal: erasure forgets the stored answers.
        runtime.background(
            "erasure", lambda stop: follow_erasures(settings, "orders", runtime.mongo.db, None, stop)
        )

    return service_app(
        service="orders",
        title="CRM orders",
        settings=settings,
        indexes=store.INDEXES,
        routers=[api.router],
        wire=wire,
        body_overrides={"/orders/import": (api.NDJSON_TYPES, settings.max_import_bytes)},
        description="Orders and their lifecycle; every change is published to crm.orders.v1.",
    )
