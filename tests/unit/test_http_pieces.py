"""Cursors and API keys, without a server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from services.common.auth import ApiKeys, new_key, write_keys_file
from services.common.pagination import after, both, decode_cursor, encode_cursor
from services.common.problems import Problem


def test_cursor_round_trips_times_and_ids():
    when = datetime(2026, 11, 22, 7, 0, 1, 5, tzinfo=UTC)
    assert decode_cursor(encode_cursor([when, "o-1"]), 2) == [when, "o-1"]


@pytest.mark.parametrize("bad", ["x", "%%%", encode_cursor(["only-one"]), "eyJhIjoxfQ"])
def test_malformed_cursor_is_a_400(bad):
    with pytest.raises(Problem) as caught:
        decode_cursor(bad, 2)
    assert caught.value.status == 400


def test_keyset_filters_continue_after_the_last_row_nearest_first():
    assert after([("placed_at", -1), ("_id", -1)], [5, "b"]) == [
        {"placed_at": 5, "_id": {"$lt": "b"}},
        {"placed_at": {"$lt": 5}},
    ]


def test_a_page_filter_keeps_the_clients_conditions():
    assert both({"status": "paid", "total": {"$gte": 10}}, {"total": {"$lt": 50}}) == {
        "status": "paid",
        "total": {"$gte": 10, "$lt": 50},
    }
    # conditions that do not merge keep both, whole
    query, run = {"total": {"$lt": 20}}, {"total": {"$lt": 50}}
    assert both(query, run) == {"$and": [query, run]}
    assert both({"total": 7}, run) == {"$and": [{"total": 7}, run]}


def test_keys_file_holds_hashes_and_roles_rank(tmp_path):
    keys = {"viewer": new_key("viewer"), "admin": new_key("admin")}
    path = tmp_path / "keys"
    write_keys_file(path, keys)
    assert keys["admin"] not in path.read_text()
    table = ApiKeys(path)
    assert asyncio.run(table.authenticate(f"Bearer {keys['admin']}")).can("agent")
    assert not asyncio.run(table.authenticate(f"Bearer {keys['viewer']}")).can("agent")
    for header in (None, "Basic abc", f"Bearer {keys['admin']}x"):
        with pytest.raises(Problem) as caught:
            asyncio.run(table.authenticate(header))
        assert caught.value.status == 401


def test_a_period_is_bounded_and_filled_in_from_either_end():
    from datetime import UTC, datetime, timedelta

    from services.common.clock import MAX_PERIOD, bounded_period
    from services.common.errors import RuleBroken

    now = datetime(2026, 11, 22, tzinfo=UTC)
    assert bounded_period(None, None, now) == (now - MAX_PERIOD, now)
    assert bounded_period(now, None, now) == (now, now + MAX_PERIOD)
    assert bounded_period(None, now, now) == (now - MAX_PERIOD, now)
    assert bounded_period(now - timedelta(days=366), now, now) == (now - timedelta(days=366), now)
    for since, until in ((now - timedelta(days=367), now), (now, now), (now, now - timedelta(days=1))):
        try:
            bounded_period(since, until, now)
        except RuleBroken:
            continue
        raise AssertionError(f"{since}..{until} accepted")
