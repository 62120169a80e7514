"""The staff directory's MongoDB (`crm_staff`): users, teams and keys (each key by its hash)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClientSession, AsyncIOMotorDatabase

from services.common.clock import as_utc
from services.common.mongo import epoch_seconds, index
from services.common.pagination import page

from .domain import Key, Team, User

USERS = "users"
TEAMS = "teams"
KEYS = "keys"
INDEXES = {
    USERS: [index("team"), index("roles"), index("active")],
    TEAMS: [],
    KEYS: [index("key_hash", unique=True), index("user_id", "created_at")],
}


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def user_from(d: dict[str, Any]) -> User:
    return User(
        d["_id"],
        d["name"],
        d["email"],
        d["locale"],
        tuple(d["roles"]),
        d.get("team"),
        d["active"],
        as_utc(d["created_at"]),
        as_utc(d["updated_at"]),
        _utc(d.get("deactivated_at")),
    )


def user_document(u: User) -> dict[str, Any]:
    return {
        "_id": u.user_id,
        "name": u.name,
        "email": u.email,
        "locale": u.locale,
        "roles": list(u.roles),
        "team": u.team,
        "active": u.active,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
        "deactivated_at": u.deactivated_at,
    }


def team_from(d: dict[str, Any]) -> Team:
    return Team(
        d["_id"], d["name"], tuple(d["supervisors"]), as_utc(d["created_at"]), as_utc(d["updated_at"])
    )


def team_document(t: Team) -> dict[str, Any]:
    return {
        "_id": t.team_id,
        "name": t.name,
        "supervisors": list(t.supervisors),
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    }


def key_from(d: dict[str, Any]) -> Key:
    return Key(
        d["_id"],
        d["user_id"],
        d["label"],
        d["key_hash"],
        as_utc(d["created_at"]),
        datetime.fromtimestamp(d["last_used_ts"], UTC) if d.get("last_used_ts") else None,
        _utc(d.get("revoked_at")),
        d.get("revoked_by"),
    )


def key_document(k: Key) -> dict[str, Any]:
    return {
        "_id": k.key_id,
        "user_id": k.user_id,
        "label": k.label,
        "key_hash": k.key_hash,
        "created_at": k.created_at,
        # Epoch seconds, 0 before the first use: an update writes it and a condition reads it
        # (DatabaseCapabilities.dates_in_updates).
        "last_used_ts": epoch_seconds(k.last_used_at) if k.last_used_at else 0.0,
        "revoked_at": k.revoked_at,
        "revoked_by": k.revoked_by,
    }


class StaffStore:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self.users = db[USERS]
        self.teams = db[TEAMS]
        self.keys = db[KEYS]

    # --- users ---------------------------------------------------------------------------------

    async def user(self, user_id: str, session: AsyncIOMotorClientSession | None = None) -> User | None:
        found = await self.users.find_one({"_id": user_id}, session=session)
        return user_from(found) if found else None

    async def users_by_id(
        self, user_ids: list[str], session: AsyncIOMotorClientSession | None = None
    ) -> dict[str, User]:
        found = await self.users.find({"_id": {"$in": list(user_ids)}}, session=session).to_list(None)
        return {d["_id"]: user_from(d) for d in found}

    async def list_users(
        self, team: str | None, role: str | None, active: bool | None, limit: int, cursor: str | None
    ) -> tuple[list[User], str | None]:
        query: dict[str, Any] = {}
        if team is not None:
            query["team"] = team
        if role is not None:
            query["roles"] = role
        if active is not None:
            query["active"] = active
        docs, next_cursor = await page(self.users, query, [("_id", 1)], limit, cursor)
        return [user_from(d) for d in docs], next_cursor

    async def members(self, team_id: str) -> list[User]:
        docs = await self.users.find({"team": team_id}).sort("_id", 1).to_list(None)
        return [user_from(d) for d in docs]

    async def insert_user(self, user: User, session: AsyncIOMotorClientSession) -> None:
        await self.users.insert_one(user_document(user), session=session)

    async def replace_user(self, user: User, session: AsyncIOMotorClientSession) -> None:
        await self.users.replace_one({"_id": user.user_id}, user_document(user), session=session)

    # --- teams ---------------------------------------------------------------------------------

    async def team(self, team_id: str, session: AsyncIOMotorClientSession | None = None) -> Team | None:
        found = await self.teams.find_one({"_id": team_id}, session=session)
        return team_from(found) if found else None

    async def list_teams(self) -> list[Team]:
        return [team_from(d) for d in await self.teams.find({}).sort("_id", 1).to_list(None)]

    async def insert_team(self, team: Team, session: AsyncIOMotorClientSession) -> None:
        await self.teams.insert_one(team_document(team), session=session)

    async def replace_team(self, team: Team, session: AsyncIOMotorClientSession) -> None:
        await self.teams.replace_one({"_id": team.team_id}, team_document(team), session=session)

    # --- keys ----------------------------------------------------------------------------------

    async def key(self, key_id: str, session: AsyncIOMotorClientSession | None = None) -> Key | None:
        found = await self.keys.find_one({"_id": key_id}, session=session)
        return key_from(found) if found else None

    async def key_by_hash(self, key_hash: str) -> Key | None:
        found = await self.keys.find_one({"key_hash": key_hash})
        return key_from(found) if found else None

    async def keys_of(self, user_id: str, session: AsyncIOMotorClientSession | None = None) -> list[Key]:
        docs = await self.keys.find({"user_id": user_id}, session=session).sort("created_at", 1).to_list(None)
        return [key_from(d) for d in docs]

    async def save_keys(self, keys: list[Key], session: AsyncIOMotorClientSession) -> None:
        for key in keys:
            await self.keys.replace_one({"_id": key.key_id}, key_document(key), upsert=True, session=session)

    async def note_use(self, key_id: str, now: datetime, due_before: datetime) -> None:
        """last used = now, unless another check wrote it since `due_before` (no transaction:
        a lost race loses only a moment of a timestamp)."""
        await self.keys.update_one(
            {"_id": key_id, "last_used_ts": {"$lt": epoch_seconds(due_before)}},
            {"$set": {"last_used_ts": epoch_seconds(now)}},
        )
