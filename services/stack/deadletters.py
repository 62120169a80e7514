"""`crm deadletters`: read what consumers dead-lettered, summarise it for an operator, show
one record, and replay chosen ones (as they are, or fixed) to their original topic.

The dead-letter topic holds each record's original bytes and key, with the context in
`crm.dlq.*` headers (`services/common/kafka.py` `deadletter_headers`). A dead letter is named
by its address on that topic, `partition:offset`.

A replay is remembered by a marker on a topic of its own, `crm.deadletter.replays.v1`, keyed
by the dead letter's address and written after the broker acknowledged the replayed record;
a second replay of a marked dead letter is skipped unless asked for again. A topic rather than
a header on the replayed record: finding such a header means reading the whole original
topic, which is large and shared by every producer, while the marker topic is small, read
whole in one go, and needs nothing a Kafka cluster does not serve. It is created with the
other topics and keeps the same retention as the dead letters, so a marker outlives its dead
letter. A crash between the replayed record's acknowledgement and its marker leaves the record
unmarked: replaying it again is absorbed by the consumers, which are idempotent on the event id.

Everything above the I/O section is pure and tested without a broker
(tests/unit/test_deadletters.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from services.common import topics
from services.common.clock import SystemClock, parse_rfc3339, to_rfc3339
from services.common.contracts import EventValidationError, decode, encode
from services.common.kafka import DLQ_HEADER_PREFIX, EventProducer, read_topic
from services.common.settings import Settings

REPLAYED_FROM_HEADER = DLQ_HEADER_PREFIX + "replayed-from"

# Age buckets: (upper bound, label), youngest first; the last has no bound.
AGE_BUCKETS: tuple[tuple[timedelta | None, str], ...] = (
    (timedelta(hours=1), "under 1 h"),
    (timedelta(days=1), "1 h to 1 d"),
    (timedelta(days=7), "1 d to 7 d"),
    (None, "over 7 d"),
)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, its headers read."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    topic: str  # the original topic, as named on the broker
    original_partition: int | None
    original_offset: int | None
    consumer: str
    at: datetime  # when it was dead-lettered
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def address(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def origin(self) -> tuple[str, int | None, int | None]:
        """Where the original record was: several consumers may dead-letter the same one."""
        return (self.topic, self.original_partition, self.original_offset)


def from_record(record: Any) -> DeadLetter:
    """A consumer record of the dead-letter topic -> DeadLetter. Missing headers (a record put
    there by hand) read as unknown; the time falls back to the record's timestamp."""
    headers = tuple((name, bytes(value or b"")) for name, value in (record.headers or []))
    found = {
        name.removeprefix(DLQ_HEADER_PREFIX): value.decode("utf-8", "replace") for name, value in headers
    }
    try:
        at = parse_rfc3339(found["time"])
    except (KeyError, ValueError):
        at = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        reason=found.get("reason") or "unknown",
        topic=found.get("topic") or "unknown",
        original_partition=_int_or_none(found.get("partition")),
        original_offset=_int_or_none(found.get("offset")),
        consumer=found.get("consumer") or "unknown",
        at=at,
        headers=headers,
    )


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def age_bucket(age: timedelta) -> str:
    for bound, label in AGE_BUCKETS:
        if bound is None or age < bound:
            return label
    raise AssertionError("the last bucket has no bound")


def parse_moment(text: str, now: datetime) -> datetime:
    """'90m', '2h', '7d', '1w' (that long before now), or an ISO date or date-time (UTC when no
    zone is given) -> a moment. ValueError with the accepted forms otherwise."""
    matched = _DURATION.match(text)
    if matched:
        return now - timedelta(**{_UNITS[matched.group(2)]: int(matched.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 2h, 7d, 1w) nor an ISO date or time"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Filter:
    """Which dead letters an operator means: reason containing a text (any case), original
    topic (with or without the environment's prefix), dead-lettered since / before a moment."""

    reason: str | None = None
    topic: str | None = None
    since: datetime | None = None
    before: datetime | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.reason, self.topic, self.since, self.before))

    def matches(self, letter: DeadLetter, topic_prefix: str = "") -> bool:
        if self.reason is not None and self.reason.lower() not in letter.reason.lower():
            return False
        if self.topic is not None and letter.topic not in (self.topic, topic_prefix + self.topic):
            return False
        if self.since is not None and letter.at < self.since:
            return False
        return self.before is None or letter.at < self.before


