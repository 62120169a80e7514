"""The console's use cases: sign-in, and for each page what it needs from the other services,
asked at once with timeouts, each part marked unavailable on its own; actions are calls to the
service that owns them, with the signed-in person's key."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.common.auth import ApiKeys
from services.common.clock import Clock
from services.common.peers import Answer, Peers
from services.common.problems import Problem

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
    WarningActionForm,
)
from .store import SessionStore

PAGE_SIZE = 25
QUEUE_STATUSES = ("open", "assigned", "awaiting_customer")
# How long the dashboard's figures are shown again before its peers are asked anew.
DASHBOARD_FRESH_FOR = timedelta(seconds=30)
ENGAGEMENT_CAMPAIGNS = 50  # the newest campaigns the engagement page measures


@dataclass(frozen=True)
class Board:
    """The dashboard's answers from its peers, and when they were asked."""

    parts: dict[str, Answer]
    asked_at: datetime


@dataclass(frozen=True)
class Done:
    """The outcome of an action, as the page shows it: done, or why not (and which field)."""

    ok: bool
    message: str = ""
    field: str | None = None


def done_of(answer: Answer, field: str | None = None) -> Done:
    if answer.ok:
        return Done(True)
    if answer.status == "refused":
        # A 422 names the fields (services/common/problems.py); show the first beside its field.
        errors = (answer.body or {}).get("errors") or []
        located = next((e for e in errors if e.get("field") not in (None, "body")), None)
        if located is not None:
            return Done(
                False, str(located.get("message", answer.error)), str(located["field"]).split(".")[-1]
            )
        return Done(False, answer.error or "refused", field)
    if answer.status == "not_found":
        return Done(False, "not found")
    return Done(False, f"{answer.service} is unavailable")


def idempotency_key(session: Session, form_token: str, service: str, path: str) -> str:
    """The Idempotency-Key of one write a form causes: the same for every submission of one
    rendered form (a double click, a browser re-POST), so the owning service applies it once;
    one per downstream call, and bound to the session so a token is worth nothing in another."""
    message = f"{form_token} {service} {path}".encode()
    return hmac.new(session.csrf.encode(), message, hashlib.sha256).hexdigest()


