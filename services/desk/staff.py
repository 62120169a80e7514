"""The staff directory as the desk asks it: is this user someone a task may be assigned to?
(`Peers.staff_user`, GET /users/{id} on the staff service with the caller's own key;
domain.assignee_refusal says what its answer means, with auth.assignee_problem's rule.)"""

from __future__ import annotations

from services.common.peers import Peers

from . import domain


class StaffDirectory:
    def __init__(self, peers: Peers) -> None:
        self.peers = peers

    async def ensure_assignable(self, user_id: str, authorization: str | None) -> None:
        answer = await self.peers.staff_user(user_id, authorization)
        refusal = domain.assignee_refusal(
            user_id, answer.status, answer.body if answer.ok else None, answer.code
        )
        if refusal is not None:
            raise refusal