def make_filter(
    now: datetime,
    reason: str | None = None,
    topic: str | None = None,
    since: str | None = None,
    older_than: str | None = None,
) -> Filter:
    return Filter(
        reason=reason,
        topic=topic,
        since=parse_moment(since, now) if since else None,
        before=parse_moment(older_than, now) if older_than else None,
    )


@dataclass
class Group:
    """Dead letters with one reason from one topic, of one age."""

    reason: str
    topic: str
    age: str
    count: int = 0
    replayed: int = 0
    addresses: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "topic": self.topic,
            "age": self.age,
            "count": self.count,
            "replayed": self.replayed,
            "dead_letters": self.addresses,
        }


def summarise(letters: Iterable[DeadLetter], now: datetime, replayed: Iterable[str] = ()) -> list[Group]:
    """Group by reason, original topic and age bucket. The reasons and topics with the most
    dead letters come first, and within one, the youngest bucket first."""
    done = set(replayed)
    groups: dict[tuple[str, str, str], Group] = {}
    for letter in letters:
        age = age_bucket(now - letter.at)
        group = groups.setdefault((letter.reason, letter.topic, age), Group(letter.reason, letter.topic, age))
        group.count += 1
        group.replayed += letter.address in done
        group.addresses.append(letter.address)
    totals: dict[tuple[str, str], int] = {}
    for group in groups.values():
        totals[(group.reason, group.topic)] = totals.get((group.reason, group.topic), 0) + group.count
    order = {label: i for i, (_, label) in enumerate(AGE_BUCKETS)}
    return sorted(
        groups.values(),
        key=lambda g: (-totals[(g.reason, g.topic)], g.reason, g.topic, order[g.age]),
    )


def resolve(letters: Sequence[DeadLetter], refs: Iterable[str]) -> list[DeadLetter]:
    """Addresses ('3:17', or a bare offset when only one partition has it) -> dead letters, in
    the order given. LookupError names what was not found or is ambiguous."""
    by_address = {letter.address: letter for letter in letters}
    chosen: list[DeadLetter] = []
    for ref in refs:
        ref = ref.strip()
        if ":" in ref:
            found = by_address.get(ref)
            if found is None:
                raise LookupError(f"no dead letter at {ref}")
        else:
            candidates = [letter for letter in letters if str(letter.offset) == ref]
            if len(candidates) != 1:
                where = ", ".join(c.address for c in candidates) or "none"
                raise LookupError(
                    f"offset {ref} names {len(candidates)} dead letters ({where}): give partition:offset"
                )
            found = candidates[0]
        if found not in chosen:
            chosen.append(found)
    return chosen


# --- replay markers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    """A replay, remembered: which dead letter went back, where, when, and whether fixed."""

    address: str
    origin: tuple[str, int | None, int | None]
    event_id: str | None
    at: str
    fixed: bool


def marker_record(letter: DeadLetter, event_id: str | None, at: datetime, fixed: bool) -> tuple[bytes, bytes]:
    """(key, value) of the marker for a replayed dead letter."""
    topic, partition, offset = letter.origin
    value = {
        "deadletter": letter.address,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "event_id": event_id,
        "replayed_at": to_rfc3339(at),
        "fixed": fixed,
    }
    return letter.address.encode(), orjson.dumps(value)


