"""Prometheus metrics every process shares. Names follow Prometheus conventions: units in
names, `_total` counters, histograms for latencies, bounded label sets."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "crm_http_requests_total",
    "HTTP requests served, by route template and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "crm_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_PUBLISHED = Counter("crm_events_published_total", "Events published to Kafka.", ["topic", "type"])
EVENTS_CONSUMED = Counter("crm_events_consumed_total", "Valid events consumed from Kafka.", ["topic", "type"])
EVENTS_DEADLETTERED = Counter(
    "crm_events_deadlettered_total",
    "Records sent to the dead-letter topic, by source topic and reason class.",
    ["topic", "reason"],
)
OUTBOX_PENDING = Gauge(
    "crm_outbox_pending_rows", "Outbox rows (one per write, its events) not yet published."
)
OUTBOX_OLDEST_AGE = Gauge(
    "crm_outbox_oldest_pending_age_seconds", "Age of the oldest unpublished outbox event."
)
OUTBOX_RELAY_ERRORS = Counter("crm_outbox_relay_errors_total", "Failed attempts to publish outbox events.")
OUTBOX_PARKED = Counter(
    "crm_outbox_parked_total",
    "Outbox events the broker refused for good (too large), set aside with the reason.",
)
OUTBOX_REPUBLISHED = Counter(
    "crm_outbox_republished_total",
    "Published events sent again because the broker came back without them (a topic's id changed).",
)
CONSUMER_COMMITS = Counter(
    "crm_consumer_commits_total", "Offset commits after effects were stored.", ["group"]
)
CONSUMER_COMMIT_FAILURES = Counter(
    "crm_consumer_commit_failures_total",
    "Offset commits the group refused (a rebalance, the coordinator away); the batch may come again.",
    ["group"],
)
CONSUMER_LAST_COMMIT = Gauge(
    "crm_consumer_last_commit_timestamp_seconds", "Unix time of the last offset commit.", ["group"]
)


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
