"""HTTP entrypoints of the complaints service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel

from services.common.auth import Principal, require
from services.common.clock import PERIOD_RULE
from services.common.endpoints import IdempotencyHeader, answer, body_schema, idempotency, optional_body
from services.common.fields import CustomerId, EntityId, Limit, ShortText, Since, Until, only_params

from .domain import Action, ComplaintFilters, Status
from .models import (
    AssignIn,
    Category,
    ComplaintIn,
    NoteIn,
    ReopenIn,
    ResolveIn,
    Severity,
    SurveyIn,
)
from .service import ComplaintService

router = APIRouter()


def complaints(request: Request) -> ComplaintService:
    return request.app.state.complaints


@router.post("/complaints", status_code=201, tags=["complaints"], summary="Open a complaint")
async def open_complaint(
    body: ComplaintIn,
    request: Request,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: ComplaintService = Depends(complaints),
) -> ORJSONResponse:
    idem = idempotency(key, principal, "POST /complaints", body)
    return answer(await service.open(body, principal.label, idem, request.headers.get("authorization")))


def _transition(action: Action, model: type[BaseModel] | None):
    async def endpoint(
        complaint_id: EntityId,
        request: Request,
        key: IdempotencyHeader = None,
        principal: Principal = Depends(require("agent")),
        service: ComplaintService = Depends(complaints),
    ) -> ORJSONResponse:
        body = await optional_body(request, model)
        idem = idempotency(key, principal, f"POST /complaints/{complaint_id}/{action.value}", body)
        return answer(await service.act(complaint_id, action, body, principal.label, idem))

    endpoint.__name__ = f"{action.value.replace('-', '_')}_complaint"
    return endpoint


for _action, _model, _summary in (
    (Action.ASSIGN, AssignIn, "Assign to an agent (also: the customer answered, work resumes)"),
    (Action.AWAIT_CUSTOMER, NoteIn, "Wait for the customer; the SLA clock pauses"),
    (Action.RESOLVE, ResolveIn, "Resolved; a CSAT survey may follow"),
    (Action.CLOSE, None, "Close for good"),
    (Action.REOPEN, ReopenIn, "Reopen within the reopen window"),
    (Action.ESCALATE, NoteIn, "Escalate one level by hand (1 to 3)"),
):
    extra = (
        {
            "requestBody": {
                "required": _model is ResolveIn or _model is AssignIn or _model is ReopenIn,
                "content": {"application/json": {"schema": body_schema(_model)}},
            }
        }
        if _model
        else None
    )
    router.add_api_route(
        f"/complaints/{{complaint_id}}/{_action.value}",
        _transition(_action, _model),
        methods=["POST"],
        summary=_summary,
        tags=["complaints"],
        openapi_extra=extra,
    )


@router.get(
    "/complaints/stats",
    tags=["complaints"],
    summary="Counts, SLA compliance and medians over a date range",
    description=PERIOD_RULE,
    dependencies=[Depends(only_params("from", "to", "category", "severity"))],
)
async def complaint_stats(
    since: Since = None,
    until: Until = None,
    category: Category | None = None,
    severity: Severity | None = None,
    _: Principal = Depends(require("viewer")),
    service: ComplaintService = Depends(complaints),
) -> dict[str, Any]:
    return await service.complaint_stats(since, until, category, severity)


@router.get("/complaints/{complaint_id}", tags=["complaints"], summary="One complaint with its history")
async def get_complaint(
    complaint_id: EntityId,
    _: Principal = Depends(require("viewer")),
    service: ComplaintService = Depends(complaints),
) -> dict[str, Any]:
    return await service.complaint(complaint_id)


@router.get(
    "/complaints",
    tags=["complaints"],
    summary="Complaints, newest first",
    dependencies=[
        Depends(
            only_params(
                "status",
                "category",
                "severity",
                "breached",
                "assignee",
                "customer_id",
                "from",
                "to",
                "limit",
                "cursor",
            )
        )
    ],
)
async def list_complaints(
    status: Status | None = None,
    category: Category | None = None,
    severity: Severity | None = None,
    breached: bool | None = None,
    assignee: ShortText | None = None,
    customer_id: CustomerId | None = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    cursor: str | None = None,
    _: Principal = Depends(require("viewer")),
    service: ComplaintService = Depends(complaints),
) -> dict[str, Any]:
    filters = ComplaintFilters(status, category, severity, breached, assignee, customer_id, since, until)
    return await service.complaints(filters, limit, cursor)


@router.post("/surveys", status_code=201, tags=["surveys"], summary="A CSAT or general satisfaction survey")
async def submit_survey(
    body: SurveyIn,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: ComplaintService = Depends(complaints),
) -> ORJSONResponse:
    idem = idempotency(key, principal, "POST /surveys", body)
    return answer(await service.submit_survey(body, principal.label, idem))


@router.get(
    "/surveys/stats",
    tags=["surveys"],
    summary="Averages per dimension, CSAT and NPS over a date range",
    description=PERIOD_RULE,
    dependencies=[Depends(only_params("from", "to"))],
)
async def survey_stats(
    since: Since = None,
    until: Until = None,
    _: Principal = Depends(require("viewer")),
    service: ComplaintService = Depends(complaints),
) -> dict[str, Any]:
    return await service.survey_stats(since, until)


@router.get(
    "/surveys",
    tags=["surveys"],
    summary="A customer's surveys, newest first, a page at a time",
    dependencies=[Depends(only_params("customer_id", "limit", "cursor"))],
)
async def list_surveys(
    customer_id: CustomerId,
    limit: Limit = 50,
    cursor: str | None = None,
    _: Principal = Depends(require("viewer")),
    service: ComplaintService = Depends(complaints),
) -> dict[str, Any]:
    return await service.surveys_of(customer_id, limit, cursor)
