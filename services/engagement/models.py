"""Request and response shapes of the engagement API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, StringConstraints, model_validator

from services.common.clock import to_rfc3339
from services.common.fields import (
    Cents,
    Channel,
    CityTier,
    CustomerId,
    EntityId,
    Gender,
    Locale,
    ShortText,
    Strict,
)
from services.common.vocabulary import AGE_BAND_NAMES, ChurnLevel, LifecycleStage, LoyaltyTier, Segment

from .domain import (
    DEFAULT_ATTRIBUTION_DAYS,
    DEFAULT_CONTROL_SHARE,
    TRIGGERS,
    Coupon,
)

MessageChannel = Literal["email", "sms", "push"]
Code = Annotated[str, StringConstraints(min_length=4, max_length=40)]


class TemplateIn(Strict):
    subject: Annotated[str, StringConstraints(max_length=500)]
    text: Annotated[str, StringConstraints(max_length=50_000)]
    html: Annotated[str, StringConstraints(max_length=200_000)]


class OfferIn(Strict):
    kind: Literal["amount", "percent"]
    value: Annotated[int, Field(ge=1, le=10_000_000)] = Field(description="Cents off, or percent off")
    min_spend_cents: Cents = 0
    valid_days: Annotated[int, Field(ge=1, le=365)] = 14

    @model_validator(mode="after")
    def _percent(self) -> OfferIn:
        if self.kind == "percent" and self.value > 100:
            raise ValueError("a percent off is at most 100")
        return self


class CampaignIn(Strict):
    campaign_id: EntityId | None = Field(None, description="Generated when absent")
    name: ShortText
    kind: Literal["triggered", "one_off", "holiday", "manual"] = Field(
        "triggered",
        description="holiday: its audience on each date of `holiday` in the calendar; "
        "manual: one customer at a time (a churn-warning action)",
    )
    holiday: ShortText | None = Field(None, description="A holiday campaign's name in the holiday calendar")
    trigger: Literal[tuple(TRIGGERS)] | None = Field(  # type: ignore[valid-type]
        None, description="The signal a triggered campaign follows"
    )
    channel: MessageChannel = "email"
    purpose: Literal["marketing", "service"] = "marketing"
    templates: Annotated[dict[Locale, TemplateIn], Field(min_length=1)]
    default_locale: Locale = "zh-CN"
    offer: OfferIn | None = None
    control_share: Annotated[float, Field(ge=0, le=0.5)] = DEFAULT_CONTROL_SHARE
    attribution_days: Annotated[int, Field(ge=1, le=90)] = DEFAULT_ATTRIBUTION_DAYS
    recipients: Annotated[list[CustomerId], Field(max_length=200_000)] | None = Field(
        None, description="A one-off campaign's recipients, listed"
    )
    audience_id: EntityId | None = Field(
        None, description="A one-off campaign's saved audience, resolved now"
    )
    scheduled_at: AwareDatetime | None = Field(None, description="When a one-off campaign goes out")

    @model_validator(mode="after")
    def _kind(self) -> CampaignIn:
        if self.kind == "triggered" and self.trigger is None:
            raise ValueError("a triggered campaign needs a trigger")
        if self.kind == "one_off" and (self.recipients is None) == (self.audience_id is None):
            raise ValueError("a one-off campaign needs recipients or an audience_id, one of them")
        if self.kind == "holiday" and (self.holiday is None or self.audience_id is None):
            raise ValueError("a holiday campaign needs a holiday and an audience_id")
        return self


class ChurnActionIn(Strict):
    customer_id: CustomerId
    action: Literal["coupon", "email"]
    episode_id: EntityId


Risk = Annotated[float, Field(ge=0, le=1)]
Days = Annotated[int, Field(ge=0, le=36_500)]


class AudienceFilters(Strict):
    """Profile fields, as the profiles search filters them (GET /customers there); the churn
    risk ceiling and the last-purchase range are applied here to what the search returns
    (domain.LOCAL_FILTERS)."""

    segment: Segment | None = None
    lifecycle_stage: LifecycleStage | None = None
    abc_class: Literal["A", "B", "C"] | None = None
    tier: LoyaltyTier | None = None
    churn_level: ChurnLevel | None = None
    min_risk: Risk | None = None
    max_risk: Risk | None = Field(
        None, description="Churn risk at most this (unscored customers are left out)"
    )
    city: ShortText | None = None
    city_tier: CityTier | None = None
    gender: Gender | None = None
    age_band: Literal[AGE_BAND_NAMES] | None = None  # type: ignore[valid-type]
    channel: Channel | None = Field(None, description="The channel the customer registered through")
    registered_from: AwareDatetime | None = None
    registered_to: AwareDatetime | None = None
    last_purchase_min_days: Days | None = Field(
        None, description="Last purchase at least this many days ago (as last scored)"
    )
    last_purchase_max_days: Days | None = Field(
        None, description="Last purchase at most this many days ago; customers who never bought are left out"
    )

    @model_validator(mode="after")
    def _ranges(self) -> AudienceFilters:
        if None not in (self.min_risk, self.max_risk) and self.min_risk > self.max_risk:
            raise ValueError("min_risk is above max_risk")
        if (
            None not in (self.last_purchase_min_days, self.last_purchase_max_days)
            and self.last_purchase_min_days > self.last_purchase_max_days
        ):
            raise ValueError("last_purchase_min_days is above last_purchase_max_days")
        if (
            None not in (self.registered_from, self.registered_to)
            and self.registered_from > self.registered_to
        ):
            raise ValueError("registered_from is after registered_to")
        return self


class AudienceIn(Strict):
    audience_id: EntityId | None = Field(None, description="Generated when absent")
    name: ShortText
    filters: AudienceFilters


class PreviewIn(Strict):
    customer_id: CustomerId
    locale: Locale | None = None


class ReservationIn(Strict):
    customer_id: CustomerId
    order_id: EntityId
    subtotal_cents: Cents


class ReleaseIn(Strict):
    order_id: EntityId


class NotificationIn(Strict):
    """A service message to a member of staff (an escalation notice): no customer, no
    campaign, no consent needed; sent by email like any service message."""

    to: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)]
    subject: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    text: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]


class ReceiptIn(Strict):
    """The SMS and push provider's delivery receipt for a message it was handed: our
    `message_id` (sent to it in the webhook's body and as its Idempotency-Key)."""

    message_id: EntityId
    status: Literal["delivered", "failed"]
    reason: ShortText | None = Field(None, description="Why it failed (required when failed)")
    provider_message_id: ShortText | None = Field(None, description="The provider's own id, kept")

    @model_validator(mode="after")
    def _reason(self) -> ReceiptIn:
        if self.status == "failed" and self.reason is None:
            raise ValueError("a failed receipt needs its reason")
        return self


def _ts(value: Any) -> Any:
    return to_rfc3339(value) if value is not None and not isinstance(value, str) else value


def present_campaign(c: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in c.items() if k not in ("_id", "recipients")}
    out["campaign_id"] = c["_id"]
    if "recipients" in c:
        out["recipients"] = len(c["recipients"])
    return {k: _ts(v) if k.endswith("_at") else v for k, v in out.items()}


def present_message(m: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in m.items() if k not in ("_id", "lease_ts", "retry_ts", "due_ts", "claim")}
    out["message_id"] = m["_id"]
    return {k: _ts(v) if k.endswith("_at") else v for k, v in out.items()}


def present_coupon(c: Coupon, coupon_id: str) -> dict[str, Any]:
    return {
        "code": c.code,
        "coupon_id": coupon_id,
        "customer_id": c.customer_id,
        "campaign_id": c.campaign_id,
        "kind": c.offer.kind,
        "value": c.offer.value,
        "min_spend_cents": c.offer.min_spend_cents,
        "issued_at": _ts(c.issued_at),
        "expires_at": _ts(c.expires_at),
        "state": c.state.value,
        "order_id": c.order_id,
    }
