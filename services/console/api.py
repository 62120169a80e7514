"""The console's pages and form posts: read the session, check the CSRF token and the role,
call the use case, render. Nothing else happens here."""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import time
from datetime import date
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError

from services.common.peers import Answer
from services.common.vocabulary import REPORT_DIMENSIONS, SEGMENT_RULES

from . import domain, messages
from .domain import Session
from .models import (
    AssignForm,
    ComplaintForm,
    ComplaintMoveForm,
    InteractionForm,
    KeyForm,
    OutcomeForm,
    RedeemForm,
    SearchForm,
    SignInForm,
    WarningActionForm,
    field_errors,
)
from .service import DASHBOARD_FRESH_FOR, ConsoleService, Done

router = APIRouter(include_in_schema=False)
SESSION_COOKIE = "crm_console_session"
LANGUAGE_COOKIE = "crm_console_language"
PRE_CSRF_COOKIE = "crm_console_signin"  # the sign-in form's token, before there is a session
FORM_TOKEN_BYTES = 18
FORM_TOKEN = re.compile(r"[A-Za-z0-9_-]{24}")
STAFF_ID = re.compile(r"[a-z0-9][a-z0-9._-]{1,39}")
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class SignInNeeded(Exception):
    def __init__(self, back: str) -> None:
        self.back = back


class Forbidden(Exception):
    pass


def console(request: Request) -> ConsoleService:
    return request.app.state.console


def local_path(candidate: str | None, default: str = "/customers") -> str:
    """Only a path on this site is a place to go back to (no open redirects)."""
    if not candidate or not candidate.startswith("/") or candidate.startswith("//") or "\\" in candidate:
        return default
    return candidate


async def signed_in(request: Request, service: ConsoleService = Depends(console)) -> Session:
    session = await service.session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            back = local_path(urlsplit(request.headers.get("referer", "")).path or None)
        raise SignInNeeded(back)
    request.state.session = session
    return session


def language(request: Request) -> str:
    session: Session | None = getattr(request.state, "session", None)
    choice = session.language if session else request.cookies.get(LANGUAGE_COOKIE)
    return domain.language_of(choice, request.headers.get("accept-language"))


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    session: Session | None = getattr(request.state, "session", None)
    lang = language(request)
    settings = request.app.state.settings
    fmt = domain.Formats(lang, settings.console_timezone, settings.console_currency)
    started = getattr(request.state, "started", time.perf_counter())
    return templates.TemplateResponse(
        request,
        template,
        {
            "session": session,
            "lang": lang,
            "languages": domain.LANGUAGES,
            "t": messages.translator(lang),
            "fmt": fmt,
            "may": (lambda p: domain.may(session.role, p)) if session else (lambda p: False),
            "csrf": session.csrf if session else request.cookies.get(PRE_CSRF_COOKIE, ""),
            # A new one for each action form as it renders (see form_token_of).
            "form_token": lambda: secrets.token_urlsafe(FORM_TOKEN_BYTES),
            "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "path": request.url.path,
            "started": started,
            "charts": domain,
            **context,
        },
        status_code=status_code,
        headers={"Cache-Control": "no-store"},
    )


