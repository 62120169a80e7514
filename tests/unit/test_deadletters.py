"""`crm deadletters` without a broker: reading the headers the consumers write, grouping by
reason, topic and age, the filters an operator types, and what a replay would send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from services.common.contracts import build_event, encode
from services.common.kafka import deadletter_headers
from services.common.settings import Settings
from services.stack.deadletters import (
    REFUSE,
    SEND,
    SKIP,
    age_bucket,
    from_record,
    make_filter,
    marker_record,
    parse_moment,
    plan,
    read_markers,
    resolve,
    summarise,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PREFIX = "shop1."
SETTINGS = Settings(topic_prefix=PREFIX)


def paid(customer: str = "c-1", cents: int = 4200) -> dict:
    return build_event(
        "crm.order.paid",
        {
            "order_id": "o-1",
            "customer_id": customer,
            "amount_cents": cents,
            "currency": "CNY",
            "paid_at": "2026-11-22T07:00:00Z",
        },
        source="/services/orders",
        validate=cents >= 0,
    )


def dead(
    offset: int,
    value: bytes,
    *,
    reason: str = "invalid event in crm.order.paid at data.amount_cents: -1 is less than the minimum of 0",
    topic: str = PREFIX + "crm.orders.v1",
    original_offset: int | None = None,
    consumer: str = "crm-loyalty",
    age: timedelta = timedelta(minutes=5),
    partition: int = 0,
    key: bytes | None = b"c-1",
):
    headers = deadletter_headers(
        reason, topic, 3, offset if original_offset is None else original_offset, consumer
    )
    headers = [(n, v) if n != "crm.dlq.time" else (n, (NOW - age).isoformat().encode()) for n, v in headers]
    record = ConsumerRecord(
        PREFIX + "crm.deadletter.v1", partition, 0, offset, 0, 0, key, value, headers, None, 0, 0, 0
    )
    return from_record(record)


def test_a_dead_letter_reads_the_headers_the_consumers_write():
    letter = dead(7, b"{oops", reason="not JSON: unexpected character", age=timedelta(hours=2), partition=4)
    assert letter.address == "4:7"
    assert letter.reason == "not JSON: unexpected character"
    assert letter.origin == (PREFIX + "crm.orders.v1", 3, 7)
    assert letter.consumer == "crm-loyalty" and letter.key == b"c-1" and letter.value == b"{oops"
    assert letter.at == NOW - timedelta(hours=2)


def test_a_record_without_headers_reads_as_unknown_and_keeps_its_timestamp():
    stamp = int((NOW - timedelta(days=2)).timestamp() * 1000)
    record = ConsumerRecord("crm.deadletter.v1", 0, 0, 1, stamp, 0, None, b"x", [], None, 0, 0, 0)
    letter = from_record(record)
    assert (letter.reason, letter.topic, letter.original_offset) == ("unknown", "unknown", None)
    assert letter.at == NOW - timedelta(days=2)


@pytest.mark.parametrize(
    ("age", "bucket"),
    [
        (timedelta(minutes=59), "under 1 h"),
        (timedelta(hours=1), "1 h to 1 d"),
        (timedelta(hours=23), "1 h to 1 d"),
        (timedelta(days=1), "1 d to 7 d"),
        (timedelta(days=7), "over 7 d"),
        (timedelta(days=400), "over 7 d"),
    ],
)
def test_age_buckets(age, bucket):
    assert age_bucket(age) == bucket


def test_dead_letters_are_grouped_by_reason_topic_and_age_biggest_reason_first():
    letters = [
        dead(0, b"{", reason="not JSON", age=timedelta(days=3)),
        dead(1, b"{", reason="refused: the account is closed", topic=PREFIX + "crm.customers.v1"),
        dead(2, b"{", reason="not JSON", age=timedelta(minutes=1)),
        dead(3, b"{", reason="not JSON", age=timedelta(days=2)),
        dead(4, b"{", reason="not JSON", topic=PREFIX + "crm.complaints.v1"),
    ]
    groups = summarise(letters, NOW, replayed={"0:3"})
    assert [(g.reason, g.topic, g.age, g.count, g.replayed, g.addresses) for g in groups] == [
        ("not JSON", PREFIX + "crm.orders.v1", "under 1 h", 1, 0, ["0:2"]),
        ("not JSON", PREFIX + "crm.orders.v1", "1 d to 7 d", 2, 1, ["0:0", "0:3"]),
        ("not JSON", PREFIX + "crm.complaints.v1", "under 1 h", 1, 0, ["0:4"]),
        ("refused: the account is closed", PREFIX + "crm.customers.v1", "under 1 h", 1, 0, ["0:1"]),
    ]
    assert groups[1].as_json()["dead_letters"] == ["0:0", "0:3"]


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        (" 7d ", NOW - timedelta(days=7)),
        ("1w", NOW - timedelta(weeks=1)),
        ("45s", NOW - timedelta(seconds=45)),
        ("2026-11-29", datetime(2026, 11, 29, tzinfo=UTC)),
        ("2026-11-29T08:30:00+08:00", datetime(2026, 11, 29, 0, 30, tzinfo=UTC)),
    ],
)
def test_since_and_older_than_take_durations_or_moments(text, moment):
    assert parse_moment(text, NOW) == moment


@pytest.mark.parametrize("text", ["yesterday", "2x", "-3h", "h"])
def test_a_moment_that_does_not_parse_says_what_is_accepted(text):
    with pytest.raises(ValueError, match="duration"):
        parse_moment(text, NOW)


def test_filters_by_reason_topic_and_age():
    young = dead(0, b"{", reason="not JSON: bad", age=timedelta(minutes=10))
    old = dead(1, b"{", reason="refused: closed", age=timedelta(days=3), topic=PREFIX + "crm.customers.v1")
    both = [young, old]

    def chosen(**options):
        wanted = make_filter(NOW, **options)
        return [x.address for x in both if wanted.matches(x, PREFIX)]

    assert chosen() == ["0:0", "0:1"] and not make_filter(NOW).active
    assert chosen(reason="NOT json") == ["0:0"]
    assert chosen(topic="crm.customers.v1") == ["0:1"]  # without the prefix
    assert chosen(topic=PREFIX + "crm.orders.v1") == ["0:0"]  # or with it
    assert chosen(since="1h") == ["0:0"]
    assert chosen(older_than="1d") == ["0:1"]
    assert chosen(since="7d", older_than="1h") == ["0:1"]
    assert chosen(reason="refused", since="1h") == []


def test_addresses_name_dead_letters_and_a_bare_offset_must_be_unique():
    letters = [dead(5, b"{", partition=0), dead(5, b"{", partition=2), dead(9, b"{", partition=2)]
    assert [x.address for x in resolve(letters, ["2:5", "9", "2:5"])] == ["2:5", "2:9"]
    with pytest.raises(LookupError, match="0:5, 2:5"):
        resolve(letters, ["5"])
    with pytest.raises(LookupError, match="no dead letter at 1:5"):
        resolve(letters, ["1:5"])


def test_a_still_broken_record_is_refused_with_its_reason_and_a_fixed_one_is_sent():
    broken = paid(cents=-1)
    letter = dead(0, encode(broken))
    (refused,) = plan([letter], {}, SETTINGS)
    assert refused.action == REFUSE and "data.amount_cents" in refused.why and "--fix" in refused.why

    fixed = {**broken, "data": {**broken["data"], "amount_cents": 4200}}
    (sent,) = plan([letter], {}, SETTINGS, fix=orjson.dumps(fixed, option=orjson.OPT_INDENT_2))
    assert sent.action == SEND and sent.fixed and sent.event_id == broken["id"]
    assert orjson.loads(sent.value) == fixed
    assert (sent.topic, sent.key) == (PREFIX + "crm.orders.v1", b"c-1")


def test_a_record_a_rule_refused_goes_back_byte_for_byte():
    raw = encode(paid())
    (sent,) = plan([dead(0, raw, reason="refused: the account is closed")], {}, SETTINGS)
    assert sent.action == SEND and sent.value == raw and not sent.fixed


def test_a_fix_must_keep_the_topic_and_the_key():
    letter = dead(0, encode(paid(cents=-1)))
    elsewhere = build_event(
        "crm.customer.erased",
        {"customer_id": "c-1", "requested_by": "admin", "reason": "gdpr-request"},
        source="/x",
    )
    (wrong_topic,) = plan([letter], {}, SETTINGS, fix=encode(elsewhere))
    assert wrong_topic.action == REFUSE and "belongs on shop1.crm.customers.v1" in wrong_topic.why
    (wrong_key,) = plan([letter], {}, SETTINGS, fix=encode(paid(customer="c-2")))
    assert wrong_key.action == REFUSE and "'c-2' is not the record's key 'c-1'" in wrong_key.why


def test_one_record_dead_lettered_by_two_consumers_is_replayed_once():
    raw = encode(paid())
    by_loyalty = dead(0, raw, original_offset=40, consumer="crm-loyalty", reason="refused: x")
    by_scorer = dead(1, raw, original_offset=40, consumer="crm-scoring", reason="refused: y")
    other = dead(2, encode(paid(customer="c-1")), original_offset=41)
    decisions = plan([by_loyalty, by_scorer, other], {}, SETTINGS)
    assert [[x.address for x in d.letters] for d in decisions] == [["0:0", "0:1"], ["0:2"]]
    with pytest.raises(ValueError, match="one record"):
        plan([by_loyalty, other], {}, SETTINGS, fix=raw)


def test_a_replayed_dead_letter_is_skipped_unless_asked_again():
    letter = dead(0, encode(paid()))
    key, value = marker_record(letter, "e-1", NOW, fixed=False)
    markers = read_markers([value, b"not a marker", None])
    assert key == b"0:0" and list(markers) == ["0:0"]
    (skipped,) = plan([letter], markers, SETTINGS)
    assert skipped.action == SKIP and "2026-11-30T12:00:00Z" in skipped.why
    (again,) = plan([letter], markers, SETTINGS, again=True)
    assert again.action == SEND


def test_a_marker_of_another_record_at_the_same_address_does_not_count():
    """The dead-letter topic was recreated: its offsets start again."""
    old = dead(0, encode(paid()), original_offset=12)
    _, value = marker_record(old, "e-1", NOW, fixed=False)
    new = dead(0, encode(paid()), original_offset=99)
    (decision,) = plan([new], read_markers([value]), SETTINGS)
    assert decision.action == SEND
