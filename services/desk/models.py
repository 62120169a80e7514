"""The desk's API shapes."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, model_validator

from services.common.fields import CustomerId, EntityId, LongText, ShortText, Strict

from .domain import TASK_KINDS

TaskKind = Literal[TASK_KINDS]  # type: ignore[valid-type]
TaskStatus = Literal["open", "due", "overdue", "done"]


class NoteIn(Strict):
    text: LongText
    pinned: bool = False


class NoteChange(Strict):
    pinned: bool | None = None
    text: LongText | None = None


class TaskIn(Strict):
    customer_id: CustomerId
    kind: TaskKind = "callback"
    title: ShortText
    due_at: AwareDatetime
    # a staff user (GET /users/{id} on the staff service), or a team's queue, or both
    assignee: EntityId | None = None
    team: EntityId | None = None
    case_id: EntityId | None = None

    @model_validator(mode="after")
    def someone(self) -> TaskIn:
        if self.assignee is None and self.team is None:
            raise ValueError("a task needs an assignee or a team")
        return self


class TaskDone(Strict):
    outcome: ShortText
