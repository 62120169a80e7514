"""Wiring: the scorer as a faust worker (consumer group `crm-scoring`, one or many), its agent,
timers and rebalance hooks, serving health, metrics and the population (api.py) on faust's
web server.
The agent takes whole fetched batches (batches.py works around faust's per-message cost):
a batch's offsets are acknowledged only after its profiles are written, so a crash
re-delivers the batch and the idempotent fold absorbs it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import faust

from services.common import logs, topics
from services.common.clock import clock_from
from services.common.kafka import bootstrap_list
from services.common.mongo import Mongo, ensure_indexes
from services.common.settings import Settings, get_settings

from . import api, events, store
from .batches import batch_topics
from .metrics import collect_less_often
from .service import Scorer


@dataclass
class Worker:
    """What the views and timers share: set up by `connect`, ready once the population is loaded."""

    app: faust.App
    settings: Settings
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    mongo: Mongo | None = None
    scorer: Scorer = None  # type: ignore[assignment]  # set before `ready`

    def assigned_partitions(self) -> list[int]:
        return sorted({tp.partition for tp in self.app.consumer.assignment()})

    def consumer_stalled(self) -> str | None:
        """Why the consumer is stalled, or None: a batch has waited for its write longer than
        CRM_SCORING_STALL_SECONDS."""
        waited = getattr(self.app.consumer, "unacknowledged_for", lambda: 0.0)()
        if waited > self.settings.scoring_stall_seconds:
            return f"stalled: a batch has waited {waited:.0f} s for its write"
        return None


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or get_settings()
    logs.configure("scoring", settings.log_level, settings.log_json)
    collect_less_often()
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    app = faust.App(
        settings.topic_prefix + events.GROUP,
        broker=";".join(f"kafka://{hostport}" for hostport in bootstrap_list(settings)),
        store="memory://",  # state lives in MongoDB, not in faust tables (docs/architecture.md, "Services")
        datadir=str(settings.data_dir / "faust"),
        web_enabled=True,
        web_port=settings.scoring_port,
        web_bind=settings.host,
        web_host=settings.host,
        # faust's own pages (partition router, tables, graph, statistics) would answer anyone
        # without a key; only its plain status index stays (services/common/routes.py).
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,  # topics are created by `crm topics`
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,  # the embedded broker's first join takes half of it
        broker_commit_interval=1.0,
        producer_acks=-1,
        broker_max_poll_records=settings.scoring_batch,  # events per fetched batch (batches.py)
    )
    inputs = app.topic(
        *[topics.physical(t, settings) for t in events.CONSUMES],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    worker = Worker(app, settings)

    @app.task
    async def connect() -> None:
        worker.mongo = mongo = await Mongo.open(settings, "profiles")
        await ensure_indexes(mongo.db, store.INDEXES)
        profiles = store.ProfileStore(mongo.db)
        await profiles.version_profiles()
        worker.scorer = Scorer(profiles, settings, clock_from(settings.clock_file))
        await worker.scorer.load_population()
        worker.ready.set()

    batches = app.channel()
    batch_topics(app, inputs, batches)  # see batches.py: what in faust this works around

    @app.agent(batches)
    async def fold_customer_events(stream):
        """Stage each batch, and let its write run while the next one is staged; the batch is
        acknowledged (batches.py) when its write is done."""
        await worker.ready.wait()
        consumer = app.conf.id
        async for batch in stream:
            write = await worker.scorer.stage_batch(batch.records, consumer)
            asyncio.ensure_future(write).add_done_callback(batch.settle)

    @app.on_partitions_revoked.connect
    async def forget_cached_profiles(app, revoked, **kwargs) -> None:
        if worker.scorer is not None:
            worker.scorer.cache.clear()  # their profiles may be written by another worker now

    @app.on_partitions_assigned.connect
    async def sweep_unpublished_signals(app, assigned, **kwargs) -> None:
        """Signals a previous owner stored but may not have published (a crash between the
        write and the publish) go out first; until then batches store theirs unpublished."""
        partitions = sorted({tp.partition for tp in assigned})
        if partitions:

            async def sweep() -> None:
                await worker.ready.wait()
                await worker.scorer.publish_pending(partitions)

            asyncio.ensure_future(sweep())

    @app.timer(interval=settings.scoring_review_seconds)
    async def review_silent_customers() -> None:
        if worker.ready.is_set():
            assigned = worker.assigned_partitions()
            if assigned:
                await worker.scorer.review(assigned)

    @app.timer(interval=settings.population_seconds)
    async def refresh_population() -> None:
        if worker.ready.is_set():  # one worker of the group runs it (Scorer.population_job)
            await worker.scorer.population_job(settings.population_seconds)

    api.register(app, worker)
    return app
