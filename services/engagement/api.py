"""HTTP entrypoints of the engagement service: translate requests to use cases, nothing more.
The tracking, unsubscribe and mailbox-free routes customers reach from a message carry a
signature instead of an API key, and so do the SMS and push provider's delivery receipts."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, ORJSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from services.common.auth import Principal, require
from services.common.endpoints import RequiredIdempotencyHeader, answer, idempotency
from services.common.fields import CustomerId, EntityId, Limit
from services.common.problems import Problem

from .channels import signed_by_provider
from .models import (
    AudienceIn,
    CampaignIn,
    ChurnActionIn,
    NotificationIn,
    PreviewIn,
    ReceiptIn,
    ReleaseIn,
    ReservationIn,
)
from .service import EngagementService

router = APIRouter()
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def engagement(request: Request) -> EngagementService:
    return request.app.state.engagement


# --- campaigns -------------------------------------------------------------------------------------


@router.post("/campaigns", status_code=201, tags=["campaigns"], summary="Create a campaign")
async def create_campaign(
    body: CampaignIn,
    request: Request,
    _: Principal = Depends(require("agent")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    # A saved audience is resolved through the profiles search with the caller's key.
    created = await service.create_campaign(body, request.headers.get("authorization"))
    return ORJSONResponse(created, status_code=201)


@router.post(
    "/audiences", status_code=201, tags=["audiences"], summary="Save an audience over profile fields"
)
async def save_audience(
    body: AudienceIn,
    request: Request,
    _: Principal = Depends(require("agent")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    answer = await service.save_audience(body, request.headers.get("authorization"))
    return ORJSONResponse(answer, status_code=201)


@router.get("/audiences/{audience_id}", tags=["audiences"], summary="An audience counted live, with a sample")
async def get_audience(
    audience_id: EntityId,
    request: Request,
    _: Principal = Depends(require("viewer")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    return ORJSONResponse(await service.audience(audience_id, request.headers.get("authorization")))


@router.post("/campaigns/{campaign_id}/pause", tags=["campaigns"], summary="Enrol nobody new")
async def pause_campaign(
    campaign_id: EntityId,
    _: Principal = Depends(require("agent")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    return ORJSONResponse(await service.set_status(campaign_id, "paused"))


@router.post("/campaigns/{campaign_id}/resume", tags=["campaigns"], summary="Enrol again")
async def resume_campaign(
    campaign_id: EntityId,
    _: Principal = Depends(require("agent")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    return ORJSONResponse(await service.set_status(campaign_id, "active"))


@router.get("/campaigns", tags=["campaigns"], summary="Every campaign")
async def list_campaigns(
    _: Principal = Depends(require("viewer")), service: EngagementService = Depends(engagement)
) -> ORJSONResponse:
    return ORJSONResponse({"items": await service.campaigns()})


@router.get(
    "/campaigns/{campaign_id}/report",
    tags=["campaigns"],
    summary="Sent, delivered, opened, clicked, converted, revenue; uplift against the control group",
)
async def campaign_report(
    campaign_id: EntityId,
    _: Principal = Depends(require("viewer")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    return ORJSONResponse(await service.report(campaign_id))


@router.get("/campaigns/{campaign_id}/messages", tags=["campaigns"], summary="The campaign's messages")
async def campaign_messages(
    campaign_id: EntityId,
    limit: Limit = 100,
    cursor: str | None = None,
    _: Principal = Depends(require("agent")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    return ORJSONResponse(await service.messages(campaign_id, limit, cursor))


@router.get(
    "/contacts/{customer_id}", tags=["consent"], summary="How engagement reaches a customer, and consent"
)
async def get_contact(
    customer_id: CustomerId,
    _: Principal = Depends(require("agent")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    return ORJSONResponse(await service.contact(customer_id))


@router.post(
    "/campaigns/{campaign_id}/preview",
    tags=["campaigns"],
    summary="The message as a real customer would get it",
)
async def preview(
    campaign_id: EntityId,
    body: PreviewIn,
    _: Principal = Depends(require("agent")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    return ORJSONResponse(await service.preview(campaign_id, body.customer_id, body.locale))


@router.post(
    "/churn-actions", tags=["campaigns"], summary="A churn-warning action: issue the coupon, send the message"
)
async def churn_action(
    body: ChurnActionIn,
    _: Principal = Depends(require("agent")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    return ORJSONResponse(await service.churn_action(body.customer_id, body.action, body.episode_id))


# --- coupons (orders asks these with the caller's key) -----------------------------------------------


@router.get("/coupons/{code}", tags=["coupons"], summary="A coupon by its code")
async def get_coupon(
    code: str,
    principal: Principal = Depends(require("agent")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    return ORJSONResponse(await service.coupon(code[:40], principal.label))


@router.post(
    "/coupons/{code}/reservations",
    tags=["coupons"],
    summary="Hold a coupon for an order; the discount it gives",
)
async def reserve_coupon(
    code: str,
    body: ReservationIn,
    principal: Principal = Depends(require("agent")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    return ORJSONResponse(
        await service.reserve(
            code[:40], body.customer_id, body.order_id, body.subtotal_cents, principal.label
        )
    )


@router.post("/coupons/{code}/release", tags=["coupons"], summary="Let go of a coupon an order held")
async def release_coupon(
    code: str,
    body: ReleaseIn,
    principal: Principal = Depends(require("agent")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    return ORJSONResponse(await service.release(code[:40], body.order_id, principal.label))


# --- what customers reach from a message (signed links, no API key) -----------------------------------


@router.get("/t/o/{message_id}.gif", tags=["tracking"], summary="Open pixel", include_in_schema=False)
async def open_pixel(
    message_id: EntityId, s: str = "", service: EngagementService = Depends(engagement)
) -> Response:
    await service.opened(message_id, s)
    return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})


@router.get("/t/c/{message_id}", tags=["tracking"], summary="Tracked redirect", include_in_schema=False)
async def click(
    message_id: EntityId, u: str, s: str = "", service: EngagementService = Depends(engagement)
) -> RedirectResponse:
    return RedirectResponse(await service.clicked(message_id, u, s), status_code=302)


UNSUBSCRIBE_PAGE = """<!doctype html><html lang="en"><meta charset="utf-8"><title>Unsubscribe</title>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto">{body}</body></html>"""


