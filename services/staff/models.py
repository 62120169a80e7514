"""Request and response shapes of the staff API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from services.common.auth import USER_ROLES
from services.common.clock import to_rfc3339
from services.common.fields import ShortText, Strict

from .domain import ID_PATTERN, Issued, Key, Team, User

Locale = Literal["zh-CN", "en"]
Role = Literal[USER_ROLES]  # type: ignore[valid-type]
StaffId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Email = Annotated[str, StringConstraints(min_length=3, max_length=254)]


class UserIn(Strict):
    id: StaffId = Field(description="The login: 2 to 40 of a-z, 0-9, '.', '_', '-'")
    name: ShortText
    email: Email
    locale: Locale = "zh-CN"
    roles: Annotated[list[Role], Field(min_length=1, max_length=len(USER_ROLES))]
    team: StaffId | None = None


class UserPatch(Strict):
    name: ShortText | None = None
    email: Email | None = None
    locale: Locale | None = None
    roles: Annotated[list[Role], Field(min_length=1, max_length=len(USER_ROLES))] | None = None
    team: StaffId | None = Field(None, description="null takes the user out of their team")
    active: bool | None = Field(None, description="false deactivates the user and revokes their keys")

    def changes(self) -> dict[str, Any]:
        """The fields sent (team: null is a change; other nulls are not allowed)."""
        sent = self.model_dump(exclude_unset=True)
        for name, value in sent.items():
            if value is None and name != "team":
                raise ValueError(name)
        return sent


class TeamIn(Strict):
    id: StaffId
    name: ShortText
    supervisors: Annotated[list[StaffId], Field(max_length=10)] = Field(
        default_factory=list, description="User ids; index i is the supervisor of escalation level i + 1"
    )


class TeamPatch(Strict):
    name: ShortText | None = None
    supervisors: Annotated[list[StaffId], Field(max_length=10)] | None = None


class KeyIn(Strict):
    label: ShortText = Field(description="What the key is for, e.g. 'laptop' or 'call-centre PC 3'")


def user_out(user: User) -> dict[str, Any]:
    return {
        "id": user.user_id,
        "name": user.name,
        "email": user.email,
        "locale": user.locale,
        "roles": list(user.roles),
        "role": user.role,
        "team": user.team,
        "active": user.active,
        "created_at": to_rfc3339(user.created_at),
        "updated_at": to_rfc3339(user.updated_at),
        "deactivated_at": _time(user.deactivated_at),
    }


def team_out(team: Team, members: list[User] | None = None) -> dict[str, Any]:
    body = {
        "id": team.team_id,
        "name": team.name,
        "supervisors": list(team.supervisors),
        "created_at": to_rfc3339(team.created_at),
        "updated_at": to_rfc3339(team.updated_at),
    }
    if members is not None:
        body["members"] = [
            {"id": u.user_id, "name": u.name, "roles": list(u.roles), "active": u.active} for u in members
        ]
    return body


def key_out(key: Key) -> dict[str, Any]:
    """A key as listed: never its hash, never its text."""
    return {
        "key_id": key.key_id,
        "user": key.user_id,
        "label": key.label,
        "created_at": to_rfc3339(key.created_at),
        "last_used_at": _time(key.last_used_at),
        "revoked_at": _time(key.revoked_at),
        "revoked_by": key.revoked_by,
    }


def issued_out(issued: Issued, user: User) -> dict[str, Any]:
    """The one answer that holds the key itself."""
    return {
        **key_out(issued.key),
        "key": issued.plain,
        "roles": list(user.roles),
        "role": user.role,
        "note": "the key is shown this once; only its hash is kept",
    }


def _time(value: Any) -> str | None:
    return to_rfc3339(value) if value is not None else None