async def form_of(request: Request, session: Session | None = None) -> dict[str, str]:
    """The posted form, after its CSRF token matched the session's (or the sign-in cookie's)."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    expected = session.csrf if session else request.cookies.get(PRE_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(form.get("csrf", ""), expected):
        raise Forbidden()
    return form


def form_token_of(form: dict[str, str]) -> str:
    """The one-time token of the rendered form an action came from: its writes' Idempotency-Keys
    derive from it, so submitting that form again repeats the first answer instead of the write."""
    token = form.get("form_token", "")
    if not FORM_TOKEN.fullmatch(token):
        raise Forbidden()
    return token


def require(session: Session, permission: str) -> None:
    if not domain.may(session.role, permission):
        raise Forbidden()


def parse(model: type[BaseModel], form: dict[str, str]) -> tuple[Any, dict[str, str]]:
    try:
        return model.model_validate(form), {}
    except ValidationError as exc:
        return None, field_errors(exc)


def back_to(path: str, notice: str) -> RedirectResponse:
    """After an action: back to the page it came from (post/redirect/get), with a notice."""
    parts = urlsplit(path)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "done"] + [("done", notice)]
    return RedirectResponse(f"{parts.path}?{urlencode(query)}", status_code=303)


# --- sign-in -------------------------------------------------------------------------------------


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/customers", status_code=303)


@router.get("/signin")
async def signin_page(request: Request, next: str | None = None, expired: bool = False) -> HTMLResponse:
    token = request.cookies.get(PRE_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        request,
        "signin.html",
        {"next": local_path(next), "error": None, "expired": expired, "csrf": token},
    )
    _cookie(request, response, PRE_CSRF_COOKIE, token, max_age=3600)
    return response


@router.post("/signin")
async def signin(request: Request, service: ConsoleService = Depends(console)) -> Response:
    form = await form_of(request)
    parsed, errors = parse(SignInForm, form)
    if parsed is None or (session := await service.sign_in(parsed.api_key, language(request))) is None:
        context = {
            "next": local_path(form.get("next")),
            "expired": False,
            "error": errors.get("api_key") or "unknown key",
        }
        return render(request, "signin.html", context, status_code=401 if parsed else 422)
    response = RedirectResponse(local_path(parsed.next), status_code=303)
    _cookie(request, response, SESSION_COOKIE, session.session_id)
    response.delete_cookie(PRE_CSRF_COOKIE, path="/")
    return response


@router.post("/signout")
async def signout(
    request: Request, session: Session = Depends(signed_in), service: ConsoleService = Depends(console)
) -> RedirectResponse:
    await form_of(request, session)
    await service.sign_out(session)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/language")
async def choose_language(request: Request, service: ConsoleService = Depends(console)) -> RedirectResponse:
    session = await service.session(request.cookies.get(SESSION_COOKIE))
    form = await form_of(request, session)
    chosen = domain.language_of(form.get("language"))
    if session is not None:
        await service.sessions.set_language(session.session_id, chosen)
    response = RedirectResponse(local_path(form.get("back"), "/signin"), status_code=303)
    _cookie(request, response, LANGUAGE_COOKIE, chosen, max_age=365 * 86400)
    return response


def _cookie(request: Request, response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.app.state.settings.console_cookie_secure,
    )


# --- customers -----------------------------------------------------------------------------------


@router.get("/customers")
async def customers(
    request: Request, session: Session = Depends(signed_in), service: ConsoleService = Depends(console)
) -> Response:
    query = dict(request.query_params)
    form, errors = parse(SearchForm, query)
    if form is not None and query.get("format") == "csv":
        require(session, "export_csv")
        body = await service.export_csv(session, form)
        if body is not None:
            return StreamingResponse(
                body,
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="customers.csv"'},
            )
        errors = {"form": "profiles is unavailable"}
    answer = await service.search(session, form) if form is not None else None
    params = form.params() if form is not None else {}
    return render(
        request,
        "customers.html",
        {
            "answer": answer,
            "filters": query,
            "errors": errors,
            "next_url": _with(params, cursor=answer.body.get("next_cursor"))
            if answer and answer.ok
            else None,
            "csv_url": _with({k: v for k, v in params.items() if k != "cursor"}, format="csv"),
            "sort_url": lambda key: _with(
                {k: v for k, v in params.items() if k not in ("cursor", "sort", "order")}, sort=key
            ),
        },
        status_code=422 if errors and form is None else 200,
    )


def _with(params: dict[str, Any], **more: Any) -> str | None:
    if any(v is None for v in more.values()):
        return None
    return "/customers?" + urlencode({**{k: str(v) for k, v in params.items()}, **more})


async def customer_page(
    request: Request,
    session: Session,
    service: ConsoleService,
    customer_id: str,
    errors: dict[str, dict[str, str]] | None = None,
    values: dict[str, dict[str, str]] | None = None,
) -> HTMLResponse:
    answer, desk = await asyncio.gather(
        service.customer(session, customer_id),
        service.customer_desk(session, customer_id, request.query_params.get("timeline")),
    )
    status = 404 if answer.status == "not_found" else (422 if errors else 200)
    return render(
        request,
        "customer.html",
        {
            "customer_id": customer_id,
            "answer": answer,
            "view": answer.body if answer.ok else None,
            "desk": desk,
            "errors": errors or {},
            "values": values or {},
            "notice": request.query_params.get("done"),
        },
        status_code=status,
    )


@router.get("/customers/{customer_id}")
async def customer(
    request: Request,
    customer_id: str,
    session: Session = Depends(signed_in),
    service: ConsoleService = Depends(console),
) -> HTMLResponse:
    return await customer_page(request, session, service, customer_id)


CUSTOMER_ACTIONS: dict[str, tuple[str, type[BaseModel], str]] = {
    "complaints": ("open_complaint", ComplaintForm, "complaint_opened"),
    "interactions": ("record_interaction", InteractionForm, "interaction_recorded"),
    "redemptions": ("redeem_points", RedeemForm, "points_redeemed"),
}


@router.post("/customers/{customer_id}/{action}")
async def customer_action(
    request: Request,
    customer_id: str,
    action: str,
    session: Session = Depends(signed_in),
    service: ConsoleService = Depends(console),
) -> Response:
    if action not in CUSTOMER_ACTIONS:
        raise Forbidden()
    permission, model, notice = CUSTOMER_ACTIONS[action]
    form = await form_of(request, session)
    require(session, permission)
    parsed, errors = parse(model, form)
    if parsed is not None:
        run = {
            "complaints": service.open_complaint,
            "interactions": service.record_interaction,
            "redemptions": service.redeem,
        }[action]
        outcome: Done = await run(session, form_token_of(form), customer_id, parsed)
        if outcome.ok:
            return back_to(f"/customers/{customer_id}", notice)
        errors = {outcome.field or "form": outcome.message}
    return await customer_page(
        request, session, service, customer_id, errors={action: errors}, values={action: form}
    )


# --- churn worklist ------------------------------------------------------------------------------


async def worklist_page(
    request: Request,
    session: Session,
    service: ConsoleService,
    errors: dict[str, dict[str, str]] | None = None,
) -> HTMLResponse:
    status = request.query_params.get("status") or "open"
    status = status if status in ("open", "assigned", "actioned", "closed", "all") else "open"
    answer = await service.worklist(
        session, None if status == "all" else status, request.query_params.get("cursor")
    )
    return render(
        request,
        "worklist.html",
        {
            "answer": answer,
            "status": status,
            "errors": errors or {},
            "notice": request.query_params.get("done"),
            "at_risk": domain.value_at_risk(answer.body["items"]) if answer.ok else None,
        },
        status_code=422 if errors else 200,
    )


@router.get("/worklist")
async def worklist(
    request: Request, session: Session = Depends(signed_in), service: ConsoleService = Depends(console)
) -> HTMLResponse:
    return await worklist_page(request, session, service)


WARNING_ACTIONS: dict[str, tuple[str, type[BaseModel], str]] = {
    "actions": ("act_on_warning", WarningActionForm, "action_recorded"),
    "assign": ("assign_warning", AssignForm, "warning_assigned"),
    "outcome": ("close_warning", OutcomeForm, "warning_closed"),
}


@router.post("/warnings/{warning_id}/{action}")
async def warning_action(
    request: Request,
    warning_id: str,
    action: str,
    session: Session = Depends(signed_in),
    service: ConsoleService = Depends(console),
) -> Response:
    if action not in WARNING_ACTIONS:
        raise Forbidden()
    permission, model, notice = WARNING_ACTIONS[action]
    form = await form_of(request, session)
    require(session, permission)
    back = local_path(form.get("back"), "/worklist")
    parsed, errors = parse(model, form)
    if parsed is not None:
        run = {
            "actions": service.act_on_warning,
            "assign": service.assign_warning,
            "outcome": service.close_warning,
        }[action]
        outcome: Done = await run(session, form_token_of(form), warning_id, parsed)
        if outcome.ok:
            return back_to(back, notice)
        errors = {outcome.field or "form": outcome.message}
    found = {f"{warning_id}:{action}": errors}
    if back.startswith("/customers/"):
        return await customer_page(request, session, service, back.split("/")[2].split("?")[0], errors=found)
    return await worklist_page(_at(request, back), session, service, errors=found)


def _at(request: Request, path: str) -> Request:
    """The request as if for `path` (to show the page a failed form came from, with its query)."""
    parts = urlsplit(path)
    scope = dict(request.scope)
    scope["path"] = parts.path
    scope["query_string"] = parts.query.encode()
    copy = Request(scope, request.receive)
    copy.state.session = request.state.session
    return copy


# --- complaints queue ----------------------------------------------------------------------------


async def queue_page(
    request: Request,
    session: Session,
    service: ConsoleService,
    errors: dict[str, dict[str, str]] | None = None,
) -> HTMLResponse:
    status = request.query_params.get("status") or None
    status = status if status in ("open", "assigned", "awaiting_customer", "resolved", "closed") else None
    breached = {"true": True, "false": False}.get(request.query_params.get("breached", ""))
    answers = await service.queue(session, status, breached, request.query_params.get("cursor"))
    now = service.clock.now()
    rows = []
    for answer in answers.values():
        if answer.ok:
            rows += answer.body["items"]
    rows.sort(key=lambda c: _urgency(c, now))
    down = next((a for a in answers.values() if not a.ok), None)
    return render(
        request,
        "complaints.html",
        {
            "rows": rows,
            "status": status,
            "breached": breached,
            "down": down,
            "errors": errors or {},
            "notice": request.query_params.get("done"),
            "clock": lambda c: _clock(c, now),
            "next_url": _queue_next(status, breached, answers) if status else None,
        },
        status_code=422 if errors else 200,
    )


def _clock(c: dict[str, Any], now) -> domain.Countdown:
    sla = c["sla"]
    active = c["status"] in ("open", "assigned", "awaiting_customer")
    due = sla["first_response_due"] if c.get("first_response_at") is None else sla["resolution_due"]
    return domain.countdown(due, now, paused=sla["paused"], active=active)


def _urgency(c: dict[str, Any], now) -> tuple[int, int]:
    clock = _clock(c, now)
    order = {"breached": 0, "due_soon": 1, "running": 2, "paused": 3, "done": 4}[clock.state]
    return (order, clock.seconds)


def _queue_next(status: str, breached: bool | None, answers: dict[str, Answer]) -> str | None:
    answer = answers[status]
    cursor = answer.body.get("next_cursor") if answer.ok else None
    if not cursor:
        return None
    params = {"status": status, "cursor": cursor}
    if breached is not None:
        params["breached"] = str(breached).lower()
    return "/complaints?" + urlencode(params)


@router.get("/complaints")
async def complaints(
    request: Request, session: Session = Depends(signed_in), service: ConsoleService = Depends(console)
) -> HTMLResponse:
    return await queue_page(request, session, service)


@router.post("/complaints/{complaint_id}/move")
async def move_complaint(
    request: Request,
    complaint_id: str,
    session: Session = Depends(signed_in),
    service: ConsoleService = Depends(console),
) -> Response:
    form = await form_of(request, session)
    require(session, "move_complaint")
    back = local_path(form.get("back"), "/complaints")
    parsed, errors = parse(ComplaintMoveForm, form)
    if parsed is not None:
        outcome = await service.move_complaint(session, form_token_of(form), complaint_id, parsed)
        if outcome.ok:
            return back_to(back, "complaint_moved")
        errors = {outcome.field or "form": outcome.message}
    return await queue_page(_at(request, back), session, service, errors={complaint_id: errors})


# --- dashboards ----------------------------------------------------------------------------------


@router.get("/dashboard")
async def dashboard(
    request: Request, session: Session = Depends(signed_in), service: ConsoleService = Depends(console)
) -> HTMLResponse:
    board = await service.dashboard(session)
    return render(
        request,
        "dashboard.html",
        {
            "parts": board.parts,
            "asked_at": board.asked_at,
            "fresh_for": int(DASHBOARD_FRESH_FOR.total_seconds()),
            "segment_rules": SEGMENT_RULES,
        },
    )


# --- engagement ----------------------------------------------------------------------------------


@router.get("/engagement")
async def engagement_page(
    request: Request, session: Session = Depends(signed_in), service: ConsoleService = Depends(console)
) -> HTMLResponse:
    campaigns, measured = await service.engagement(session)
    return render(request, "engagement.html", {"campaigns": campaigns, "measured": measured})


# --- reports -------------------------------------------------------------------------------------


@router.get("/reports")
async def reports_page(
    request: Request,
    by: str = "segment",
    since: Annotated[date | None, Query(alias="from")] = None,
    until: Annotated[date | None, Query(alias="to")] = None,
    session: Session = Depends(signed_in),
    service: ConsoleService = Depends(console),
) -> HTMLResponse:
    by = by if by in REPORT_DIMENSIONS else "segment"
    parts = await service.reports(
        session,
        by,
        f"{since.isoformat()}T00:00:00Z" if since else None,
        f"{until.isoformat()}T00:00:00Z" if until else None,
    )
    context = {"parts": parts, "by": by, "since": since, "until": until, "dimensions": REPORT_DIMENSIONS}
    return render(request, "reports.html", context)


# --- staff directory -----------------------------------------------------------------------------


@router.get("/staff")
async def staff_page(
    request: Request, session: Session = Depends(signed_in), service: ConsoleService = Depends(console)
) -> HTMLResponse:
    answers = await service.staff(session)
    return render(request, "staff.html", {**answers, "notice": request.query_params.get("done")})


async def staff_member_page(
    request: Request,
    session: Session,
    service: ConsoleService,
    user_id: str,
    errors: dict[str, str] | None = None,
    new_key: str | None = None,
) -> HTMLResponse:
    if not STAFF_ID.fullmatch(user_id):
        return render(request, "error.html", {"status": 404}, status_code=404)
    answers = await service.staff_member(session, user_id, domain.may(session.role, "manage_staff"))
    if answers["user"].status == "not_found":
        return render(request, "error.html", {"status": 404}, status_code=404)
    context = {
        "user_id": user_id,
        **answers,
        "errors": errors or {},
        "new_key": new_key,
        "notice": "key_issued" if new_key else request.query_params.get("done"),
    }
    return render(request, "staff_member.html", context, status_code=422 if errors else 200)


@router.get("/staff/{user_id}")
async def staff_member(
    request: Request,
    user_id: str,
    session: Session = Depends(signed_in),
    service: ConsoleService = Depends(console),
) -> HTMLResponse:
    return await staff_member_page(request, session, service, user_id)


@router.post("/staff/{user_id}/keys")
async def issue_key(
    request: Request,
    user_id: str,
    session: Session = Depends(signed_in),
    service: ConsoleService = Depends(console),
) -> Response:
    form = await form_of(request, session)
    require(session, "manage_staff")
    if not STAFF_ID.fullmatch(user_id):
        raise Forbidden()
    parsed, errors = parse(KeyForm, form)
    if parsed is not None:
        outcome, key = await service.issue_key(session, form_token_of(form), user_id, parsed)
        if outcome.ok:
            # Shown on this answer only (never in a URL to redirect to): the page is not cached.
            return await staff_member_page(request, session, service, user_id, new_key=key)
        errors = {outcome.field or "form": outcome.message}
    return await staff_member_page(request, session, service, user_id, errors=errors)


@router.post("/staff/keys/{key_id}/revoke")
async def revoke_key(
    request: Request,
    key_id: str,
    session: Session = Depends(signed_in),
    service: ConsoleService = Depends(console),
) -> Response:
    form = await form_of(request, session)
    require(session, "manage_staff")
    if not KEY_ID.fullmatch(key_id):
        raise Forbidden()
    back = local_path(form.get("back"), "/staff")
    outcome = await service.revoke_key(session, form_token_of(form), key_id)
    if outcome.ok:
        return back_to(back, "key_revoked")
    if back.startswith("/staff/"):
        return await staff_member_page(
            _at(request, back),
            session,
            service,
            back.split("/")[2].split("?")[0],
            errors={"form": outcome.message},
        )
    return back_to(back, "key_not_revoked")
