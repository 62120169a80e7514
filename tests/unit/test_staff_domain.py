"""The staff directory's rules and how every service authenticates a user's key, without I/O."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.common.auth import (
    ROLES,
    ApiKeys,
    DirectoryUnavailable,
    assignee_problem,
    hash_key,
    highest_role,
    new_key,
    new_user_key,
    write_keys_file,
)
from services.common.errors import Kind
from services.common.problems import Problem
from services.staff import domain
from services.staff.domain import StaffError

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def user(
    user_id: str = "li.na", roles=("agent",), active: bool = True, team: str | None = None
) -> domain.User:
    return domain.User(user_id, "Li Na", "li.na@shop.example", "zh-CN", tuple(roles), team, active, NOW, NOW)


def test_roles_rank_viewer_analyst_agent_supervisor_admin_and_the_highest_counts():
    assert ROLES == ("viewer", "analyst", "agent", "supervisor", "admin")
    assert highest_role(["agent", "supervisor"]) == "supervisor"
    assert highest_role(["analyst"]) == "analyst"
    assert highest_role(["admin", "agent"]) == "admin"
    assert highest_role([]) == "viewer"
    assert user(roles=("supervisor", "agent")).role == "supervisor"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("user_id", "Li", "2 to 40 of a-z"),
        ("user_id", "a", "2 to 40 of a-z"),
        ("user_id", "-lead", "starting with a letter or digit"),
        ("user_id", "admin", "a role's name"),
        ("roles", [], "at least one role"),
        ("roles", ["viewer"], "unknown role"),
        ("roles", ["agent", "agent"], "named twice"),
        ("email", "li.na.shop.example", "not an email"),
        ("locale", "fr", "locale"),
    ],
)
def test_a_user_breaking_a_rule_is_refused_with_the_field(field, value, message):
    args = {
        "user_id": "li.na",
        "name": "Li Na",
        "email": "li@shop.example",
        "locale": "en",
        "roles": ["agent"],
    }
    args[field] = value
    with pytest.raises(StaffError) as refused:
        domain.new_user(**args, team=None, now=NOW)
    assert (
        message in refused.value.detail.replace("id must", "user id must") or message in refused.value.detail
    )


def test_work_is_assigned_only_to_an_active_agent_or_above():
    def person(roles, active=True):
        return {"id": "li.na", "roles": roles, "active": active}

    assert assignee_problem("li.na", person(["agent"])) is None
    assert assignee_problem("li.na", person(["supervisor"])) is None
    assert assignee_problem("li.na", person(["analyst"])) == "li.na holds no agent role (roles: analyst)"
    assert assignee_problem("li.na", person(["agent"], active=False)) == "li.na is deactivated"
    assert assignee_problem("li.na", None) == "no staff user li.na"


def test_roles_are_kept_in_one_order_whatever_was_sent():
    change = domain.new_user("li.na", "Li Na", "li@shop.example", "en", ["admin", "agent"], None, NOW)
    assert change.user.roles == ("agent", "admin")
    assert [t for t, _ in change.facts] == ["crm.staff.user_created"]
    assert "email" not in change.facts[0][1]  # the address stays in the directory


def test_deactivating_revokes_every_key_once_and_publishes_each():
    held = user()
    keys = [
        domain.Key("k-1", "li.na", "laptop", "a" * 64, NOW),
        domain.Key(
            "k-2", "li.na", "phone", "b" * 64, NOW, revoked_at=NOW - timedelta(days=1), revoked_by="admin"
        ),
    ]
    later = NOW + timedelta(hours=1)
    change = domain.change_user(held, {"active": False}, None, keys, later, "boss")
    assert change.user.active is False and change.user.deactivated_at == later
    assert [k.key_id for k in change.keys] == ["k-1"] and change.keys[0].revoked_by == "boss"
    assert [t for t, _ in change.facts] == ["crm.staff.user_deactivated", "crm.staff.key_revoked"]
    # activated again: no key comes back
    back = domain.change_user(change.user, {"active": True}, None, [], later, "boss")
    assert back.user.active is True and back.user.deactivated_at is None and back.keys == []


def test_a_change_that_changes_nothing_publishes_nothing():
    held = user()
    assert domain.change_user(held, {"name": "Li Na", "roles": ["agent"]}, None, [], NOW, "boss").facts == []


def test_a_team_names_active_supervisors_by_level():
    users = {
        "wang": user("wang", ("supervisor",)),
        "zhao": user("zhao", ("agent", "supervisor")),
        "li": user("li", ("agent",)),
        "gone": user("gone", ("supervisor",), active=False),
    }
    team = domain.new_team("east", "East", ["wang", "zhao"], users, NOW).team
    assert domain.escalation_supervisor(team, 1) == "wang"
    assert domain.escalation_supervisor(team, 2) == "zhao"
    assert domain.escalation_supervisor(team, 3) == "zhao"  # beyond the named levels: the last
    assert domain.supervisor_problems(["li", "gone", "nobody", "wang", "wang"], users) == [
        "a supervisor is named twice",
        "level 1: li does not hold the supervisor role",
        "level 2: gone is deactivated",
        "level 3: no user nobody",
    ]
    with pytest.raises(StaffError):
        domain.new_team("west", "West", ["li"], users, NOW)


def test_a_key_is_issued_only_to_an_active_user_and_kept_as_its_hash():
    issued, change = domain.issue_key(user(), "k-9", "laptop", NOW)
    assert issued.plain.startswith("crm_user_") and issued.key.key_hash == hash_key(issued.plain)
    assert issued.plain not in str(change.facts)
    with pytest.raises(StaffError) as refused:
        domain.issue_key(user(active=False), "k-10", "laptop", NOW)
    assert refused.value.kind == Kind.CONFLICT


def test_a_key_counts_while_neither_it_nor_its_user_is_gone():
    key = domain.Key("k-1", "li.na", "laptop", "a" * 64, NOW)
    assert domain.key_counts(key, user())
    assert not domain.key_counts(key, user(active=False))
    assert not domain.key_counts(domain.revoke(key, NOW, "boss").keys[0], user())
    assert not domain.key_counts(None, user())
    assert domain.revoke(domain.revoke(key, NOW, "boss").keys[0], NOW, "boss").facts == []


def test_last_use_is_written_at_most_once_per_interval():
    assert domain.last_use_due(None, NOW, 60)
    assert not domain.last_use_due(NOW - timedelta(seconds=30), NOW, 60)
    assert domain.last_use_due(NOW - timedelta(seconds=60), NOW, 60)


class Directory:
    """The staff directory as a service sees it: answers by hash, or does not answer."""

    def __init__(self) -> None:
        self.known: dict[str, dict] = {}
        self.down = False
        self.asked = 0

    async def __call__(self, digest: str) -> dict | None:
        self.asked += 1
        if self.down:
            raise DirectoryUnavailable("connection refused")
        return self.known.get(digest)


def keys_with_directory(tmp_path, cache: float = 5.0, stale: float = 600.0):
    admin = new_key("admin")
    write_keys_file(tmp_path / "keys", {"admin": admin})
    directory, now = Directory(), [1000.0]
    keys = ApiKeys(tmp_path / "keys", directory, cache, stale, clock=lambda: now[0])
    return keys, directory, now, admin


def status_of(keys: ApiKeys, key: str) -> int | str:
    try:
        return asyncio.run(keys.authenticate(f"Bearer {key}")).label
    except Problem as refused:
        return refused.status


def test_a_user_key_is_asked_about_once_per_cache_period_and_a_revocation_holds_after_it(tmp_path):
    keys, directory, now, admin = keys_with_directory(tmp_path)
    key = new_user_key()
    directory.known[hash_key(key)] = {
        "user": "li.na",
        "roles": ["agent", "supervisor"],
        "team": "east",
        "key_id": "k-1",
    }
    principal = asyncio.run(keys.authenticate(f"Bearer {key}"))
    assert (principal.user, principal.label, principal.role, principal.team) == (
        "li.na",
        "li.na",
        "supervisor",
        "east",
    )
    assert principal.can("agent") and not principal.can("admin")
    del directory.known[hash_key(key)]  # revoked
    now[0] += 4.9
    assert status_of(keys, key) == "li.na" and directory.asked == 1  # still within the cache
    now[0] += 0.2
    assert status_of(keys, key) == 401 and directory.asked == 2
    # the keys file's admin and a token that is no user key never ask
    assert status_of(keys, admin) == "admin" and status_of(keys, "nope") == 401 and directory.asked == 2


def test_while_the_directory_is_away_known_keys_work_and_others_get_503(tmp_path):
    keys, directory, now, admin = keys_with_directory(tmp_path, stale=60)
    known, unseen = new_user_key(), new_user_key()
    for key in (known, unseen):
        directory.known[hash_key(key)] = {"user": "li.na", "roles": ["agent"], "team": None, "key_id": "k"}
    assert status_of(keys, known) == "li.na"
    directory.down = True
    now[0] += 30
    assert status_of(keys, known) == "li.na"  # stale, but what it said last
    assert status_of(keys, unseen) == 503
    assert status_of(keys, admin) == "admin"
    now[0] += 31
    assert status_of(keys, known) == 503  # too old to stand in any longer
    directory.down = False
    assert status_of(keys, unseen) == "li.na"
