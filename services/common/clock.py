"""One notion of "now" for every rule: wall time live, settable in tests and replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from .errors import RuleBroken


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


# Reads a viewer can ask for that summarise a period (complaint and survey stats, segment moves)
# cover at most this long, so no such read runs over the whole history.
MAX_PERIOD = timedelta(days=366)
PERIOD_RULE = (
    f"`from` and `to` bound a half-open period of at most {MAX_PERIOD.days} days (422 beyond); "
    f"one left out is {MAX_PERIOD.days} days from the other, both left out the {MAX_PERIOD.days} "
    "days up to now."
)


def bounded_period(
    since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """A half-open period [since, until) of at most MAX_PERIOD. A missing end is filled in
    from the other one (or now): `until` MAX_PERIOD after `since`, `since` MAX_PERIOD before
    `until`; neither given is the MAX_PERIOD up to now."""
    if since is None and until is None:
        until = now
    if until is None:
        until = since + MAX_PERIOD  # type: ignore[operator]
    if since is None:
        since = until - MAX_PERIOD
    if since >= until:
        raise RuleBroken(
            f"the period is empty: from {to_rfc3339(since)} is not before to {to_rfc3339(until)}"
        )
    if until - since > MAX_PERIOD:
        raise RuleBroken(
            f"the period is longer than {MAX_PERIOD.days} days: ask for at most {MAX_PERIOD.days} days at a time",
            max_days=MAX_PERIOD.days,
        )
    return since, until
