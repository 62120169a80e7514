"""Engagement use cases: contacts and consent from the customers' events, campaigns and who
each one reaches (consent, the control group, pacing), the sender that hands each message
to its channel exactly once, tracking, one-click unsubscribe, coupons and the campaign
report."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import html
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import structlog
from motor.motor_asyncio import AsyncIOMotorClientSession
from prometheus_client import Counter
from pymongo.errors import DuplicateKeyError

from services.common import kafka
from services.common.clock import Clock, SystemClock, to_rfc3339
from services.common.errors import Kind
from services.common.fields import new_id
from services.common.peers import Peers, Unavailable
from services.common.problems import Problem
from services.common.settings import Settings
from services.common.writes import IdempotencyKey, Outcome, Writes
from services.stack.smtp import read_mailbox

from . import domain, templates
from .channels import Accepted, EmailTransport, Outgoing, Refused, Retry, WebhookTransport
from .domain import Arm, Contact, Offer, Purpose, Receipt, State
from .events import CONSUMED, GROUP, event, message_event
from .models import (
    AudienceIn,
    CampaignIn,
    NotificationIn,
    ReceiptIn,
    present_campaign,
    present_coupon,
    present_message,
)
from .stock import CHURN_ACTION_CAMPAIGNS
from .store import EngagementStore, coupon_id_of
from .store import contact_from as store_contact

log = structlog.get_logger(__name__)
MESSAGES = Counter(
    "crm_engagement_messages_total", "Messages by channel and outcome.", ["channel", "outcome"]
)
COUPONS = Counter("crm_engagement_coupons_total", "Coupons issued, reserved, redeemed, released.", ["what"])
SEND_BATCH = 500
SEND_LEASE = timedelta(minutes=2)
ENROL_CHUNK = 500
OVERLAP = timedelta(hours=1)  # two campaigns reaching one customer this close: one message
# What an audience's preview shows of each sample customer (the profiles search's row).
SAMPLE_FIELDS = (
    "customer_id",
    "name",
    "segment",
    "tier",
    "city",
    "city_tier",
    "gender",
    "birth_date",
    "channel",
    "churn_risk",
    "recency_days",
)


def message_id_of(campaign_id: str, customer_id: str, occasion: str = "") -> str:
    """One message per campaign, customer and occasion (this year's birthday, this churn
    episode), whatever is redelivered or restarted."""
    return "m-" + hashlib.sha256(f"{campaign_id}\x00{customer_id}\x00{occasion}".encode()).hexdigest()[:24]


def released(coupon: domain.Coupon, order_id: str, at: datetime) -> dict[str, Any]:
    data = {
        "customer_id": coupon.customer_id,
        "coupon_id": coupon_id_of(coupon.code),
        "campaign_id": coupon.campaign_id,
        "order_id": order_id,
        "released_at": at,
    }
    return event("coupon.released", data, at)


class EngagementService:
    def __init__(
        self, store: EngagementStore, writes: Writes, clock: Clock, settings: Settings, peers: Peers
    ) -> None:
        self.store = store
        self.writes = writes
        self.clock = clock
        self.wall = SystemClock()  # retries and claims: operational time, not the business clock
        self.settings = settings
        self.peers = peers
        self.public_url = (settings.engagement_public_url or settings.url_of("engagement")).rstrip("/")
        self.transports = {
            "email": EmailTransport(settings),
            "sms": WebhookTransport(settings),
            "push": WebhookTransport(settings),
        }
        self.calendar = (
            domain.load_calendar(settings.engagement_holidays_file.read_text())
            if settings.engagement_holidays_file
            else {}
        )
        self._wake = asyncio.Event()
        self._guesses: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    # --- consuming (events.CONSUMED says which) --------------------------------------------------

    async def consume(self, settings: Settings, stop: asyncio.Event) -> None:
        await kafka.consume(settings, GROUP, CONSUMED.topics, CONSUMED.one_by_one(self), stop)

    async def contact_changed(self, customer_id: str, fields: dict[str, Any]) -> None:
        await self.store.merge_contact(customer_id, fields)

    async def forget(self, customer_id: str) -> None:
        """Erasure: nothing more is sent, and what was sent loses its personal content."""
        await self.store.erase_contact(customer_id)
        await self.store.scrub_messages(customer_id, "erased")

    async def signalled(
        self, trigger: str, customer_id: str, context: dict[str, Any], occasion: str, at: datetime
    ) -> None:
        for campaign in await self.store.triggered_by(trigger):
            await self.enrol(campaign, [customer_id], context, occasion=occasion)

    async def ensure_stock(self) -> None:
        """The campaigns the churn-warning workflow's actions send, created once."""
        for body in CHURN_ACTION_CAMPAIGNS.values():
            if await self.store.campaign(body["campaign_id"]) is None:
                with contextlib.suppress(Problem):
                    await self.create_campaign(CampaignIn.model_validate({**body, "kind": "manual"}))

    async def churn_action(self, customer_id: str, action: str, episode_id: str) -> dict[str, Any]:
        """An agent's `coupon` or `email` action on a churn warning: a real coupon and a real
        message, once per warning and action, measured in that campaign's report."""
        campaign = await self.campaign(CHURN_ACTION_CAMPAIGNS[action]["campaign_id"])
        states = await self.enrol(campaign, [customer_id], {"episode_id": episode_id}, occasion=episode_id)
        message_id = message_id_of(campaign["_id"], customer_id, episode_id)
        message = await self.store.message(message_id)
        return {
            "campaign_id": campaign["_id"],
            "message_id": message_id,
            "state": message["state"] if message else states.get(customer_id),
            "reason": message.get("reason") if message else None,
            "coupon_id": message.get("coupon_id") if message else None,
        }

    async def recovered(self, episode_id: str, customer_id: str, at: datetime) -> None:
        await self.store.add_recovery(episode_id, customer_id, at)

    # --- campaigns -------------------------------------------------------------------------------

    # --- audiences (saved filters over profile fields, resolved by the profiles search) ------------

    async def save_audience(self, body: AudienceIn, authorization: str | None) -> dict[str, Any]:
        audience = {
            "_id": body.audience_id or new_id("aud"),
            "name": body.name,
            "filters": body.filters.model_dump(mode="json", exclude_none=True),
            "created_at": self.clock.now(),
        }
        try:
            await self.store.add_audience(audience)
        except DuplicateKeyError:
            raise Problem(409, f"audience {audience['_id']} already exists") from None
        return await self.audience(audience["_id"], authorization)

    async def audience(self, audience_id: str, authorization: str | None) -> dict[str, Any]:
        """The definition, counted live, with a few of its customers as a sample."""
        found = await self.store.audience(audience_id)
        if found is None:
            raise Problem(404, f"no audience {audience_id}")
        rows = await self._search(found["filters"], authorization)
        sample = [{k: r.get(k) for k in SAMPLE_FIELDS} for r in rows[:5]]
        return {
            "audience_id": found["_id"],
            "name": found["name"],
            "filters": found["filters"],
            "count": len(rows),
            "sample": sample,
        }

    async def audience_members(self, audience_id: str, authorization: str | None) -> list[str]:
        found = await self.store.audience(audience_id)
        if found is None:
            raise Problem(404, f"no audience {audience_id}")
        return [r["customer_id"] for r in await self._search(found["filters"], authorization)]

    async def _search(self, filters: dict[str, Any], authorization: str | None) -> list[dict[str, Any]]:
        try:
            rows = await self.peers.every_page(
                "profiles", "/customers", authorization, **domain.search_filters(filters)
            )
        except Unavailable as exc:
            raise Problem(503, f"the profiles search is unavailable: {exc.answer.error}") from None
        return [row for row in rows if domain.in_audience(row, filters)]

    async def create_campaign(self, body: CampaignIn, authorization: str | None = None) -> dict[str, Any]:
        templates.check({k: v.model_dump() for k, v in body.templates.items()})
        campaign = body.model_dump(exclude={"campaign_id", "recipients"})
        campaign["_id"] = body.campaign_id or new_id("cmp")
        campaign["status"] = "active"
        campaign["created_at"] = self.clock.now()
        if body.kind == "holiday" and body.holiday not in self.calendar:
            known = ", ".join(sorted(self.calendar)) or "none (CRM_ENGAGEMENT_HOLIDAYS_FILE is not set)"
            raise Problem(422, f"no holiday {body.holiday!r} in the calendar; known: {known}")
        recipients = body.recipients
        if body.audience_id is not None and body.kind == "one_off":
            recipients = await self.audience_members(body.audience_id, authorization)
        if recipients is not None:
            # Enrolled in the background (run_enroller), so a large audience does not hold the request.
            campaign.update(recipients=list(dict.fromkeys(recipients)), enrolled=0, status="enrolling")
        try:
            await self.store.add_campaign(campaign)
        except DuplicateKeyError:
            raise Problem(409, f"campaign {campaign['_id']} already exists") from None
        return present_campaign(campaign)

    async def campaign(self, campaign_id: str) -> dict[str, Any]:
        found = await self.store.campaign(campaign_id)
        if found is None:
            raise Problem(404, f"no campaign {campaign_id}")
        return found

    async def set_status(self, campaign_id: str, status: str) -> dict[str, Any]:
        """Pause or resume: a paused campaign enrols nobody new; queued messages still go."""
        campaign = await self.campaign(campaign_id)
        if campaign["status"] == "enrolling":
            raise Problem(409, "the campaign is still enrolling its recipients")
        await self.store.set_status(campaign_id, status)
        return present_campaign({**campaign, "status": status})

    async def campaigns(self) -> list[dict[str, Any]]:
        return [present_campaign(c) for c in await self.store.campaigns_list()]

    async def enrol(
        self,
        campaign: dict[str, Any],
        customer_ids: list[str],
        context: dict[str, Any],
        not_before: datetime | None = None,
        occasion: str = "",
    ) -> dict[str, str]:
        """Each customer's one message of this campaign, decided in one transaction: held out
        (control), suppressed (why), or rendered and queued with its coupon. Customers who
        already have one are skipped. Returns the new messages' states by customer."""
        now = self.clock.now()
        purpose = Purpose(campaign["purpose"])
        channel = campaign["channel"]

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            ids = [message_id_of(campaign["_id"], c, occasion) for c in customer_ids]
            taken = await self.store.existing_messages(ids, session)
            fresh = [c for c, m in zip(customer_ids, ids, strict=True) if m not in taken]
            contacts = await self.store.contacts_of(fresh, session)
            recent = (
                await self.store.recent_marketing(
                    fresh, now - timedelta(days=domain.DEFAULT_CAP_DAYS), session
                )
                if purpose is Purpose.MARKETING
                else {}
            )
            messages, events = [], []
            for customer_id in dict.fromkeys(fresh):
                contact = contacts.get(customer_id) or Contact(customer_id)
                message: dict[str, Any] = {
                    "_id": message_id_of(campaign["_id"], customer_id, occasion),
                    "campaign_id": campaign["_id"],
                    "customer_id": customer_id,
                    "occasion": occasion,
                    "channel": channel,
                    "purpose": purpose.value,
                    "assigned_at": now,
                    "due_at": max(now, not_before or now),
                    "attempts": 0,
                    "retry_ts": 0.0,  # epoch seconds: see store.due
                    "opened": False,  # flags the first open, click, unsubscribe (store.mark_once)
                    "clicked": False,
                    "unsubscribed": False,
                    "group": None,
                    "reason": None,
                }
                why_not = domain.may_send(contact, channel, purpose)
                if why_not is not None:
                    # Not in the experiment at all: neither arm holds people nobody may reach.
                    message.update(state=State.SUPPRESSED.value, reason=why_not)
                elif domain.in_control(campaign["_id"], customer_id, campaign["control_share"]):
                    message.update(state=State.HELD_OUT.value, group="control")
                else:
                    message["group"] = "treated"  # from here on measured as treated, sent or not
                    why_capped = self._paced(recent.get(customer_id, []), purpose, now)
                    if why_capped is not None:
                        message.update(state=State.SUPPRESSED.value, reason=why_capped)
                    else:
                        events += await self._compose(campaign, contact, context, message, now, session)
                messages.append(message)
            await self.store.add_messages(messages, session)
            return Outcome(200, {m["customer_id"]: m["state"] for m in messages}, events)

        outcome = await self.writes.run(work)
        if State.PENDING.value in outcome.body.values():
            self._wake.set()
        return outcome.body

    def _paced(self, recent: list[datetime], purpose: Purpose, now: datetime) -> str | None:
        if purpose is not Purpose.MARKETING:
            return None
        if any(abs(at - now) < OVERLAP for at in recent):
            return "another campaign reaches this customer at the same time"
        if not domain.within_cap(recent, now, domain.DEFAULT_CAP, domain.DEFAULT_CAP_DAYS):
            return f"frequency cap: {domain.DEFAULT_CAP} marketing messages in {domain.DEFAULT_CAP_DAYS} days"
        return None

    async def run_enroller(self, stop: asyncio.Event) -> None:
        """One-off campaigns enrol their recipients here, a chunk at a time, from where the
        last chunk ended (a restart repeats at most one chunk, which changes nothing)."""
        while not stop.is_set():
            try:
                busy = await self.enrol_next_chunk()
            except Exception:  # noqa: BLE001 - the database may be away; the next round retries
                log.exception("enrolment round failed")
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.engagement_send_seconds)

    async def run_holidays(self, stop: asyncio.Event) -> None:
        """Each holiday campaign reaches its saved audience once on each of its dates: the date
        is the occasion, so a second round that day (or a restart) adds nobody twice."""
        while not stop.is_set():
            try:
                await self.holiday_round()
            except Exception:  # noqa: BLE001 - profiles or the database may be away; retried next round
                log.exception("holiday round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(self.settings.engagement_send_seconds, 1.0) * 5)

    async def holiday_round(self) -> None:
        now = self.clock.now()
        key = self.settings.engagement_api_key
        for campaign in await self.store.holiday_campaigns():
            today = domain.holiday_today(
                self.calendar, campaign["holiday"], now, self.settings.engagement_timezone
            )
            if today is None or today.isoformat() in campaign.get("runs", []):
                continue
            members = await self.audience_members(campaign["audience_id"], f"Bearer {key}" if key else None)
            for k in range(0, len(members), ENROL_CHUNK):
                await self.enrol(
                    campaign,
                    members[k : k + ENROL_CHUNK],
                    {"holiday": campaign["holiday"]},
                    occasion=today.isoformat(),
                )
            await self.store.ran(campaign["_id"], today.isoformat())

    async def enrol_next_chunk(self) -> bool:
        campaign = await self.store.enrolling()
        if campaign is None:
            return False
        start = campaign.get("enrolled", 0)
        chunk = campaign["recipients"][start : start + ENROL_CHUNK]
        if chunk:
            await self.enrol(campaign, chunk, {}, not_before=campaign.get("scheduled_at"))
        await self.store.enrolled(campaign["_id"], start + len(chunk), done=not chunk)
        return True

    async def _compose(
        self,
        campaign: dict[str, Any],
        contact: Contact,
        context: dict[str, Any],
        message: dict[str, Any],
        now: datetime,
        session: AsyncIOMotorClientSession,
    ) -> list[dict[str, Any]]:
        """Issue the coupon, render the message, set when it may go (after quiet hours)."""
        events: list[dict[str, Any]] = []
        offer = None
        if campaign.get("offer"):
            coupon = domain.issue(
                domain.new_code(), contact.customer_id, campaign["_id"], Offer(**campaign["offer"]), now
            )
            await self.store.add_coupon(coupon, session)
            message["coupon_id"] = coupon_id_of(coupon.code)
            offer = present_coupon(coupon, message["coupon_id"])
            events.append(
                event(
                    "coupon.issued",
                    {
                        "customer_id": coupon.customer_id,
                        "coupon_id": message["coupon_id"],
                        "campaign_id": coupon.campaign_id,
                        **{k: offer[k] for k in ("kind", "value", "min_spend_cents")},
                        "expires_at": coupon.expires_at,
                        "issued_at": now,
                    },
                    now,
                )
            )
            COUPONS.labels("issued").inc()
        rendered = templates.render(
            campaign["templates"],
            contact.locale or campaign["default_locale"],
            self.render_data(contact, context, offer, message),
        )
        message.update(
            state=State.PENDING.value,
            to=domain.address(contact, campaign["channel"]),
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html + self._pixel(message["_id"]),
        )
        if message["purpose"] == Purpose.MARKETING.value:
            zone = contact.time_zone or self.settings.engagement_timezone
            message["due_at"] = domain.after_quiet_hours(message["due_at"], zone)
        return events

    def render_data(
        self, contact: Contact, context: dict[str, Any], offer: dict[str, Any] | None, message: dict[str, Any]
    ) -> dict[str, Any]:
        message_id = message["_id"]

        def track(url: str) -> str:
            return (
                f"{self.public_url}/t/c/{message_id}?u={quote(url, safe='')}&s={self._sig(message_id, url)}"
            )

        return {
            "customer": {
                k: getattr(contact, k)
                for k in ("customer_id", "name", "city", "gender", "birth_date", "email")
            },
            "signal": context,
            "offer": offer,
            "unsubscribe_url": self.unsubscribe_url(contact.customer_id, message["channel"], message_id)
            if message["purpose"] == Purpose.MARKETING.value
            else None,
            "track": track,
        }

    def _sig(self, *parts: str) -> str:
        return domain.sign(self.settings.engagement_secret, *parts)

    def _pixel(self, message_id: str) -> str:
        src = f"{self.public_url}/t/o/{message_id}.gif?s={self._sig(message_id, 'open')}"
        return f'<img src="{src}" width="1" height="1" alt="" style="display:none">'

    def unsubscribe_url(self, customer_id: str, channel: str, message_id: str) -> str:
        token = self._sig(customer_id, channel, "unsubscribe")
        return f"{self.public_url}/unsubscribe?c={quote(customer_id)}&ch={channel}&m={message_id}&t={token}"

    async def preview(self, campaign_id: str, customer_id: str, locale: str | None) -> dict[str, Any]:
        """The campaign's message as this customer would get it (no coupon is issued: the
        offer shows a sample code)."""
        campaign = await self.campaign(campaign_id)
        contact = await self.store.contact(customer_id)
        if contact.email is None and contact.name is None and not contact.consent:
            raise Problem(404, f"no customer {customer_id} known to engagement")
        sample = (
            {**campaign["offer"], "code": "SAMP-LE00-CODE", "expires_at": to_rfc3339(self.clock.now())}
            if campaign.get("offer")
            else None
        )
        message = {"_id": "m-preview", "channel": campaign["channel"], "purpose": campaign["purpose"]}
        rendered = templates.render(
            campaign["templates"],
            locale or contact.locale or campaign["default_locale"],
            self.render_data(contact, {}, sample, message),
        )
        return {"subject": rendered.subject, "text": rendered.text, "html": rendered.html}

    # --- sending ---------------------------------------------------------------------------------

    async def run_sender(self, stop: asyncio.Event) -> None:
        try:
            await self.store.backfill_due_ts()
        except Exception:  # noqa: BLE001 - the database may be away: done at the next start
            log.exception("could not give queued messages their due_ts")
        while not stop.is_set():
            try:
                sent = await self.send_due()
            except Exception:  # noqa: BLE001 - the database may be away; the next round retries
                log.exception("sender round failed")
                sent = 0
            if sent:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.engagement_send_seconds)
            self._wake.clear()

    async def send_due(self) -> int:
        """Claim due messages, hand them to their channel, record each answer. A message is
        claimed before it is sent and marked sent right after the relay took it, so a restart
        never sends it again, except when the process dies in the instant between the two:
        then its claim runs out and it goes once more with the same Message-ID, by which a
        relay or mail client recognises the copy."""
        now, wall = self.clock.now(), self.wall.now()
        await self.store.reclaim_stale(wall)
        due = await self.store.due(now, wall, SEND_BATCH)
        claimed = await self.store.claim([d["_id"] for d in due], wall, SEND_LEASE) if due else []
        if not claimed:
            return 0
        by_channel: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for message in claimed:
            by_channel[message["channel"]].append(message)
        for channel, messages in by_channel.items():
            outgoing = [self._outgoing(m) for m in messages]
            results = await asyncio.to_thread(self.transports[channel].send_batch, outgoing, now)
            await self._record(messages, results)
        return len(claimed)

    def _outgoing(self, m: dict[str, Any]) -> Outgoing:
        unsubscribe = (
            self.unsubscribe_url(m["customer_id"], m["channel"], m["_id"])
            if m["purpose"] == Purpose.MARKETING.value
            else None
        )
        return Outgoing(
            m["_id"], m["channel"], m["to"], m["subject"], m["text"], m["html"], unsubscribe, m["customer_id"]
        )

    async def _record(self, messages: list[dict[str, Any]], results: list[Any]) -> None:
        now, wall = self.clock.now(), self.wall.now()

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            events, accepted, final = [], [], []
            for message, result in zip(messages, results, strict=True):
                attempts = message.get("attempts", 0) + 1
                about_customer = message.get("customer_id") is not None  # not a notice to staff
                if isinstance(result, Accepted):
                    (final if result.final else accepted).append(message["_id"])
                    if about_customer:
                        events.append(
                            message_event("sent", message, now, purpose=message["purpose"], sent_at=now)
                        )
                    if result.final and about_customer:
                        events.append(message_event("delivered", message, now, delivered_at=now))
                elif isinstance(result, Retry) and attempts < domain.MAX_ATTEMPTS:
                    fields = {
                        "state": State.PENDING.value,
                        "reason": str(result)[:200],
                        "retry_ts": domain.retry_at(
                            wall, attempts, self.settings.engagement_retry_seconds
                        ).timestamp(),
                    }
                    await self.store.finish([message["_id"]], fields, session)
                else:
                    reason = (
                        str(result) if isinstance(result, Refused) else f"{result} ({attempts} attempts)"
                    )[:200]
                    await self.store.finish(
                        [message["_id"]], {"state": State.FAILED.value, "reason": reason}, session
                    )
                    if about_customer:
                        events.append(
                            message_event(
                                "failed", message, now, reason=reason, attempts=attempts, failed_at=now
                            )
                        )
            sent = {"state": State.SENT.value, "sent_at": now, "reason": None}
            if accepted:
                await self.store.finish(accepted, sent, session)
            if final:
                await self.store.finish(final, {**sent, "delivered_at": now}, session)
            return Outcome(200, None, events)

        await self.writes.run(work)
        for message, result in zip(messages, results, strict=True):
            MESSAGES.labels(message["channel"], type(result).__name__.lower()).inc()

    # --- tracking and unsubscribe ----------------------------------------------------------------

    async def opened(self, message_id: str, token: str) -> None:
        if domain.signed(self.settings.engagement_secret, token, message_id, "open"):
            await self._mark(message_id, "opened_at", "opened")

    async def clicked(self, message_id: str, url: str, token: str) -> str:
        if not domain.signed(self.settings.engagement_secret, token, message_id, url) or not url.startswith(
            ("https://", "http://")
        ):
            raise Problem(404, "no such link")
        await self._mark(message_id, "clicked_at", "clicked", url=url)
        return url

    async def _mark(self, message_id: str, field: str, kind: str, **data: Any) -> None:
        now = self.clock.now()

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            message = await self.store.mark_once(message_id, field, now, session)
            if message is None:
                return Outcome(200, None)
            return Outcome(200, None, [message_event(kind, message, now, **data, **{field: now})])

        await self.writes.run(work)

    async def unsubscribe(self, customer_id: str, channel: str, token: str, message_id: str | None) -> None:
        """RFC 8058 one-click: the consent changes where it lives, in profiles."""
        if channel not in domain.CHANNELS or not domain.signed(
            self.settings.engagement_secret, token, customer_id, channel, "unsubscribe"
        ):
            raise Problem(404, "no such unsubscribe link")
        key = self.settings.engagement_api_key
        answer = await self.peers.send(
            "profiles",
            f"/customers/{quote(customer_id)}/consent",
            f"Bearer {key}" if key else None,
            {"channels": {channel: False}, "source": f"one-click unsubscribe ({message_id or 'link'})"},
            method="PUT",
        )
        if answer.status == "unavailable":
            raise Problem(503, "could not record the unsubscribe now; please try again", retry_after=30)
        if not answer.ok:
            raise Problem(404, "no such unsubscribe link")
        await self.store.merge_contact(customer_id, {f"consent.{channel}": False})
        if message_id:
            await self.store.mark_unsubscribed(message_id, self.clock.now())

    # --- the SMS and push provider's delivery receipts --------------------------------------------

    async def receipt(self, channel: str, body: ReceiptIn) -> dict[str, Any]:
        """The provider reports a message delivered or failed: the message moves once, with its
        event in the same transaction; the same receipt again, or a late one contradicting the
        first, changes nothing (domain.receipt_moves)."""
        now = self.clock.now()

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            message = await self.store.message(body.message_id, session)
            if message is None or message["channel"] != channel:
                raise Problem(404, f"no {channel} message {body.message_id}")
            move = domain.receipt_moves(
                State(message["state"]), message.get("delivered_at") is not None, Receipt(body.status)
            )
            if move is None:
                return Outcome(200, self._receipt_answer(message))
            fields: dict[str, Any] = {"provider_message_id": body.provider_message_id}
            if move is Receipt.DELIVERED:
                fields["delivered_at"] = now
                published = message_event("delivered", message, now, delivered_at=now)
            else:
                reason = f"provider: {body.reason}"[:200]
                fields.update(state=State.FAILED.value, reason=reason, failed_at=now)
                attempts = max(message.get("attempts", 0), 1)
                published = message_event(
                    "failed", message, now, reason=reason, attempts=attempts, failed_at=now
                )
            if await self.store.take_receipt(message["_id"], fields, session) is None:
                # Another receipt for this message came first: its word stands.
                return Outcome(200, self._receipt_answer(await self.store.message(message["_id"], session)))
            return Outcome(200, self._receipt_answer({**message, **fields}), [published])

        return (await self.writes.run(work)).body

    @staticmethod
    def _receipt_answer(message: dict[str, Any]) -> dict[str, Any]:
        return {
            "message_id": message["_id"],
            "state": message["state"],
            "delivered": message.get("delivered_at") is not None,
            "reason": message.get("reason") if message["state"] == State.FAILED.value else None,
        }

    # --- coupons ---------------------------------------------------------------------------------

    async def _slow_guessers(self, caller: str) -> None:
        window = self._guesses[caller]
        cutoff = time.monotonic() - 60
        while window and window[0] < cutoff:
            window.popleft()
        await asyncio.sleep(domain.guess_delay(len(window)))

    async def _coupon_or_404(self, code: str, caller: str, session: AsyncIOMotorClientSession | None = None):
        coupon = await self.store.coupon(domain.normalise_code(code), session)
        if coupon is None:
            self._guesses[caller].append(time.monotonic())
            raise domain.EngagementError(f"no coupon {code}", Kind.NOT_FOUND)
        return coupon

    async def coupon(self, code: str, caller: str) -> dict[str, Any]:
        await self._slow_guessers(caller)
        coupon = await self._coupon_or_404(code, caller)
        return present_coupon(coupon, coupon_id_of(coupon.code))

    async def reserve(
        self, code: str, customer_id: str, order_id: str, subtotal_cents: int, caller: str
    ) -> dict[str, Any]:
        """Hold the code for an order; two orders racing for one code: one wins (the other
        sees it reserved, 409)."""
        await self._slow_guessers(caller)
        now = self.clock.now()

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            coupon = await self._coupon_or_404(code, caller, session)
            held = domain.reserve(coupon, customer_id, order_id, subtotal_cents, now)
            if held is not coupon:
                held = await self.store.save_coupon(held, session)
            body = present_coupon(held, coupon_id_of(held.code))
            body["discount_cents"] = domain.discount_cents(held.offer, subtotal_cents)
            return Outcome(200, body)

        outcome = await self.writes.run(work)
        COUPONS.labels("reserved").inc()
        return outcome.body

    async def release(self, code: str, order_id: str, caller: str) -> dict[str, Any]:
        """Orders lets go of a coupon held for an order it did not place."""
        now = self.clock.now()

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            coupon = await self._coupon_or_404(code, caller, session)
            freed = domain.release(coupon, order_id)
            if freed is None:
                return Outcome(200, present_coupon(coupon, coupon_id_of(coupon.code)))
            coupon = await self.store.save_coupon(freed, session)
            return Outcome(
                200, present_coupon(coupon, coupon_id_of(coupon.code)), [released(coupon, order_id, now)]
            )

        return (await self.writes.run(work)).body

    async def order_paid(self, order_id: str, customer_id: str, cents: int, at: datetime) -> None:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            await self.store.add_purchase(order_id, customer_id, cents, at, session)
            events = []
            for coupon in await self.store.coupons_of_order(order_id, session):
                used = domain.redeem(coupon, order_id)
                if used is None:
                    continue
                await self.store.save_coupon(used, session)
                events.append(
                    event(
                        "coupon.redeemed",
                        {
                            "customer_id": customer_id,
                            "coupon_id": coupon_id_of(coupon.code),
                            "campaign_id": coupon.campaign_id,
                            "order_id": order_id,
                            "discount_cents": domain.discount_cents(coupon.offer, cents),
                            "redeemed_at": at,
                        },
                        at,
                    )
                )
                COUPONS.labels("redeemed").inc()
            return Outcome(200, None, events)

        await self.writes.run(work)

    async def order_cancelled(self, order_id: str, at: datetime) -> None:
        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            await self.store.cancel_purchase(order_id, session)
            events = []
            for coupon in await self.store.coupons_of_order(order_id, session):
                freed = domain.release(coupon, order_id)
                if freed is not None:
                    await self.store.save_coupon(freed, session)
                    events.append(released(coupon, order_id, at))
                    COUPONS.labels("released").inc()
            return Outcome(200, None, events)

        await self.writes.run(work)

    # --- measurement -----------------------------------------------------------------------------

    async def report(self, campaign_id: str) -> dict[str, Any]:
        campaign = await self.campaign(campaign_id)
        days = campaign["attribution_days"]
        rows = await self.store.arms(campaign_id)
        purchases = await self.store.purchases_of([r["customer_id"] for r in rows])
        recoveries = await self.store.recoveries_of([r["customer_id"] for r in rows])
        arms: dict[str, dict[str, Any]] = {
            g: {"customers": 0, "converted": 0, "revenue_cents": 0, "retained": 0}
            for g in ("treated", "control")
        }
        counts = collections.Counter()
        for row in rows:
            arm = arms[row["group"]]
            arm["customers"] += 1
            assigned = row["assigned_at"]
            assigned = assigned if assigned.tzinfo else assigned.replace(tzinfo=self.clock.now().tzinfo)
            window_end = assigned + timedelta(days=days)
            paid = [
                (at, cents)
                for at, cents in purchases.get(row["customer_id"], [])
                if assigned <= at < window_end
            ]
            if paid:
                arm["converted"] += 1
                arm["revenue_cents"] += sum(c for _, c in paid)
            if any(assigned <= at < window_end for at in recoveries.get(row["customer_id"], [])):
                arm["retained"] += 1
            if row["group"] == "treated":
                counts["sent"] += row["state"] == State.SENT.value
                counts["failed"] += row["state"] == State.FAILED.value
                counts["pending"] += row["state"] in (State.PENDING.value, State.SENDING.value)
                counts["suppressed"] += row["state"] == State.SUPPRESSED.value
                for name in ("delivered", "opened", "clicked", "unsubscribed"):
                    counts[name] += row.get(f"{name}_at") is not None
        treated, control = arms["treated"], arms["control"]
        for arm in (treated, control):
            arm["conversion_rate"] = arm["converted"] / arm["customers"] if arm["customers"] else None
            arm["retention_rate"] = arm["retained"] / arm["customers"] if arm["customers"] else None
        lift = domain.uplift(
            Arm(treated["customers"], treated["converted"]), Arm(control["customers"], control["converted"])
        )
        kept = domain.uplift(
            Arm(treated["customers"], treated["retained"]), Arm(control["customers"], control["retained"])
        )
        # Everyone enrolled who is in neither arm (a query on `group: None` matches nothing on
        # the embedded server, so counted as the rest).
        not_eligible = await self.store.messages_of_campaign(campaign_id) - len(rows)
        return {
            "campaign_id": campaign_id,
            "name": campaign["name"],
            "attribution_days": days,
            "audience": len(rows) + not_eligible,
            "not_eligible": not_eligible,
            **{
                k: counts[k]
                for k in (
                    "sent",
                    "delivered",
                    "failed",
                    "pending",
                    "suppressed",
                    "opened",
                    "clicked",
                    "unsubscribed",
                )
            },
            "coupons_redeemed": await self.store.redemptions(campaign_id),
            "treated": treated,
            "control": control,
            "uplift": {"estimate": lift.estimate, "low": lift.low, "high": lift.high, "confidence": 0.95},
            "retention_uplift": {
                "estimate": kept.estimate,
                "low": kept.low,
                "high": kept.high,
                "confidence": 0.95,
            },
        }

    async def messages(self, campaign_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
        await self.campaign(campaign_id)
        items, next_cursor = await self.store.messages_of(campaign_id, limit, cursor)
        return {"items": [present_message(m) for m in items], "next_cursor": next_cursor}

    async def contact(self, customer_id: str) -> dict[str, Any]:
        found = await self.store.contact_document(customer_id)
        if found is None:
            raise Problem(404, f"no contact {customer_id}")
        contact = store_contact(found)
        return {**contact.__dict__, "consent": {c: contact.consent.get(c, False) for c in domain.CHANNELS}}

    # --- notices to staff -------------------------------------------------------------------------

    async def notify(self, body: NotificationIn, key: IdempotencyKey) -> Outcome:
        """Queue a notice to a member of staff (the case desk's escalations): one message per
        Idempotency-Key, sent by the sender like any service message. It is about no customer,
        so it publishes no message events (those are a customer's history)."""
        now = self.clock.now()
        message_id = f"nt-{key.id[:40]}"

        async def work(session: AsyncIOMotorClientSession) -> Outcome:
            text = html.escape(body.text).replace("\n", "<br>")
            message = {
                "_id": message_id,
                "campaign_id": None,
                "customer_id": None,
                "occasion": "",
                "channel": "email",
                "purpose": Purpose.SERVICE.value,
                "assigned_at": now,
                "due_at": now,
                "attempts": 0,
                "retry_ts": 0.0,
                "opened": False,
                "clicked": False,
                "unsubscribed": False,
                "group": None,
                "reason": None,
                "state": State.PENDING.value,
                "to": body.to,
                "subject": body.subject,
                "text": body.text,
                "html": f'<div style="font-family:sans-serif">{text}</div>',
            }
            await self.store.add_messages([message], session)
            return Outcome(201, {"message_id": message_id, "state": State.PENDING.value})

        outcome = await self.writes.run(work, key)
        self._wake.set()
        return outcome

    # --- the embedded stack's mailbox ------------------------------------------------------------

    def mailbox(self) -> list[dict[str, Any]]:
        if self.settings.mailbox_dir is None:
            raise Problem(404, "no local mailbox: this platform sends through a real relay")
        return read_mailbox(self.settings.mailbox_dir)