def read_markers(values: Iterable[bytes | None]) -> dict[str, Marker]:
    """Marker records -> the latest marker per dead-letter address (unreadable ones ignored)."""
    markers: dict[str, Marker] = {}
    for raw in values:
        try:
            doc = orjson.loads(raw or b"")
            marker = Marker(
                doc["deadletter"],
                (doc["topic"], doc["partition"], doc["offset"]),
                doc.get("event_id"),
                doc["replayed_at"],
                bool(doc.get("fixed")),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        markers[marker.address] = marker
    return markers


def replayed(letters: Iterable[DeadLetter], markers: Mapping[str, Marker]) -> dict[str, Marker]:
    """The markers that belong to these dead letters: same address and same original record
    (a recreated dead-letter topic reuses addresses)."""
    return {
        letter.address: markers[letter.address]
        for letter in letters
        if letter.address in markers and markers[letter.address].origin == letter.origin
    }


# --- planning a replay ----------------------------------------------------------------------

SEND, SKIP, REFUSE = "send", "skip", "refuse"


@dataclass(frozen=True)
class Decision:
    """What a replay does with one original record (the dead letters it settles: one per
    consumer that dead-lettered it)."""

    letters: tuple[DeadLetter, ...]
    action: str  # SEND, SKIP or REFUSE
    why: str
    value: bytes | None = None
    event_id: str | None = None
    fixed: bool = False

    @property
    def topic(self) -> str:
        return self.letters[0].topic

    @property
    def key(self) -> bytes | None:
        return self.letters[0].key


def plan(
    chosen: Sequence[DeadLetter],
    markers: Mapping[str, Marker],
    settings: Settings,
    fix: bytes | None = None,
    again: bool = False,
) -> list[Decision]:
    """Decide, for each original record among the chosen dead letters, whether to send it:
    skipped when already replayed (unless `again`), refused when it still breaks its contract,
    belongs on another topic, or its subject is not its key (that would break per-customer
    order). `fix` replaces the value of the (single) original record."""
    origins: dict[tuple[str, int | None, int | None], list[DeadLetter]] = {}
    for letter in chosen:
        same = letter.origin if None not in letter.origin else (letter.address, None, None)
        origins.setdefault(same, []).append(letter)
    if fix is not None and len(origins) > 1:
        raise ValueError(f"--fix replaces one record, but {len(origins)} different records were chosen")
    done = replayed(chosen, markers)
    decisions = []
    for letters in origins.values():
        decisions.append(_decide(tuple(letters), done, settings, fix, again))
    return decisions


def _decide(
    letters: tuple[DeadLetter, ...],
    done: Mapping[str, Marker],
    settings: Settings,
    fix: bytes | None,
    again: bool,
) -> Decision:
    first = letters[0]
    earlier = [done[letter.address] for letter in letters if letter.address in done]
    if earlier and not again:
        return Decision(letters, SKIP, f"already replayed at {earlier[-1].at} (--again sends it once more)")
    value = fix if fix is not None else first.value
    try:
        event = decode(value)
    except EventValidationError as exc:
        hint = "" if fix is not None else " (correct it with --fix FILE)"
        return Decision(letters, REFUSE, f"still invalid: {exc}{hint}", event_id=_loose_id(value))
    try:
        belongs = topics.physical(topics.topic_for_type(event["type"]), settings)
    except ValueError as exc:
        return Decision(letters, REFUSE, str(exc))
    if belongs != first.topic:
        return Decision(letters, REFUSE, f"a {event['type']} event belongs on {belongs}, not {first.topic}")
    if first.key is not None and event["subject"].encode() != first.key:
        return Decision(
            letters,
            REFUSE,
            f"subject {event['subject']!r} is not the record's key {first.key.decode('utf-8', 'replace')!r}",
        )
    return Decision(
        letters,
        SEND,
        "fixed" if fix is not None else "as it was",
        value=encode(event) if fix is not None else value,
        event_id=event["id"],
        fixed=fix is not None,
    )


def _loose_id(value: bytes | None) -> str | None:
    """The id of an invalid event, when it has one, to name it in the answer."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return doc.get("id") if isinstance(doc, dict) and isinstance(doc.get("id"), str) else None


def pretty_value(value: bytes | None) -> str:
    """The original bytes for a person: indented JSON when they parse, else the text."""
    if value is None:
        return "(no value)"
    try:
        return orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace") + "\n(not JSON)"


# --- I/O: the broker ------------------------------------------------------------------------


def read_deadletters(settings: Settings) -> list[DeadLetter]:
    return [from_record(r) for r in read_topic(settings, topics.physical(topics.DEADLETTER, settings))]


def read_replay_markers(settings: Settings) -> dict[str, Marker]:
    records = read_topic(settings, topics.physical(topics.DEADLETTER_REPLAYS, settings))
    return read_markers(r.value for r in records)


def send(settings: Settings, decisions: Sequence[Decision], timeout: float = 30.0) -> int:
    """Send each SEND decision's record to its original topic with its original key, then,
    once the broker acknowledged it, mark its dead letters replayed. Returns how many sent."""
    chosen = [d for d in decisions if d.action == SEND]
    if not chosen:
        return 0
    deadletter_topic = topics.physical(topics.DEADLETTER, settings)
    markers_topic = topics.physical(topics.DEADLETTER_REPLAYS, settings)
    producer = EventProducer(settings, "crm-deadletters")
    try:
        for decision in chosen:
            source = f"{deadletter_topic}:{decision.letters[0].address}".encode()
            producer.send_raw(
                decision.topic, decision.key, decision.value, [(REPLAYED_FROM_HEADER, source)]
            ).get(timeout=timeout)
            now = SystemClock().now()
            for letter in decision.letters:
                key, value = marker_record(letter, decision.event_id, now, decision.fixed)
                producer.send_raw(markers_topic, key, value).get(timeout=timeout)
    finally:
        producer.close()
    return len(chosen)


# --- the command's output -------------------------------------------------------------------


def groups_table(groups: Sequence[Group], shown_addresses: int = 5) -> Table:
    table = Table("reason", "topic", "age", "count", "replayed", "dead letters (partition:offset)")
    for g in groups:
        addresses = ", ".join(g.addresses[:shown_addresses])
        if len(g.addresses) > shown_addresses:
            addresses += f", … {len(g.addresses) - shown_addresses} more"
        table.add_row(Text(g.reason), Text(g.topic), g.age, str(g.count), str(g.replayed), Text(addresses))
    return table


def letter_table(letter: DeadLetter, marker: Marker | None, now: datetime) -> Table:
    table = Table("field", "value", show_header=False)
    rows = [
        ("dead letter", letter.address),
        ("reason", letter.reason),
        ("original", f"{letter.topic} partition {letter.original_partition} offset {letter.original_offset}"),
        ("key", letter.key.decode("utf-8", "replace") if letter.key is not None else "(none)"),
        ("consumer", letter.consumer),
        ("dead-lettered", f"{to_rfc3339(letter.at)} (age {age_bucket(now - letter.at)})"),
        ("replayed", f"at {marker.at}{' (fixed)' if marker.fixed else ''}" if marker else "no"),
    ]
    read = {DLQ_HEADER_PREFIX + n for n in ("reason", "topic", "partition", "offset", "consumer", "time")}
    rows += [(name, value.decode("utf-8", "replace")) for name, value in letter.headers if name not in read]
    for name, value in rows:
        table.add_row(name, Text(value))
    return table


def decisions_table(decisions: Sequence[Decision], dry_run: bool) -> Table:
    table = Table("dead letters", "to topic", "event id", "result")
    sent = "would send" if dry_run else "sent"
    for d in decisions:
        result = {SEND: f"{sent} ({d.why})", SKIP: f"skipped: {d.why}", REFUSE: f"refused: {d.why}"}[d.action]
        table.add_row(
            Text(", ".join(letter.address for letter in d.letters)),
            Text(d.topic),
            Text(d.event_id or "-"),
            Text(result, style={SEND: "green", SKIP: "yellow", REFUSE: "red"}[d.action]),
        )
    return table


def run_list(settings: Settings, chosen: Filter, as_json: bool, console: Console) -> int:
    now = SystemClock().now()
    letters = [x for x in read_deadletters(settings) if chosen.matches(x, settings.topic_prefix)]
    done = replayed(letters, read_replay_markers(settings))
    groups = summarise(letters, now, done)
    if as_json:
        print(orjson.dumps({"total": len(letters), "groups": [g.as_json() for g in groups]}).decode())
        return 0
    console.print(groups_table(groups))
    console.print(f"{len(letters)} dead letters, {len(done)} of them replayed")
    return 0


def run_show(settings: Settings, address: str, console: Console) -> int:
    letters = read_deadletters(settings)
    try:
        (letter,) = resolve(letters, [address])
    except LookupError as exc:
        console.print(Text(str(exc), style="red"))
        return 1
    marker = replayed([letter], read_replay_markers(settings)).get(letter.address)
    console.print(letter_table(letter, marker, SystemClock().now()))
    print(pretty_value(letter.value))
    return 0


def run_replay(
    settings: Settings,
    refs: Sequence[str],
    chosen: Filter,
    console: Console,
    fix: bytes | None = None,
    again: bool = False,
    dry_run: bool = False,
    everything: bool = False,
) -> int:
    """Exit code 0 when every chosen record was sent or skipped, 1 when one was refused."""
    if not refs and not chosen.active and not everything:
        console.print("[red]name dead letters (partition:offset), a filter, or --all[/]")
        return 2
    letters = read_deadletters(settings)
    try:
        picked = resolve(letters, refs) if refs else letters
    except LookupError as exc:
        console.print(Text(str(exc), style="red"))
        return 1
    picked = [x for x in picked if chosen.matches(x, settings.topic_prefix)]
    if not picked:
        console.print("no dead letter matches")
        return 1
    try:
        decisions = plan(picked, read_replay_markers(settings), settings, fix, again)
    except ValueError as exc:
        console.print(Text(str(exc), style="red"))
        return 1
    if not dry_run:
        send(settings, decisions)
    console.print(decisions_table(decisions, dry_run))
    return 1 if any(d.action == REFUSE for d in decisions) else 0
