"""HTTP entrypoints of the complaints service, the case desk: `/cases` for every kind (one
intake, the queues, the complaint procedure), `/complaints` as complaints always had it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel

from services.common.auth import Principal, require
from services.common.clock import PERIOD_RULE
from services.common.endpoints import (
    IdempotencyHeader,
    RequiredIdempotencyHeader,
    answer,
    body_schema,
    idempotency,
    optional_body,
)
from services.common.fields import CustomerId, EntityId, Limit, ShortText, Since, Until, only_params

from .domain import Action, ComplaintFilters, Status
from .models import (
    AssignIn,
    CaseIn,
    Category,
    ComplaintIn,
    ConfirmIn,
    DecisionIn,
    Kind,
    NoteIn,
    RemedyIn,
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


@router.post("/cases", status_code=201, tags=["cases"], summary="Open a case of any kind (the one intake)")
async def open_case(
    body: CaseIn,
    request: Request,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: ComplaintService = Depends(complaints),
) -> ORJSONResponse:
    idem = idempotency(key, principal, "POST /cases", body)
    return answer(await service.open(body, principal.label, idem, request.headers.get("authorization")))


def _transition(action: Action, model: type[BaseModel] | None, collection: str):
    async def endpoint(
        complaint_id: EntityId,
        request: Request,
        key: IdempotencyHeader = None,
        principal: Principal = Depends(require("agent")),
        service: ComplaintService = Depends(complaints),
    ) -> ORJSONResponse:
        body = await optional_body(request, model)
        idem = idempotency(key, principal, f"POST /{collection}/{complaint_id}/{action.value}", body)
        return answer(await service.act(complaint_id, action, body, principal.label, idem))

    endpoint.__name__ = f"{action.value.replace('-', '_')}_{collection[:-1]}"
    return endpoint


def _step(step: str, model: type[BaseModel] | None, role: str):
    async def endpoint(
        case_id: EntityId,
        request: Request,
        key: IdempotencyHeader = None,
        principal: Principal = Depends(require(role)),
        service: ComplaintService = Depends(complaints),
    ) -> ORJSONResponse:
        body = await optional_body(request, model)
        idem = idempotency(key, principal, f"POST /cases/{case_id}/{step}", body)
        return answer(await service.procedure_step(case_id, step, body, principal.label, idem))

    endpoint.__name__ = f"{step}_case"
    return endpoint


def _body(model: type[BaseModel] | None, required: bool) -> dict[str, Any] | None:
    if model is None:
        return None
    return {
        "requestBody": {"required": required, "content": {"application/json": {"schema": body_schema(model)}}}
    }


for _collection, _path in (("cases", "/cases/{complaint_id}"), ("complaints", "/complaints/{complaint_id}")):
    for _action, _model, _summary in (
        (Action.ASSIGN, AssignIn, "Assign to an agent (also: the customer answered, work resumes)"),
        (Action.AWAIT_CUSTOMER, NoteIn, "Wait for the customer; the SLA clock pauses"),
        (Action.RESOLVE, ResolveIn, "Resolved; a CSAT survey may follow"),
        (Action.CLOSE, None, "Close for good (a complaint taken through the procedure: once confirmed)"),
        (Action.REOPEN, ReopenIn, "Reopen within the reopen window"),
        (Action.ESCALATE, NoteIn, "Escalate one level by hand (1 to 3): to the level's supervisor"),
    ):
        router.add_api_route(
            f"{_path}/{_action.value}",
            _transition(_action, _model, _collection),
            methods=["POST"],
            summary=_summary,
            tags=[_collection],
            openapi_extra=_body(_model, _model in (ResolveIn, AssignIn, ReopenIn)),
        )

for _step_name, _model, _role, _summary in (
    ("decision", DecisionIn, "agent", "The complaint procedure: valid or not, why, department, root cause"),
    ("remedy", RemedyIn, "agent", "The remedy and its compensation (refund, points, coupon)"),
    ("approve", NoteIn, "supervisor", "A supervisor approves compensation above the approval amount"),
    ("confirm", ConfirmIn, "agent", "The customer's confirmation of the outcome (not satisfied: reopens)"),
):
    router.add_api_route(
        f"/cases/{{case_id}}/{_step_name}",
        _step(_step_name, _model, _role),
        methods=["POST"],
        summary=_summary,
        tags=["cases"],
        openapi_extra=_body(_model, _model is not NoteIn),
    )


@router.post(
    "/cases/{case_id}/compensate",
    tags=["cases"],
    summary="Carry out the remedy's compensation, each payment exactly once",
)
async def compensate_case(
    case_id: EntityId,
    key: RequiredIdempotencyHeader,
    principal: Principal = Depends(require("agent")),
    service: ComplaintService = Depends(complaints),
) -> ORJSONResponse:
    idem = idempotency(key, principal, f"POST /cases/{case_id}/compensate", None)
    return answer(await service.compensate(case_id, principal.label, idem))


@router.get(
    "/cases/catalogue", tags=["cases"], summary="Kinds and their SLA targets, root causes, departments"
)
async def case_catalogue(
    _: Principal = Depends(require("viewer")), service: ComplaintService = Depends(complaints)
) -> dict[str, Any]:
    return service.catalogue()


@router.get(
    "/cases",
    tags=["cases"],
    summary="The queue: least time left first (or newest first), by kind, state, level, team, assignee",
    dependencies=[
        Depends(
            only_params(
                "kind",
                "status",
                "level",
                "team",
                "assignee",
                "category",
                "customer_id",
                "breached",
                "sort",
                "limit",
                "cursor",
            )
        )
    ],
)
async def list_cases(
    kind: Kind | None = None,
    status: Status | None = None,
    level: Annotated[int, Query(ge=0, le=3)] | None = None,
    team: EntityId | None = None,
    assignee: ShortText | None = None,
    category: Category | None = None,
    customer_id: CustomerId | None = None,
    breached: bool | None = None,
    sort: Literal["time_left", "newest"] = "time_left",
    limit: Limit = 50,
    cursor: str | None = None,
    _: Principal = Depends(require("viewer")),
    service: ComplaintService = Depends(complaints),
) -> dict[str, Any]:
    filters = ComplaintFilters(
        status, category, None, breached, assignee, customer_id, kind=kind, level=level, team=team
    )
    return await service.complaints(filters, limit, cursor, by_time_left=sort == "time_left")


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


@router.get("/cases/{complaint_id}", tags=["cases"], summary="One case with its history and procedure")
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
    filters = ComplaintFilters(
        status, category, severity, breached, assignee, customer_id, since, until, kind="complaint"
    )
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
