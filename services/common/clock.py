"""One notion of "now" for every rule: wall time live, settable in tests and replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (tests, replays)."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when

    def advance(self, **delta: float) -> datetime:
        self._now += timedelta(**delta)
        return self._now


def to_rfc3339(when: datetime) -> str:
    """UTC, 'Z', microseconds only when present (the schemas' timestamp pattern)."""
    if when.tzinfo is not UTC:
        when = when.astimezone(UTC)
    return when.replace(tzinfo=None).isoformat() + "Z"  # isoformat adds .ffffff only when nonzero


def parse_rfc3339(text: str) -> datetime:
    when = datetime.fromisoformat(text)  # reads "Z" since Python 3.11
    if when.tzinfo is UTC:
        return when
    if when.tzinfo is None:
        raise ValueError(f"time without a timezone: {text!r}")
    return when.astimezone(UTC)


def as_utc(when: datetime) -> datetime:
    """MongoDB hands back naive UTC datetimes; make them aware."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class FileClock:
    """ "Now" read from a file holding an RFC 3339 time: lets a test (or a rehearsal) move a
    running service's clock without any HTTP backdoor. Re-read only when the file changes."""

    def __init__(self, path) -> None:
        from pathlib import Path

        self.path = Path(path)
        self._mtime: float | None = None
        self._now: datetime | None = None

    def now(self) -> datetime:
        mtime = self.path.stat().st_mtime_ns
        if mtime != self._mtime:
            self._now, self._mtime = parse_rfc3339(self.path.read_text().strip()), mtime
        return self._now


def clock_from(path) -> Clock:
    """The clock a service runs on: wall time, or the file's when CRM_CLOCK_FILE is set."""
    return FileClock(path) if path else SystemClock()
