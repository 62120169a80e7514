"""Server-side sessions in MongoDB (database crm_console). The cookie holds only an opaque random
id; the person's API key, role and CSRF token stay here. A session ends on sign-out, or after
`idle` without a request (each request moves the expiry on)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from motor.motor_asyncio import AsyncIOMotorDatabase

from services.common.mongo import index

from .domain import Session

SESSIONS = "sessions"
# Expired sessions are removed on the service's own clock (each sign-in sweeps them), not by a
# TTL index, whose wall clock would disagree with a rehearsal's or a test's clock.
# Expiry is kept as epoch seconds: a plain number compares and updates the same everywhere.
INDEXES = {SESSIONS: [index("expires_ts")]}


class SessionStore:
    def __init__(self, db: AsyncIOMotorDatabase, idle: timedelta) -> None:
        self.sessions = db[SESSIONS]
        self.idle = idle

    async def create(self, api_key: str, role: str, label: str, language: str, now: datetime) -> Session:
        await self.sessions.delete_many({"expires_ts": {"$lte": now.timestamp()}})
        session = Session(
            secrets.token_urlsafe(32),
            api_key,
            role,
            label,
            secrets.token_urlsafe(32),
            language,
            now + self.idle,
        )
        await self.sessions.insert_one(
            {
                "_id": session.session_id,
                "api_key": api_key,
                "role": role,
                "label": label,
                "csrf": session.csrf,
                "language": language,
                "created_at": now,
                "expires_ts": session.expires_at.timestamp(),
            }
        )
        return session

    async def get(self, session_id: str, now: datetime) -> Session | None:
        """The live session, its expiry moved on; None when unknown or expired."""
        doc = await self.sessions.find_one({"_id": session_id})
        if doc is None:
            return None
        if doc["expires_ts"] <= now.timestamp():
            await self.sessions.delete_one({"_id": session_id})
            return None
        expires = (now + self.idle).timestamp()
        # Writing on every request would be a write per page; a minute's slack is enough.
        if expires - doc["expires_ts"] > 60:
            await self.sessions.update_one({"_id": session_id}, {"$set": {"expires_ts": expires}})
            doc["expires_ts"] = expires
        return Session(
            doc["_id"],
            doc["api_key"],
            doc["role"],
            doc["label"],
            doc["csrf"],
            doc["language"],
            datetime.fromtimestamp(doc["expires_ts"], UTC),
        )

    async def set_language(self, session_id: str, language: str) -> None:
        await self.sessions.update_one({"_id": session_id}, {"$set": {"language": language}})

    async def delete(self, session_id: str) -> None:
        await self.sessions.delete_one({"_id": session_id})
