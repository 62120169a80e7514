"""Business time: which hours count toward an SLA. Pure; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Calendar:
    """Opening hours per weekday in a time zone, minus holidays. `hours` None: around the clock."""

    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    hours: dict[int, tuple[time, time]] | None = None
    holidays: frozenset[date] = frozenset()

    @classmethod
    def from_config(cls, config: dict | None) -> Calendar:
        """{"timezone": "Asia/Shanghai", "hours": {"mon": ["09:00", "18:00"], ...}, "holidays": ["2026-10-01"]}"""
        if not config:
            return cls()
        hours = None
        if config.get("hours"):
            hours = {}
            for name, span in config["hours"].items():
                opens, closes = time.fromisoformat(span[0]), time.fromisoformat(span[1])
                if closes <= opens:
                    raise ValueError(f"business hours on {name}: {span[1]} is not after {span[0]}")
                hours[DAYS.index(name.lower()[:3])] = (opens, closes)
        return cls(
            ZoneInfo(config.get("timezone", "UTC")),
            hours,
            frozenset(date.fromisoformat(d) for d in config.get("holidays", [])),
        )

    @property
    def always_open(self) -> bool:
        return self.hours is None and not self.holidays

    def _open_spans(self, start: datetime, end: datetime):
        """(open, close) UTC spans that overlap [start, end), clipped to it."""
        local_day = start.astimezone(self.tz).date() - timedelta(days=1)
        last_day = end.astimezone(self.tz).date()
        while local_day <= last_day:
            if local_day not in self.holidays:
                span = (time(0), None) if self.hours is None else self.hours.get(local_day.weekday())
                if span is not None:
                    opens = datetime.combine(local_day, span[0], self.tz).astimezone(UTC)
                    closes = (
                        datetime.combine(local_day + timedelta(days=1), time(0), self.tz)
                        if span[1] is None
                        else datetime.combine(local_day, span[1], self.tz)
                    ).astimezone(UTC)
                    lo, hi = max(opens, start), min(closes, end)
                    if lo < hi:
                        yield lo, hi
            local_day += timedelta(days=1)

    def seconds_between(self, start: datetime, end: datetime) -> float:
        if end <= start:
            return 0.0
        if self.always_open:
            return (end - start).total_seconds()
        return sum((hi - lo).total_seconds() for lo, hi in self._open_spans(start, end))

    def add(self, start: datetime, seconds: float) -> datetime:
        """The moment `seconds` of business time after `start`."""
        if self.always_open:
            return start + timedelta(seconds=seconds)
        if self.hours is not None and not self.hours:
            raise ValueError("a calendar with no opening hours never reaches a deadline")
        left = seconds
        window_start = start
        while True:
            window_end = window_start + timedelta(days=14)
            for lo, hi in self._open_spans(window_start, window_end):
                span = (hi - lo).total_seconds()
                if span >= left:
                    return lo + timedelta(seconds=left)
                left -= span
            window_start = window_end