class ConsoleService:
    def __init__(self, peers: Peers, sessions: SessionStore, keys: ApiKeys, clock: Clock) -> None:
        self.peers = peers
        self.sessions = sessions
        self.keys = keys
        self.clock = clock
        # Per role: when the figures were asked, and the (possibly still running) asking.
        self._boards: dict[str, tuple[float, asyncio.Future[Board]]] = {}

    # --- sign-in -------------------------------------------------------------------------------

    async def sign_in(self, api_key: str, language: str) -> Session | None:
        """A session for a known key; None for an unknown one (the page says so, nothing more)."""
        try:
            principal = await self.keys.authenticate(f"Bearer {api_key}")
        except Problem:
            return None
        return await self.sessions.create(
            api_key, principal.role, principal.label, language, self.clock.now()
        )

    async def session(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        found = await self.sessions.get(session_id, self.clock.now())
        if found is None:
            return None
        # A key removed from the keys file, or revoked, ends its sessions too (not a staff
        # directory that cannot tell now: each page's calls say so).
        try:
            await self.keys.authenticate(found.authorization)
        except Problem as refused:
            if refused.status != 401:
                return found
            await self.sessions.delete(found.session_id)
            return None
        return found

    async def sign_out(self, session: Session) -> None:
        await self.sessions.delete(session.session_id)

    # --- pages ---------------------------------------------------------------------------------

    async def search(self, session: Session, form: SearchForm) -> Answer:
        return await self.peers.get(
            "profiles", "/customers", session.authorization, limit=PAGE_SIZE, **form.params()
        )

    async def export_csv(self, session: Session, form: SearchForm) -> AsyncIterator[bytes] | None:
        """The whole result as CSV, streamed from the profiles service; None when it is down."""
        params = {k: v for k, v in form.params().items() if k != "cursor"}
        request = self.peers.client.build_request(
            "GET",
            self.peers.settings.url_of("profiles") + "/customers",
            params={**params, "format": "csv"},
            headers={"Authorization": session.authorization},
            timeout=None,
        )
        try:
            response = await self.peers.client.send(request, stream=True)
        except Exception:  # noqa: BLE001 - any failure to connect: the page says it is down
            return None
        if response.status_code != 200:
            await response.aclose()
            return None

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_bytes():
                    yield chunk
            finally:
                await response.aclose()

        return body()

    async def customer(self, session: Session, customer_id: str) -> Answer:
        """The 360 view: the profiles service asks the others at once and marks what is missing."""
        return await self.peers.get("profiles", f"/customers/{customer_id}/360", session.authorization)

    async def customer_desk(
        self, session: Session, customer_id: str, cursor: str | None
    ) -> dict[str, Answer]:
        """The customer's timeline and notes from the desk service; the desk being away leaves
        the rest of the customer page whole."""
        timeline, notes = await asyncio.gather(
            self.peers.get(
                "desk",
                f"/customers/{customer_id}/timeline",
                session.authorization,
                limit=PAGE_SIZE,
                cursor=cursor,
            ),
            self.peers.get("desk", f"/customers/{customer_id}/notes", session.authorization, limit=20),
        )
        return {"timeline": timeline, "notes": notes}

    async def worklist(self, session: Session, status: str | None, cursor: str | None) -> Answer:
        return await self.peers.get(
            "profiles",
            "/churn-warnings",
            session.authorization,
            status=status,
            cursor=cursor,
            limit=PAGE_SIZE,
        )

    async def queue(
        self, session: Session, status: str | None, breached: bool | None, cursor: str | None
    ) -> dict[str, Answer]:
        """Active complaints (or one status), newest first; with no status, one page per active
        status so the queue shows all that still need work."""
        statuses = (status,) if status else QUEUE_STATUSES
        answers = await asyncio.gather(
            *(
                self.peers.get(
                    "complaints",
                    "/complaints",
                    session.authorization,
                    status=s,
                    breached=None if breached is None else str(breached).lower(),
                    cursor=cursor if status else None,
                    limit=PAGE_SIZE * 2,
                )
                for s in statuses
            )
        )
        return dict(zip(statuses, answers, strict=True))

    async def dashboard(self, session: Session) -> Board:
        """The dashboard's figures, asked at once; kept DASHBOARD_FRESH_FOR per role and shared by
        every request in between (the aggregations over all profiles cost the same whoever asks,
        and the page says how old they are). A board with a part missing is not kept."""
        role = session.role
        cached = self._boards.get(role)
        if cached is None or time.monotonic() - cached[0] >= DASHBOARD_FRESH_FOR.total_seconds():
            cached = (time.monotonic(), asyncio.ensure_future(self._fresh_board(session)))
            self._boards[role] = cached
        # Shielded: a request that goes away does not cancel the asking the others wait for.
        board = await asyncio.shield(cached[1])
        if not all(a.ok for a in board.parts.values()) and self._boards.get(role) is cached:
            del self._boards[role]
        return board

    async def _fresh_board(self, session: Session) -> Board:
        names = ("segments", "seasonality", "complaints", "surveys")
        answers = await asyncio.gather(
            self.peers.get("profiles", "/segments", session.authorization),
            self.peers.get("profiles", "/analytics/seasonality", session.authorization),
            self.peers.get("complaints", "/complaints/stats", session.authorization),
            self.peers.get("complaints", "/surveys/stats", session.authorization),
        )
        return Board(dict(zip(names, answers, strict=True)), self.clock.now())

    async def reports(
        self, session: Session, by: str, since: str | None, until: str | None
    ) -> dict[str, Answer]:
        """The reports page: composition by `by`, contribution, retention and products over a period."""
        period = {"from": since, "to": until}
        names = ("composition", "contribution", "retention", "products")
        answers = await asyncio.gather(
            self.peers.get("reports", "/reports/composition", session.authorization, by=by, **period),
            self.peers.get("reports", "/reports/contribution", session.authorization, top=10, **period),
            self.peers.get("reports", "/reports/retention", session.authorization, **period),
            self.peers.get("reports", "/reports/products", session.authorization, **period),
        )
        return dict(zip(names, answers, strict=True))

    async def staff(self, session: Session) -> dict[str, Answer]:
        """The staff directory's teams and people."""
        teams, users = await asyncio.gather(
            self.peers.get("staff", "/teams", session.authorization),
            self.peers.get("staff", "/users", session.authorization, limit=500),
        )
        return {"teams": teams, "users": users}

    async def staff_member(self, session: Session, user_id: str, with_keys: bool) -> dict[str, Answer]:
        """A person in the directory and, for an admin, their keys."""
        asked = [self.peers.get("staff", f"/users/{user_id}", session.authorization)]
        if with_keys:
            asked.append(self.peers.get("staff", f"/users/{user_id}/keys", session.authorization))
        answers = await asyncio.gather(*asked)
        return dict(zip(("user", "keys"), answers, strict=False))

    async def engagement(self, session: Session) -> tuple[Answer, list[dict[str, Any]]]:
        """The engagement page: the campaigns, newest first, each with its measurement (its
        report from engagement, asked at once; a report that did not come is left out)."""
        campaigns = await self.peers.get("engagement", "/campaigns", session.authorization)
        if not campaigns.ok:
            return campaigns, []
        shown = sorted(campaigns.body["items"], key=lambda c: c.get("created_at") or "", reverse=True)
        shown = shown[:ENGAGEMENT_CAMPAIGNS]
        reports = await asyncio.gather(
            *(
                self.peers.get("engagement", f"/campaigns/{c['campaign_id']}/report", session.authorization)
                for c in shown
            )
        )
        return campaigns, [
            {"campaign": c, "report": r.body if r.ok else None} for c, r in zip(shown, reports, strict=True)
        ]

    # --- actions -------------------------------------------------------------------------------

    async def _send(self, session: Session, form_token: str, service: str, path: str, body: Any) -> Answer:
        return await self.peers.send(
            service, path, session.authorization, body, idempotency_key(session, form_token, service, path)
        )

    async def open_complaint(
        self, session: Session, form_token: str, customer_id: str, form: ComplaintForm
    ) -> Done:
        body = {"customer_id": customer_id, **form.model_dump(exclude_none=True)}
        return done_of(await self._send(session, form_token, "complaints", "/complaints", body))

    async def record_interaction(
        self, session: Session, form_token: str, customer_id: str, form: InteractionForm
    ) -> Done:
        item: dict[str, Any] = {"customer_id": customer_id, "kind": form.kind, "channel": form.channel}
        if form.note:
            item["attributes"] = {"note": form.note, "by": session.label}
        answer = await self._send(session, form_token, "profiles", "/interactions", [item])
        if answer.ok and answer.body and answer.body.get("rejected"):
            return Done(False, str(answer.body["rejected"][0].get("error", "rejected")), "kind")
        return done_of(answer)

    async def redeem(self, session: Session, form_token: str, customer_id: str, form: RedeemForm) -> Done:
        answer = await self._send(
            session, form_token, "loyalty", f"/accounts/{customer_id}/redemptions", form.model_dump()
        )
        return done_of(answer, "points")

    async def act_on_warning(
        self, session: Session, form_token: str, warning_id: str, form: WarningActionForm
    ) -> Done:
        body = form.model_dump(exclude_none=True)
        return done_of(
            await self._send(session, form_token, "profiles", f"/churn-warnings/{warning_id}/actions", body)
        )

    async def assign_warning(
        self, session: Session, form_token: str, warning_id: str, form: AssignForm
    ) -> Done:
        answer = await self._send(
            session, form_token, "profiles", f"/churn-warnings/{warning_id}/assign", form.model_dump()
        )
        return done_of(answer, "assignee")

    async def close_warning(
        self, session: Session, form_token: str, warning_id: str, form: OutcomeForm
    ) -> Done:
        answer = await self._send(
            session, form_token, "profiles", f"/churn-warnings/{warning_id}/outcome", form.model_dump()
        )
        return done_of(answer, "outcome")

    async def issue_key(
        self, session: Session, form_token: str, user_id: str, form: KeyForm
    ) -> tuple[Done, str | None]:
        """The new key's text, shown on the page this once (the staff service keeps its hash)."""
        answer = await self._send(session, form_token, "staff", f"/users/{user_id}/keys", form.model_dump())
        return done_of(answer, "label"), (answer.body or {}).get("key") if answer.ok else None

    async def revoke_key(self, session: Session, form_token: str, key_id: str) -> Done:
        answer = await self.peers.send(
            "staff",
            f"/keys/{key_id}",
            session.authorization,
            idempotency_key=idempotency_key(session, form_token, "staff", f"/keys/{key_id}"),
            method="DELETE",
        )
        return done_of(answer)

    async def move_complaint(
        self, session: Session, form_token: str, complaint_id: str, form: ComplaintMoveForm
    ) -> Done:
        if form.needs_text and not form.text:
            return Done(False, "required", "text")
        answer = await self._send(
            session, form_token, "complaints", f"/complaints/{complaint_id}/{form.action}", form.body()
        )
        return done_of(answer, "text")
