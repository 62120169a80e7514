"""The faust-streaming app: one agent folds every input topic into profiles, timers re-score
silent customers and refresh the population, web views serve health and metrics.

faust stays in charge of the group membership, assignment, offsets, timers and web server.
The agent takes whole fetched batches (batches.py works around faust's per-message cost):
a batch's offsets are acknowledged only after its profiles are written, so a crash
re-delivers the batch and the idempotent fold absorbs it.
"""

from __future__ import annotations

import asyncio

import faust
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common import logs, topics
from services.common.clock import clock_from
from services.common.kafka import bootstrap_list, broker_reachable
from services.common.mongo import Mongo, ensure_indexes
from services.common.settings import Settings, get_settings

from . import store
from .batches import batch_topics
from .service import PROFILES, Scorer, collect_less_often

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or get_settings()
    logs.configure("scoring", settings.log_level, settings.log_json)
    collect_less_often()
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    app = faust.App(
        settings.topic_prefix + "crm-scoring",
        broker=";".join(f"kafka://{hostport}" for hostport in bootstrap_list(settings)),
        store="memory://",  # state lives in MongoDB, not in faust tables (DESIGN.md)
        datadir=str(settings.data_dir / "faust"),
        web_enabled=True,
        web_port=settings.scoring_port,
        web_bind=settings.host,
        web_host=settings.host,
        topic_disable_leader=True,
        topic_allow_declare=False,  # topics are created by `crm topics`
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,  # the embedded broker's first join takes half of it
        broker_commit_interval=1.0,
        producer_acks=-1,
        broker_max_poll_records=settings.scoring_batch,  # events per fetched batch (batches.py)
    )
    inputs = app.topic(
        *[topics.physical(t, settings) for t in topics.INPUTS],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    state: dict[str, object] = {}
    ready = asyncio.Event()

    def scorer() -> Scorer:
        return state["scorer"]  # type: ignore[return-value]

    @app.task
    async def connect() -> None:
        mongo = await Mongo.open(settings, "profiles")
        await ensure_indexes(mongo.db, store.INDEXES)
        state["mongo"] = mongo
        state["scorer"] = made = Scorer(
            store.ProfileStore(mongo.db), settings, clock_from(settings.clock_file)
        )
        await made.load_population()
        ready.set()

    batches = app.channel()
    batch_topics(app, inputs, batches)  # see batches.py: what in faust this works around

    @app.agent(batches)
    async def fold_customer_events(stream):
        """Stage each batch, and let its write run while the next one is staged; the batch is
        acknowledged (batches.py) when its write is done."""
        await ready.wait()
        consumer = app.conf.id
        async for batch in stream:
            finish = await scorer().take(batch.records, consumer)
            asyncio.ensure_future(finish).add_done_callback(batch.settle)

    @app.on_partitions_revoked.connect
    async def forget_cached_profiles(app, revoked, **kwargs) -> None:
        if "scorer" in state:
            scorer().cache.clear()  # their profiles may be written by another worker now

    @app.on_partitions_assigned.connect
    async def sweep_unpublished_signals(app, assigned, **kwargs) -> None:
        """Signals a previous owner stored but may not have published (a crash between the
        write and the publish) go out first; until then batches store theirs unpublished."""
        partitions = sorted({tp.partition for tp in assigned})
        if partitions:

            async def sweep() -> None:
                await ready.wait()
                await scorer().publish_pending(partitions)

            asyncio.ensure_future(sweep())

    @app.timer(interval=settings.scoring_review_seconds)
    async def review_silent_customers() -> None:
        if ready.is_set():
            assigned = sorted({tp.partition for tp in app.consumer.assignment()})
            if assigned:
                await scorer().review(assigned)

    @app.timer(interval=settings.population_seconds)
    async def refresh_population() -> None:
        if ready.is_set():
            await scorer().refresh_population()
            await count_profiles()

    async def count_profiles() -> None:
        db = state["mongo"].db  # type: ignore[attr-defined]
        for dimension, field in (
            ("segment", "$rfm.segment"),
            ("lifecycle", "$lifecycle.stage"),
            ("abc", "$value.abc_class"),
        ):
            rows = (
                await db[store.PROFILES]
                .aggregate([{"$group": {"_id": field, "n": {"$sum": 1}}}])
                .to_list(None)
            )
            for row in rows:
                PROFILES.labels(dimension, str(row["_id"])).set(row["n"])

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"status": "ok", "service": "scoring"})

    @app.page("/readyz")
    async def readyz(web, request):
        mongo = state.get("mongo")
        checks = {
            "database": bool(mongo) and await mongo.ping(),  # type: ignore[union-attr]
            "broker": await asyncio.to_thread(broker_reachable, settings),
        }
        ok = ready.is_set() and all(checks.values())
        return web.json(
            {"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503
        )

    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/population/refresh")
    class RefreshPopulation(faust.web.View):
        """On demand: refresh the population now and score every profile on this worker again."""

        async def post(self, request):
            if not ready.is_set():
                return self.json({"status": "starting"}, status=503)
            fitted = await scorer().refresh_population()
            assigned = sorted({tp.partition for tp in app.consumer.assignment()})
            rescored = await scorer().rescore_all(assigned) if request.query.get("rescore") == "true" else 0
            await count_profiles()
            return self.json(
                {
                    "customers": fitted.customers,
                    "rescored": rescored,
                    "fitted_at": fitted.fitted_at.isoformat() if fitted.fitted_at else None,
                }
            )

    @app.page("/population")
    async def population(web, request):
        p = scorer().population if ready.is_set() else None
        if p is None:
            return web.json({"status": "starting"}, status=503)
        return web.json(
            {
                "fitted_at": p.fitted_at.isoformat() if p.fitted_at else None,
                "customers": p.customers,
                "recency_bounds": p.recency_bounds,
                "frequency_bounds": p.frequency_bounds,
                "monetary_bounds": p.monetary_bounds,
                "abc_a_min_cents": p.abc_a_min_cents,
                "abc_b_min_cents": p.abc_b_min_cents,
                "bgnbd": vars(p.bgnbd),
                "gamma_gamma": vars(p.gamma_gamma),
            }
        )

    return app
