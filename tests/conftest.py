from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.common.clock import to_rfc3339
from services.common.kafka import EventProducer, ensure_topics
from services.stack.harness import Service, Stack, start_platform, start_stack, stop_services

# The moment module clocks start at (tests move them with CRM_CLOCK_FILE).
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """The embedded broker and database, started once for the whole run on free ports."""
    started = start_stack(tmp_path_factory.mktemp("stack"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def prefix(stack) -> str:
    """Topics of the module's own, so its consumers see only its events."""
    name = f"m{uuid.uuid4().hex[:8]}."
    ensure_topics(stack.settings(topic_prefix=name))
    return name


@pytest.fixture(scope="module")
def clock_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clock") / "now"
    path.write_text(to_rfc3339(NOW))
    return path


@pytest.fixture(scope="module")
def publish(stack, prefix):
    """Publish events as the shop's services would, onto the module's topics."""
    producer = EventProducer(stack.settings(topic_prefix=prefix), "test-shop")
    yield lambda *events: producer.publish(
        [e for group in events for e in (group if isinstance(group, list) else [group])]
    )
    producer.close()


@pytest.fixture(scope="module")
def platform(stack, prefix, clock_file, tmp_path_factory) -> dict[str, Service]:
    """The whole platform, every service a process, on the module's topics and clock."""
    started = start_platform(
        stack, tmp_path_factory.mktemp("faust"), CRM_TOPIC_PREFIX=prefix, CRM_CLOCK_FILE=str(clock_file)
    )
    yield started
    stop_services(started.values())
