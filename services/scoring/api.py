"""The scorer's web views, on faust's web server: health, readiness, metrics and the
population. Each translates the request and calls the service."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common.auth import api_keys, authorize
from services.common.kafka import broker_reachable
from services.common.problems import PROBLEM_JSON, Problem, problem_body
from services.common.routes import ROUTE_ROLES

from .models import population_answer, refresh_answer

if TYPE_CHECKING:
    from .main import Worker


def register(app: faust.App, worker: Worker) -> None:
    keys = api_keys(worker.settings)

    async def refusal(view: faust.web.View, request, role: str):
        """None when the request's API key holds `role`, else the 401 or 403 to answer with."""
        try:
            await authorize(keys, request.headers.get("Authorization"), role)
        except Problem as problem:
            return view.json(
                {**problem_body(problem.status, problem.detail), "instance": request.path},
                content_type=PROBLEM_JSON,
                status=problem.status,
                headers=problem.headers,
            )
        return None

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"status": "ok", "service": "scoring"})

    @app.page("/readyz")
    async def readyz(web, request):
        mongo = worker.mongo
        checks = {
            "database": bool(mongo) and await mongo.ping(),  # type: ignore[union-attr]
            "broker": await asyncio.to_thread(broker_reachable, worker.settings),
        }
        stalled = worker.consumer_stalled()
        checks["consumer"] = stalled is None
        ok = worker.ready.is_set() and all(checks.values())
        answer = {"status": "ready" if ok else "not ready", "checks": checks}
        if stalled:
            answer["reasons"] = {"consumer": stalled}
        return web.json(answer, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/population/refresh")
    class RefreshPopulation(faust.web.View):
        """On demand: refresh the population now and score every profile on this worker again."""

        async def post(self, request):
            if (
                refused := await refusal(self, request, ROUTE_ROLES["scoring"]["POST /population/refresh"])
            ) is not None:
                return refused
            if not worker.ready.is_set():
                return self.json({"status": "starting"}, status=503)
            scorer = worker.scorer
            fitted = await scorer.refresh_population()
            rescored = (
                await scorer.rescore_all(worker.assigned_partitions())
                if request.query.get("rescore") == "true"
                else 0
            )
            await scorer.count_profiles()
            return self.json(refresh_answer(fitted, rescored))

    @app.page("/population")
    async def population(web, request):
        if (refused := await refusal(web, request, ROUTE_ROLES["scoring"]["GET /population"])) is not None:
            return refused
        if not worker.ready.is_set():
            return web.json({"status": "starting"}, status=503)
        return web.json(population_answer(worker.scorer.population))
