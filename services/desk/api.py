"""HTTP entrypoints of the desk: translate the request, call the service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import ORJSONResponse

from services.common.auth import Principal, require
from services.common.endpoints import IdempotencyHeader, answer, idempotency
from services.common.fields import CustomerId, EntityId, Limit, Since, Until, only_params

from . import domain
from .models import NoteChange, NoteIn, TaskDone, TaskIn, TaskStatus
from .service import DeskService

router = APIRouter()


def desk(request: Request) -> DeskService:
    return request.app.state.desk


# --- notes ---------------------------------------------------------------------------------------


@router.post(
    "/customers/{customer_id}/notes", status_code=201, tags=["notes"], summary="Leave a note on a customer"
)
async def add_note(
    customer_id: CustomerId,
    body: NoteIn,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: DeskService = Depends(desk),
) -> ORJSONResponse:
    idem = idempotency(key, principal, f"POST /customers/{customer_id}/notes", body)
    return answer(await service.add_note(customer_id, body, principal.label, idem))


@router.get("/customers/{customer_id}/notes", tags=["notes"], summary="A customer's notes, pinned first")
async def customer_notes(
    customer_id: CustomerId,
    limit: Limit = 100,
    _: Principal = Depends(require("viewer")),
    service: DeskService = Depends(desk),
) -> dict[str, Any]:
    return await service.notes(customer_id, limit)


@router.patch("/notes/{note_id}", tags=["notes"], summary="Pin, unpin or rewrite a note")
async def change_note(
    note_id: EntityId,
    body: NoteChange,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: DeskService = Depends(desk),
) -> ORJSONResponse:
    idem = idempotency(key, principal, f"PATCH /notes/{note_id}", body)
    return answer(await service.change_note(note_id, body, idem))


# --- tasks ---------------------------------------------------------------------------------------


@router.post("/tasks", status_code=201, tags=["tasks"], summary="Open a task (a callback, a follow-up)")
async def create_task(
    body: TaskIn,
    request: Request,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: DeskService = Depends(desk),
) -> ORJSONResponse:
    idem = idempotency(key, principal, "POST /tasks", body)
    # the assignee is checked in the staff directory with the caller's own key
    authorization = request.headers.get("authorization")
    return answer(await service.create_task(body, principal.label, idem, authorization))


@router.get(
    "/tasks",
    tags=["tasks"],
    summary="Tasks, soonest due first, by assignee, team, customer and status (overdue: the late list)",
    dependencies=[Depends(only_params("assignee", "team", "customer_id", "status", "limit", "cursor"))],
)
async def list_tasks(
    assignee: EntityId | None = None,
    team: EntityId | None = None,
    customer_id: CustomerId | None = None,
    status: TaskStatus | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
    _: Principal = Depends(require("viewer")),
    service: DeskService = Depends(desk),
) -> dict[str, Any]:
    return await service.tasks(assignee, team, customer_id, status, limit, cursor)


@router.get("/tasks/{task_id}", tags=["tasks"], summary="One task")
async def get_task(
    task_id: EntityId, _: Principal = Depends(require("viewer")), service: DeskService = Depends(desk)
) -> dict[str, Any]:
    return await service.task(task_id)


@router.post("/tasks/{task_id}/complete", tags=["tasks"], summary="Mark a task done, with its outcome")
async def complete_task(
    task_id: EntityId,
    body: TaskDone,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: DeskService = Depends(desk),
) -> ORJSONResponse:
    idem = idempotency(key, principal, f"POST /tasks/{task_id}/complete", body)
    return answer(await service.complete_task(task_id, body, principal.label, idem))


# --- the timeline --------------------------------------------------------------------------------


@router.get(
    "/customers/{customer_id}/timeline",
    tags=["timeline"],
    summary="Every order, case, survey, interaction, message, loyalty entry, note and task, newest first",
    dependencies=[Depends(only_params("type", "limit", "cursor"))],
)
async def customer_timeline(
    customer_id: CustomerId,
    type: Annotated[
        list[str] | None, Query(description="only these event types, e.g. crm.order.placed")
    ] = None,
    limit: Limit = 50,
    cursor: str | None = None,
    _: Principal = Depends(require("viewer")),
    service: DeskService = Depends(desk),
) -> dict[str, Any]:
    return await service.timeline(customer_id, type, limit, cursor)


# --- service reports -----------------------------------------------------------------------------


@router.get(
    "/reports/service",
    tags=["reports"],
    summary="Cases opened in a period by agent, team, kind, category, department or root cause: volume, "
    "response and resolution times, SLA compliance, reopen rate, compensation, CSAT",
    dependencies=[Depends(only_params("from", "to", "by"))],
)
async def service_report(
    by: Annotated[str | None, Query(description=", ".join(domain.DIMENSIONS))] = None,
    since: Since = None,
    until: Until = None,
    _: Principal = Depends(require("analyst")),
    service: DeskService = Depends(desk),
) -> dict[str, Any]:
    return await service.service_report(domain.report_dimension(by), since, until)
