"""Wiring: the console's pages on its sessions database, the API keys and the other services."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.clock import clock_from
from services.common.http import create_app as http_app
from services.common.mongo import Mongo, ensure_indexes
from services.common.peers import Peers
from services.common.settings import Settings, get_settings
from services.common.vocabulary import ChurnAction, ChurnLevel, LifecycleStage, LoyaltyTier, Segment

from . import api, store
from .service import ConsoleService

HERE = Path(__file__).parent
FORM = "application/x-www-form-urlencoded"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    mongo: dict[str, Mongo] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        mongo["db"] = await Mongo.open(settings, "console")
        await ensure_indexes(mongo["db"].db, store.INDEXES)
        peers = Peers(settings, timeout=settings.console_peer_timeout_seconds)
        sessions = store.SessionStore(mongo["db"].db, timedelta(minutes=settings.console_session_minutes))
        app.state.console = ConsoleService(
            peers, sessions, app.state.api_keys, clock_from(settings.clock_file)
        )
        yield
        await peers.close()
        mongo["db"].close()

    async def database() -> bool:
        return "db" in mongo and await mongo["db"].ping()

    app = http_app(
        service="console",
        title="CRM console",
        settings=settings,
        routers=[api.router],
        lifespan=lifespan,
        # The console needs only its sessions database; a peer that is down is shown on the page.
        ready_checks={"database": database},
        body_media_types={FORM},
        description="The web pages staff work in: customers, the 360 view, the churn worklist, "
        "the complaints queue and dashboards.",
    )
    # Autoescape on for every template: no text from a person or a service is read as HTML.
    templates = Jinja2Templates(
        env=jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    )
    # The pages list the shared words (filters, the funnel, the actions) from the one vocabulary.
    templates.env.globals.update(
        segments=list(reversed(Segment)),  # best first, as the dashboard's map reads
        lifecycle_stages=list(LifecycleStage),
        loyalty_tiers=list(LoyaltyTier),
        churn_levels=list(ChurnLevel),
        churn_actions=list(ChurnAction),
    )
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(api.SignInNeeded)
    async def sign_in_first(request: Request, exc: api.SignInNeeded) -> RedirectResponse:
        target = "/signin?" + api.urlencode({"next": exc.back, "expired": "true"})
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(api.SESSION_COOKIE, path="/")
        return response

    @app.exception_handler(api.Forbidden)
    async def forbidden(request: Request, exc: api.Forbidden) -> HTMLResponse:
        return api.render(request, "error.html", {"status": 403}, status_code=403)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        return api.render(request, "error.html", {"status": exc.status_code}, status_code=exc.status_code)

    return app
