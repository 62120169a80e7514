"""The staff directory's rules (no I/O): who a user is, what a team needs, when a key counts.

A user holds one or more roles of auth.USER_ROLES and belongs to at most one team; a team
names its supervisors by escalation level (the first is level 1's). A key is issued to an
active user, shown once and kept only as its SHA-256; it counts while neither it is revoked
nor its user deactivated (deactivating revokes every key the user holds)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from services.common.auth import ROLES, USER_ROLES, hash_key, highest_role, new_user_key
from services.common.errors import Kind, RuleBroken

LOCALES = ("zh-CN", "en")
ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,39}$"
_ID = re.compile(ID_PATTERN)
# Enough to catch a typo; the mail relay is the judge of the rest.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# A team supervisor escalates cases: the supervisor role (or admin, above it) is needed.
SUPERVISING_ROLES = ("supervisor", "admin")


class StaffError(RuleBroken):
    pass


@dataclass(frozen=True)
class User:
    user_id: str
    name: str
    email: str
    locale: str
    roles: tuple[str, ...]
    team: str | None
    active: bool
    created_at: datetime
    updated_at: datetime
    deactivated_at: datetime | None = None

    @property
    def role(self) -> str:
        return highest_role(self.roles)


@dataclass(frozen=True)
class Team:
    team_id: str
    name: str
    supervisors: tuple[str, ...]  # index i: the supervisor of escalation level i + 1
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Key:
    key_id: str
    user_id: str
    label: str
    key_hash: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None


@dataclass(frozen=True)
class Issued:
    """A key just issued: the one time its plain text exists."""

    key: Key
    plain: str


@dataclass
class Change:
    """What a write did: the entities to store and the facts to publish."""

    user: User | None = None
    team: Team | None = None
    keys: list[Key] = field(default_factory=list)
    facts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise StaffError(
            f"{what} must be 2 to 40 of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
            field=what,
        )
    if value in ROLES:
        # The keys file's keys are named by their role, and a name must say who acted.
        raise StaffError(f"{what} {value!r} is a role's name, which names the keys file's keys", field=what)
    return value


def check_roles(roles: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = [role for role in roles if role not in USER_ROLES]
    if unknown:
        raise StaffError(
            f"unknown role(s) {', '.join(unknown)}; a user's roles are {', '.join(USER_ROLES)}", field="roles"
        )
    if not roles:
        raise StaffError("a user holds at least one role", field="roles")
    if len(set(roles)) != len(roles):
        raise StaffError("a role is named twice", field="roles")
    return tuple(role for role in USER_ROLES if role in roles)  # one order, whatever was sent


def check_email(value: str) -> str:
    if not _EMAIL.match(value) or len(value) > 254:
        raise StaffError(f"{value!r} is not an email address", field="email")
    return value


def check_locale(value: str) -> str:
    if value not in LOCALES:
        raise StaffError(f"locale is one of {', '.join(LOCALES)}", field="locale")
    return value


def new_user(
    user_id: str, name: str, email: str, locale: str, roles: list[str], team: Team | None, now: datetime
) -> Change:
    user = User(
        check_id(user_id, "id"),
        name,
        check_email(email),
        check_locale(locale),
        check_roles(roles),
        team.team_id if team else None,
        True,
        now,
        now,
    )
    return Change(user=user, facts=[("crm.staff.user_created", user_fact(user))])


def change_user(
    user: User, changes: dict[str, Any], team: Team | None, keys: list[Key], now: datetime, by: str
) -> Change:
    """`changes`: name, email, locale, roles, team (the id, checked to exist: `team`), active.
    Deactivating revokes every key the user holds; activating again issues none back."""
    updated = user
    if "name" in changes:
        updated = replace(updated, name=changes["name"])
    if "email" in changes:
        updated = replace(updated, email=check_email(changes["email"]))
    if "locale" in changes:
        updated = replace(updated, locale=check_locale(changes["locale"]))
    if "roles" in changes:
        updated = replace(updated, roles=check_roles(changes["roles"]))
    if "team" in changes:
        updated = replace(updated, team=team.team_id if team else None)
    change = Change()
    deactivating = changes.get("active") is False and user.active
    if "active" in changes and changes["active"] is not user.active:
        updated = replace(updated, active=changes["active"], deactivated_at=now if deactivating else None)
    if updated == user:
        return Change(user=user)  # nothing to change: nothing published
    updated = replace(updated, updated_at=now)
    change.user = updated
    change.facts.append(
        ("crm.staff.user_deactivated" if deactivating else "crm.staff.user_changed", user_fact(updated))
    )
    if deactivating:
        for key in keys:
            revoked = revoke(key, now, by)
            if revoked.facts:
                change.keys += revoked.keys
                change.facts += revoked.facts
    return change


def user_fact(user: User) -> dict[str, Any]:
    """What the staff topic tells of a user (not the email: it stays in the directory)."""
    return {
        "user_id": user.user_id,
        "name": user.name,
        "locale": user.locale,
        "roles": list(user.roles),
        "team": user.team,
        "active": user.active,
        "at": user.updated_at,
    }


def supervisor_problems(supervisors: list[str], users: dict[str, User]) -> list[str]:
    """Why the named supervisors cannot supervise a team (empty: they can)."""
    problems = []
    if len(set(supervisors)) != len(supervisors):
        problems.append("a supervisor is named twice")
    for level, user_id in enumerate(supervisors, 1):
        user = users.get(user_id)
        if user is None:
            problems.append(f"level {level}: no user {user_id}")
        elif not user.active:
            problems.append(f"level {level}: {user_id} is deactivated")
        elif not set(user.roles) & set(SUPERVISING_ROLES):
            problems.append(f"level {level}: {user_id} does not hold the supervisor role")
    return problems


def new_team(
    team_id: str, name: str, supervisors: list[str], users: dict[str, User], now: datetime
) -> Change:
    check_id(team_id, "id")
    _check_supervisors(supervisors, users)
    team = Team(team_id, name, tuple(supervisors), now, now)
    return Change(team=team, facts=[("crm.staff.team_created", team_fact(team))])


def change_team(team: Team, changes: dict[str, Any], users: dict[str, User], now: datetime) -> Change:
    updated = team
    if "name" in changes:
        updated = replace(updated, name=changes["name"])
    if "supervisors" in changes:
        _check_supervisors(changes["supervisors"], users)
        updated = replace(updated, supervisors=tuple(changes["supervisors"]))
    if updated == team:
        return Change(team=team)
    updated = replace(updated, updated_at=now)
    return Change(team=updated, facts=[("crm.staff.team_changed", team_fact(updated))])


def _check_supervisors(supervisors: list[str], users: dict[str, User]) -> None:
    problems = supervisor_problems(supervisors, users)
    if problems:
        raise StaffError("; ".join(problems), field="supervisors")


def team_fact(team: Team) -> dict[str, Any]:
    return {
        "team_id": team.team_id,
        "name": team.name,
        "supervisors": list(team.supervisors),
        "at": team.updated_at,
    }


def issue_key(user: User, key_id: str, label: str, now: datetime) -> tuple[Issued, Change]:
    if not user.active:
        raise StaffError(f"{user.user_id} is deactivated: no key is issued to them", Kind.CONFLICT)
    plain = new_user_key()
    key = Key(key_id, user.user_id, label, hash_key(plain), now)
    fact = {"key_id": key_id, "user_id": user.user_id, "label": label, "at": now}
    return Issued(key, plain), Change(keys=[key], facts=[("crm.staff.key_issued", fact)])


def revoke(key: Key, now: datetime, by: str) -> Change:
    """Revoked once: revoking a revoked key changes nothing and tells nobody."""
    if key.revoked_at is not None:
        return Change(keys=[key])
    revoked = replace(key, revoked_at=now, revoked_by=by)
    fact = {"key_id": key.key_id, "user_id": key.user_id, "label": key.label, "by": by, "at": now}
    return Change(keys=[revoked], facts=[("crm.staff.key_revoked", fact)])


def key_counts(key: Key | None, user: User | None) -> bool:
    """Whether a key authenticates: known, not revoked, its user active."""
    return key is not None and key.revoked_at is None and user is not None and user.active


def key_answer(key: Key, user: User) -> dict[str, Any]:
    """What every service learns of a key that counts (GET /auth/keys/{hash})."""
    return {"user": user.user_id, "roles": list(user.roles), "team": user.team, "key_id": key.key_id}


def last_use_due(last_used_at: datetime | None, now: datetime, every_seconds: float) -> bool:
    """Whether this use is written down: at most once per `every_seconds` (each check is a read)."""
    return last_used_at is None or now - last_used_at >= timedelta(seconds=every_seconds)


def escalation_supervisor(team: Team, level: int) -> str | None:
    """The supervisor of escalation `level` (1-based); beyond the named levels, the last one."""
    if not team.supervisors or level < 1:
        return None
    return team.supervisors[min(level, len(team.supervisors)) - 1]
