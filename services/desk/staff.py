"""The staff directory as the desk asks it: is this user someone a task may be assigned to?
(`Peers.staff_user`, GET /users/{id} on the staff service with the caller's own key;
domain.assignee_refusal says what its answer means, with auth.assignee_problem's rule.) And who
is told when a task comes due: the assignee, or the team's level-1 supervisor (GET /teams/{id}),
read with the desk's own key."""

from __future__ import annotations

from typing import Any

from services.common.peers import Peers, Unavailable

from . import domain


class StaffDirectory:
    def __init__(self, peers: Peers, own_authorization: str | None = None) -> None:
        self.peers = peers
        self.own_authorization = own_authorization

    async def ensure_assignable(self, user_id: str, authorization: str | None) -> None:
        answer = await self.peers.staff_user(user_id, authorization)
        refusal = domain.assignee_refusal(
            user_id, answer.status, answer.body if answer.ok else None, answer.code
        )
        if refusal is not None:
            raise refusal

    async def to_tell(self, task: dict) -> tuple[dict[str, Any] | None, str | None]:
        """(the staff user a task's notice goes to, why nobody); raises Unavailable while the
        directory does not answer, so the watcher's next round asks again."""
        supervisors = None
        if not task["assignee"] and task["team"]:
            team = await self.peers.staff_team(task["team"], self.own_authorization)
            if team.status == "unavailable":
                raise Unavailable(team)
            supervisors = team.body.get("supervisors") if team.ok else None
        user_id = domain.notice_recipient(task, supervisors)
        if user_id is None:
            return None, "the task has no assignee and its team no level-1 supervisor"
        user = await self.peers.staff_user(user_id, self.own_authorization)
        if user.status == "unavailable":
            raise Unavailable(user)
        if not user.ok or not user.body.get("email"):
            return None, f"the staff directory has no email for {user_id}"
        return user.body, None