@router.get("/unsubscribe", tags=["consent"], summary="The unsubscribe page a link opens")
async def unsubscribe_page(c: CustomerId, ch: str, t: str, m: str | None = None) -> HTMLResponse:
    # A GET changes nothing (mail scanners follow links); the button posts, as RFC 8058 does.
    form = (
        f'<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        f"<p>Stop marketing messages by {ch} / 不再接收营销{ch}消息?</p>"
        f"<button>Unsubscribe / 退订</button></form>"
    )
    return HTMLResponse(UNSUBSCRIBE_PAGE.format(body=form))


@router.post("/unsubscribe", tags=["consent"], summary="RFC 8058 one-click unsubscribe")
async def unsubscribe(
    c: CustomerId,
    ch: str,
    t: str,
    m: str | None = None,
    one_click: Annotated[str | None, Form(alias="List-Unsubscribe")] = None,
    service: EngagementService = Depends(engagement),
) -> HTMLResponse:
    await service.unsubscribe(c, ch, t, m)
    return HTMLResponse(
        UNSUBSCRIBE_PAGE.format(body=f"<p>You will get no more marketing by {ch}. / 已退订。</p>")
    )


# --- the SMS and push provider's delivery receipts (signed like the webhook, no API key) -------------


@router.post(
    "/providers/{channel}/receipts",
    tags=["providers"],
    summary="The SMS or push provider's delivery receipt: a sent message delivered or failed",
)
async def provider_receipt(
    channel: Literal["sms", "push"],
    request: Request,
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    # The signature covers the body's bytes as sent, so it is checked before they are parsed.
    raw = await request.body()
    if not signed_by_provider(
        service.settings.webhook_secret,
        request.headers.get("x-crm-timestamp"),
        raw,
        request.headers.get("x-crm-signature"),
        time.time(),
    ):
        raise Problem(401, "the receipt's X-CRM-Signature does not match (or its X-CRM-Timestamp is stale)")
    try:
        body = ReceiptIn.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    return ORJSONResponse(await service.receipt(channel, body))


# --- notices to staff (the case desk's escalations) ------------------------------------------------


@router.post(
    "/notifications",
    status_code=201,
    tags=["notifications"],
    summary="A service email to a member of staff, once per Idempotency-Key",
)
async def notify(
    body: NotificationIn,
    key: RequiredIdempotencyHeader,
    principal: Principal = Depends(require("agent")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    idem = idempotency(key, principal, "POST /notifications", body)
    return answer(await service.notify(body, idem))


# --- the embedded stack's local mailbox -------------------------------------------------------------


@router.get("/mailbox", tags=["mailbox"], summary="What the local SMTP server received (embedded stack)")
async def mailbox(
    to: str | None = None,
    _: Principal = Depends(require("viewer")),
    service: EngagementService = Depends(engagement),
) -> ORJSONResponse:
    items: list[dict[str, Any]] = service.mailbox()
    if to:
        items = [m for m in items if to in (m["to"] or "")]
    return ORJSONResponse({"items": items})
