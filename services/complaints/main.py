"""Wiring: the complaints use cases and SLA watcher on their database, outbox and HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from services.common.clock import clock_from
from services.common.erasure import follow_erasures
from services.common.peers import Peers
from services.common.runtime import ServiceRuntime, service_app
from services.common.settings import Settings, get_settings

from . import api, store
from .service import ComplaintService, load_policy, load_procedure


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    policy = load_policy(settings.sla_policy_file)  # a bad policy file stops the start, loudly
    procedure = load_procedure(settings.sla_policy_file)

    def wire(runtime: ServiceRuntime, app: FastAPI) -> None:
        # VIP targets come from the live profile, read through the profiles API; assignees and
        # supervisors from the staff directory; compensation is paid through orders, loyalty
        # and engagement, escalation notices sent through engagement.
        peers = Peers(settings)
        complaints = store.ComplaintStore(runtime.mongo.db)
        service = ComplaintService(
            complaints,
            runtime.writes,
            clock_from(settings.clock_file),
            policy,
            peers,
            procedure,
            settings,
        )
        runtime.on_stop(peers.close)
        app.state.complaints = service
        runtime.background("epoch-seconds", lambda stop: complaints.add_epoch_seconds())
        runtime.background("case-kinds", lambda stop: complaints.add_kinds())
        runtime.background("sla-watcher", lambda stop: service.run_watcher(stop, settings.sla_watch_seconds))
        runtime.background(
            "erasure",
            lambda stop: follow_erasures(settings, "complaints", runtime.mongo.db, service.forget, stop),
        )

    return service_app(
        service="complaints",
        title="CRM case desk: inquiries, suggestions, complaints, praise; satisfaction",
        settings=settings,
        indexes=store.INDEXES,
        routers=[api.router],
        wire=wire,
        description="Cases of every kind against SLAs with warnings and escalation to supervisors, the "
        "complaint procedure with compensation paid once, and satisfaction surveys (CSAT, NPS).",
    )
