"""When a consumer's position shows that the embedded broker restarted empty."""

from services.common.kafka import log_restarted_empty


def test_a_position_past_the_log_end_means_the_log_restarted_empty():
    assert log_restarted_empty(position=120, log_end=3)
    assert log_restarted_empty(position=1, log_end=0)


def test_a_position_at_or_before_the_log_end_is_ordinary_reading():
    assert not log_restarted_empty(position=3, log_end=3)  # caught up
    assert not log_restarted_empty(position=0, log_end=40)
    assert not log_restarted_empty(position=None, log_end=3)  # no position yet
    assert not log_restarted_empty(position=5, log_end=None)  # nothing fetched yet
