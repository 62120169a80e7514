"""The scorer's metrics (deploy/README.md lists them) and its garbage-collector tuning."""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from services.common.clock import parse_rfc3339

PROCESSED = Counter("crm_scoring_events_processed_total", "Events folded into profiles.", ["type"])
BATCH = Histogram(
    "crm_scoring_batch_size", "Events per folded batch.", buckets=(1, 10, 50, 100, 250, 500, 1000, 2500)
)
FRESHNESS = Histogram(
    "crm_scoring_freshness_seconds",
    "Event time to profile written, for live events.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
PROFILE_WRITES = Counter(
    "crm_scoring_profile_writes_total", "Profiles written; events processed over this is the fold's gain."
)
BATCH_RETRIES = Counter(
    "crm_scoring_batch_retries_total", "Batches staged again after a failure before their write."
)
NON_FINITE = Counter(
    "crm_scoring_non_finite_values_total",
    "Non-finite model values (NaN, inf) written as null instead: a bug to look into.",
    ["field"],
)
SIGNALS = Counter("crm_scoring_signals_total", "Outbound signals published.", ["type"])
PROFILES = Gauge(
    "crm_profiles", "Profiles by segment, lifecycle stage and ABC class.", ["dimension", "value"]
)
POPULATION_SECONDS = Gauge("crm_population_job_duration_seconds", "Duration of the last population refresh.")
POPULATION_SIZE = Gauge(
    "crm_population_customers", "Customers with a purchase in the last population refresh."
)
POPULATION_LAST_SUCCESS = Gauge(
    "crm_population_job_last_success_timestamp_seconds",
    "Unix time of the last successful population refresh.",
)
POPULATION_FAILURES = Counter("crm_population_job_failures_total", "Population refreshes that failed.")
LIVE_WINDOW = 300.0  # events older than this are history (a replay), not live freshness

# The fold allocates a dozen small dicts per customer while the profile cache keeps hundreds of
# thousands of facts alive. At CPython's default (a young collection every 700 allocations,
# escalating to full ones that walk the whole cache) the cycle collector took a fifth of the
# fold's time (`make bench`, fold alone). Facts and profiles hold no reference cycles, so
# reference counting frees them; the collector only needs to run less often.
GC_THRESHOLD = (10_000, 10, 10)


def collect_less_often() -> tuple[int, int, int]:
    """Apply GC_THRESHOLD to this process; returns the previous thresholds."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    return before


def batch_written(events: list[dict[str, Any]], profiles: int) -> None:
    """A batch's `profiles` are stored: count its events, and the freshness of the live ones."""
    PROFILE_WRITES.inc(profiles)
    written = time.time()
    for event in events:
        PROCESSED.labels(event["type"]).inc()
        lag = written - parse_rfc3339(event["time"]).timestamp()
        if 0 <= lag < LIVE_WINDOW:
            FRESHNESS.observe(lag)
    if events:
        BATCH.observe(len(events))
