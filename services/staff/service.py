"""The staff directory's use cases: users, teams, keys, and answering every service about a key."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClientSession

from services.common.clock import Clock
from services.common.errors import Kind
from services.common.fields import new_id
from services.common.writes import IdempotencyKey, Outcome, Writes

from . import domain
from .domain import Change, StaffError, Team, User
from .events import events_of
from .models import issued_out, key_out, team_out, user_out
from .store import StaffStore


class StaffService:
    def __init__(self, store: StaffStore, writes: Writes, clock: Clock, last_used_seconds: float) -> None:
        self.store = store
        self.writes = writes
        self.clock = clock
        self.last_used_seconds = last_used_seconds

    def _now(self) -> datetime:
        """To the millisecond, as the database keeps it: an answer shows what a read will."""
        now = self.clock.now()
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    async def _save(self, change: Change, session: AsyncIOMotorClientSession, *, new: bool = False) -> None:
        if change.user is not None:
            await (self.store.insert_user if new else self.store.replace_user)(change.user, session)
        if change.team is not None:
            await (self.store.insert_team if new else self.store.replace_team)(change.team, session)
        if change.keys:
            await self.store.save_keys(change.keys, session)

    async def _team_named(self, team_id: str | None, session: AsyncIOMotorClientSession) -> Team | None:
        if team_id is None:
            return None
        team = await self.store.team(team_id, session)
        if team is None:
            raise StaffError(f"no team {team_id}", field="team")
        return team

    # --- users ---------------------------------------------------------------------------------

    async def create_user(self, body: dict[str, Any], idem: IdempotencyKey | None) -> Outcome:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            if await self.store.user(body["id"], session) is not None:
                raise StaffError(f"user {body['id']} exists", Kind.CONFLICT)
            team = await self._team_named(body.get("team"), session)
            change = domain.new_user(
                body["id"], body["name"], body["email"], body["locale"], body["roles"], team, self._now()
            )
            await self._save(change, session, new=True)
            assert change.user is not None
            return Outcome(201, user_out(change.user), events_of(change.facts))

        return await self.writes.run(work, idem)

    async def change_user(
        self, user_id: str, changes: dict[str, Any], by: str, idem: IdempotencyKey | None
    ) -> Outcome:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            user = await self._user(user_id, session)
            team = await self._team_named(changes.get("team"), session) if "team" in changes else None
            keys = await self.store.keys_of(user_id, session) if changes.get("active") is False else []
            change = domain.change_user(user, changes, team, keys, self._now(), by)
            if change.facts:
                await self._save(change, session)
            assert change.user is not None
            return Outcome(200, user_out(change.user), events_of(change.facts))

        return await self.writes.run(work, idem)

    async def _user(self, user_id: str, session: AsyncIOMotorClientSession | None = None) -> User:
        user = await self.store.user(user_id, session)
        if user is None:
            raise StaffError(f"no user {user_id}", Kind.NOT_FOUND)
        return user

    async def user(self, user_id: str) -> dict[str, Any]:
        return user_out(await self._user(user_id))

    async def users(
        self, team: str | None, role: str | None, active: bool | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        found, next_cursor = await self.store.list_users(team, role, active, limit, cursor)
        body: dict[str, Any] = {"items": [user_out(u) for u in found]}
        if next_cursor:
            body["next_cursor"] = next_cursor
        return body

    # --- teams ---------------------------------------------------------------------------------

    async def create_team(self, body: dict[str, Any], idem: IdempotencyKey | None) -> Outcome:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            if await self.store.team(body["id"], session) is not None:
                raise StaffError(f"team {body['id']} exists", Kind.CONFLICT)
            users = await self.store.users_by_id(body["supervisors"], session)
            change = domain.new_team(body["id"], body["name"], body["supervisors"], users, self._now())
            await self._save(change, session, new=True)
            assert change.team is not None
            return Outcome(201, team_out(change.team), events_of(change.facts))

        return await self.writes.run(work, idem)

    async def change_team(
        self, team_id: str, changes: dict[str, Any], idem: IdempotencyKey | None
    ) -> Outcome:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            team = await self.store.team(team_id, session)
            if team is None:
                raise StaffError(f"no team {team_id}", Kind.NOT_FOUND)
            users = await self.store.users_by_id(changes.get("supervisors") or [], session)
            change = domain.change_team(team, changes, users, self._now())
            if change.facts:
                await self._save(change, session)
            assert change.team is not None
            return Outcome(200, team_out(change.team), events_of(change.facts))

        return await self.writes.run(work, idem)

    async def team(self, team_id: str) -> dict[str, Any]:
        team = await self.store.team(team_id)
        if team is None:
            raise StaffError(f"no team {team_id}", Kind.NOT_FOUND)
        return team_out(team, await self.store.members(team_id))

    async def teams(self) -> dict[str, Any]:
        return {"items": [team_out(t) for t in await self.store.list_teams()]}

    # --- keys ----------------------------------------------------------------------------------

    async def issue_key(self, user_id: str, label: str, idem: IdempotencyKey | None) -> Outcome:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            user = await self._user(user_id, session)
            issued, change = domain.issue_key(user, new_id("k"), label, self._now())
            await self._save(change, session)
            return Outcome(201, issued_out(issued, user), events_of(change.facts))

        # The answer holds the key itself: it is not kept for a retry (idempotency), a retry
        # issues another key and the first stays listed, to be revoked.
        del idem
        return await self.writes.run(work)

    async def keys_of(self, user_id: str) -> dict[str, Any]:
        await self._user(user_id)
        return {"items": [key_out(k) for k in await self.store.keys_of(user_id)]}

    async def revoke_key(self, key_id: str, by: str, idem: IdempotencyKey | None) -> Outcome:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            key = await self.store.key(key_id, session)
            if key is None:
                raise StaffError(f"no key {key_id}", Kind.NOT_FOUND)
            change = domain.revoke(key, self._now(), by)
            if change.facts:
                await self._save(change, session)
            return Outcome(200, key_out(change.keys[0]), events_of(change.facts))

        return await self.writes.run(work, idem)

    async def key_answer(self, key_hash: str) -> dict[str, Any] | None:
        """What a service asking about a key learns (None: it does not count), and the key's
        last use written down (at most once per `last_used_seconds`)."""
        key = await self.store.key_by_hash(key_hash)
        user = await self.store.user(key.user_id) if key is not None else None
        if key is None or user is None or not domain.key_counts(key, user):
            return None
        now = self._now()
        if domain.last_use_due(key.last_used_at, now, self.last_used_seconds):
            await self.store.note_use(key.key_id, now, now - timedelta(seconds=self.last_used_seconds))
        return domain.key_answer(key, user)
