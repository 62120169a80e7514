"""An acknowledged record is never taken for a lost one (issue 18: the complaints relay sent
one `crm.complaint.reopened` twice with one event id, no fault injected).

kafka-python's sender thread completes a batch by marking each record's future done, running
every callback of the batch, and only then waking threads waiting in `get()`. A wait that ends
in between times out although the record was acknowledged. These tests drive kafka-python's own
futures the way its sender thread does, with the batch's callbacks held up so the wait lands
in that window every time."""

from __future__ import annotations

import threading
import time

from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata
from kafka.structs import TopicPartition

from services.common.kafka import _acknowledged


def _record_in_a_slow_batch(outcome: tuple[int, int, object] | Exception) -> FutureRecordMetadata:
    """A record whose batch completes 50 ms from now, the waiters woken 600 ms after that."""
    batch = FutureProduceResult(TopicPartition("crm.complaints.v1", 0))
    record = FutureRecordMetadata(batch, 0, int(time.time() * 1000), None, 1, 100, -1)
    batch.add_both(lambda _: time.sleep(0.6))  # the other records' callbacks

    def complete() -> None:
        time.sleep(0.05)
        if isinstance(outcome, Exception):
            batch.failure(outcome)
        else:
            batch.success(outcome)

    threading.Thread(target=complete, daemon=True).start()
    return record


def test_a_record_acknowledged_while_its_wait_times_out_counts_as_acknowledged() -> None:
    record = _record_in_a_slow_batch((41, -1, None))
    assert _acknowledged(None, record, time.monotonic() + 0.3) is None
    assert record.value.offset == 41


def test_a_record_the_broker_refused_while_its_wait_times_out_reports_the_refusal() -> None:
    record = _record_in_a_slow_batch(NotLeaderForPartitionError("moved"))
    assert isinstance(_acknowledged(None, record, time.monotonic() + 0.3), NotLeaderForPartitionError)


def test_a_record_not_completed_by_the_deadline_is_not_acknowledged() -> None:
    batch = FutureProduceResult(TopicPartition("crm.complaints.v1", 0))
    record = FutureRecordMetadata(batch, 0, int(time.time() * 1000), None, 1, 100, -1)
    assert isinstance(_acknowledged(None, record, time.monotonic() + 0.3), KafkaTimeoutError)
