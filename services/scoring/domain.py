"""The scorer's rules, pure. Most of them live in their own modules, each named for its part:
`facts.py` (what a customer's events leave behind, folded), `scores.py` (RFM, ABC, churn
risk and its reasons, lifecycle), `warnings.py` (when a churn risk becomes a warning: level,
episodes), `reasons.py` (each reason's sentence in English and Chinese), `profile.py` (the
profile and its signals, built from the facts), `population.py` (the population statistics
and the models' fit) and `model.py` (BG/NBD and Gamma-Gamma). This one holds the rest: which clock "now" is, when a stream is
a replay of history, and which partition carries a customer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from kafka.partitioner import murmur2

from services.common.clock import Clock

HISTORY_LAG = timedelta(days=1)  # a stream this far behind the wall clock is a replay


def is_replay(latest_event: datetime, wall_now: datetime) -> bool:
    """A batch whose newest event is more than HISTORY_LAG old is history arriving, not live."""
    return wall_now - latest_event > HISTORY_LAG


@dataclass
class ScoringClock:
    """One clock for every score: the wall clock live, the latest event time during a replay
    of history (so replaying 1997 gives the profiles a shop had in 1997). `auto` tells them
    apart by how late events arrive, not by how long ago the last one came: a quiet shop's
    clock keeps running, so its silent customers still slide into decline."""

    mode: str  # CRM_SCORING_CLOCK: auto, wall or event
    wall: Clock
    watermark: datetime | None = None  # latest event time seen, the clock of a replay
    replaying: bool = False  # the last batch arrived long after its events happened

    def saw(self, latest_event: datetime) -> None:
        """A batch arrived whose newest event happened at `latest_event`."""
        self.watermark = max(self.watermark or latest_event, latest_event)
        self.replaying = is_replay(latest_event, self.wall.now())

    def now(self) -> datetime:
        mark = self.watermark
        if mark is not None and (self.mode == "event" or (self.mode == "auto" and self.replaying)):
            return mark
        return self.wall.now()


def partition_of(customer_id: str, partitions: int) -> int:
    """Kafka's default partitioner: the partition that carries this customer's events (a
    profile's signals are published and swept by it)."""
    return (murmur2(customer_id.encode()) & 0x7FFFFFFF) % partitions
