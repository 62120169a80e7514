"""The staff directory as the desk asks it: is this user someone a task may be assigned to?
(`GET /users/{id}` on the staff service, with the caller's own key; domain.assignee_refusal
holds the rule.)"""

from __future__ import annotations

from services.common.peers import Peers

from . import domain


class StaffDirectory:
    def __init__(self, peers: Peers, check: bool = True) -> None:
        self.peers = peers
        # off only where the shop runs without the staff directory (settings.desk_check_assignees)
        self.check = check

    async def ensure_assignable(self, user_id: str, authorization: str | None) -> None:
        if not self.check:
            return
        answer = await self.peers.get("staff", f"/users/{user_id}", authorization)
        refusal = domain.assignee_refusal(user_id, answer.status, answer.body if answer.ok else None)
        if refusal is not None:
            raise refusal
