"""HTTP entrypoints of the staff service: translate the request, call the service."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse

from services.common.auth import USER_ROLES, Principal, require
from services.common.endpoints import IdempotencyHeader, answer, idempotency
from services.common.fields import Limit, only_params
from services.common.problems import Problem

from .models import ID_PATTERN, KeyIn, TeamIn, TeamPatch, UserIn, UserPatch
from .service import StaffService

router = APIRouter(tags=["staff"])
StaffIdPath = Annotated[str, Path(pattern=ID_PATTERN)]
_SHA256 = re.compile("^[0-9a-f]{64}$")


def staff(request: Request) -> StaffService:
    return request.app.state.staff


# --- users -----------------------------------------------------------------------------------------


@router.post("/users", status_code=201, summary="Add a user (login, name, email, locale, roles, team)")
async def create_user(
    body: UserIn,
    idem: IdempotencyHeader = None,
    principal: Principal = Depends(require("admin")),
    service: StaffService = Depends(staff),
) -> ORJSONResponse:
    key = idempotency(idem, principal, "create_user", body)
    return answer(await service.create_user(body.model_dump(), key))


@router.get(
    "/users",
    summary="Users by team, role and whether active",
    dependencies=[Depends(only_params("team", "role", "active", "limit", "cursor"))],
)
async def list_users(
    team: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    role: Annotated[str | None, Query(description=f"one of {', '.join(USER_ROLES)}")] = None,
    active: bool | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
    _: Principal = Depends(require("viewer")),
    service: StaffService = Depends(staff),
) -> ORJSONResponse:
    if role is not None and role not in USER_ROLES:
        raise Problem(422, f"role is one of {', '.join(USER_ROLES)}")
    return ORJSONResponse(await service.users(team, role, active, limit, cursor))


@router.get("/users/{user_id}", summary="A user")
async def get_user(
    user_id: StaffIdPath, _: Principal = Depends(require("viewer")), service: StaffService = Depends(staff)
) -> ORJSONResponse:
    return ORJSONResponse(await service.user(user_id))


@router.patch(
    "/users/{user_id}",
    summary="Change a user; active: false deactivates them and revokes every key they hold",
)
async def change_user(
    user_id: StaffIdPath,
    body: UserPatch,
    idem: IdempotencyHeader = None,
    principal: Principal = Depends(require("admin")),
    service: StaffService = Depends(staff),
) -> ORJSONResponse:
    try:
        changes = body.changes()
    except ValueError as exc:
        raise RequestValidationError(
            [{"type": "null", "loc": ("body", str(exc)), "msg": "may not be null", "input": None}]
        ) from None
    if principal.user == user_id and changes.get("active") is False:
        raise Problem(409, "you cannot deactivate yourself; ask another admin")
    key = idempotency(idem, principal, f"change_user:{user_id}", body)
    return answer(await service.change_user(user_id, changes, principal.label, key))


# --- teams -----------------------------------------------------------------------------------------


@router.post("/teams", status_code=201, summary="Add a team with its supervisors by escalation level")
async def create_team(
    body: TeamIn,
    idem: IdempotencyHeader = None,
    principal: Principal = Depends(require("admin")),
    service: StaffService = Depends(staff),
) -> ORJSONResponse:
    key = idempotency(idem, principal, "create_team", body)
    return answer(await service.create_team(body.model_dump(), key))


@router.get("/teams", summary="Every team", dependencies=[Depends(only_params())])
async def list_teams(
    _: Principal = Depends(require("viewer")), service: StaffService = Depends(staff)
) -> ORJSONResponse:
    return ORJSONResponse(await service.teams())


@router.get("/teams/{team_id}", summary="A team, its supervisors by level and its members")
async def get_team(
    team_id: StaffIdPath, _: Principal = Depends(require("viewer")), service: StaffService = Depends(staff)
) -> ORJSONResponse:
    return ORJSONResponse(await service.team(team_id))


@router.patch("/teams/{team_id}", summary="Rename a team or change its supervisors")
async def change_team(
    team_id: StaffIdPath,
    body: TeamPatch,
    idem: IdempotencyHeader = None,
    principal: Principal = Depends(require("admin")),
    service: StaffService = Depends(staff),
) -> ORJSONResponse:
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    key = idempotency(idem, principal, f"change_team:{team_id}", body)
    return answer(await service.change_team(team_id, changes, key))


# --- keys ------------------------------------------------------------------------------------------


@router.post(
    "/users/{user_id}/keys",
    status_code=201,
    summary="Issue an API key to an active user; the answer holds the key, shown this once",
)
async def issue_key(
    user_id: StaffIdPath,
    body: KeyIn,
    _: Principal = Depends(require("admin")),
    service: StaffService = Depends(staff),
) -> ORJSONResponse:
    return answer(await service.issue_key(user_id, body.label, None))


@router.get("/users/{user_id}/keys", summary="A user's keys: when issued, last used, revoked")
async def list_keys(
    user_id: StaffIdPath, _: Principal = Depends(require("admin")), service: StaffService = Depends(staff)
) -> ORJSONResponse:
    return ORJSONResponse(await service.keys_of(user_id))


@router.delete("/keys/{key_id}", summary="Revoke a key: every service refuses it within seconds")
async def revoke_key(
    key_id: Annotated[str, Path(max_length=64)],
    idem: IdempotencyHeader = None,
    principal: Principal = Depends(require("admin")),
    service: StaffService = Depends(staff),
) -> ORJSONResponse:
    key = idempotency(idem, principal, f"revoke_key:{key_id}", None)
    return answer(await service.revoke_key(key_id, principal.label, key))


# --- what every service asks -----------------------------------------------------------------------


@router.get(
    "/auth/keys/{key_hash}",
    summary="Who holds the key with this SHA-256 (hex): 404 when unknown, revoked or its user deactivated",
    description="Asked by every service's authentication (services/common/auth.py); open, since "
    "only the holder of a key knows its hash.",
)
async def key_holder(key_hash: str, service: StaffService = Depends(staff)) -> ORJSONResponse:
    found = await service.key_answer(key_hash) if _SHA256.match(key_hash) else None
    if found is None:
        raise Problem(404, "no such key")
    return ORJSONResponse(found)
