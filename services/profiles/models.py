"""Request and response shapes of the profiles API."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from services.common.clock import parse_rfc3339, to_rfc3339
from services.common.fields import (
    Channel,
    CityTier,
    CustomerId,
    EntityId,
    FiniteFloat,
    Gender,
    JsonInt,
    Locale,
    LongText,
    PastTime,
    ShortText,
    Strict,
    TimeZone,
)
from services.common.vocabulary import ChurnAction, LoyaltyTier

from .activity import complaint_status, order_status
from .domain import OUTCOMES, ChurnWarning, Customer, channel_consent

# No whitespace or control characters anywhere (a NUL in an address is a 422, not a 500).
Email = Annotated[
    str,
    StringConstraints(
        max_length=254, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"
    ),
]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()-]{5,20}$")]
MAX_INTERACTIONS = 1000
# The columns of a search exported as CSV (the search rows' members, in this order).
CSV_COLUMNS = (
    "customer_id",
    "name",
    "email",
    "city",
    "registered_at",
    "segment",
    "rfm_code",
    "lifecycle_stage",
    "abc_class",
    "tier",
    "purchases",
    "net_spend_cents",
    "recency_days",
    "clv_12m_cents",
    "p_alive",
    "churn_risk",
    "churn_level",
    "gender",
    "birth_date",
    "city_tier",
    "channel",
    "marketing_consent",
    "top_category",
    "top_category_share",
    "top_brand",
    "top_brand_share",
)

# What a spreadsheet reads as a formula when a cell starts with it (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """One exported value as a spreadsheet will read it: text that would start a formula is
    prefixed with a single quote, so a name such as "=HYPERLINK(...)" stays text. Numbers are
    numbers (a negative one is no formula) and stay as they are."""
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return to_rfc3339(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class CustomerIn(Strict):
    customer_id: CustomerId | None = Field(None, description="The shop's own id; generated when absent")
    name: ShortText | None = None
    email: Email | None = None
    phone: Phone | None = None
    gender: Gender | None = None
    birth_date: date | None = None
    city: ShortText | None = None
    city_tier: CityTier | None = None
    locale: Locale | None = Field(None, description="The language messages are written in")
    time_zone: TimeZone | None = Field(None, description="IANA zone; quiet hours are kept in it")
    channel: Channel = "web"
    referred_by: CustomerId | None = None
    marketing_consent: bool = False
    registered_at: PastTime | None = Field(None, description="For history; defaults to now")


class CustomerPatch(Strict):
    """Only the fields sent change; send null to clear one."""

    name: ShortText | None = None
    email: Email | None = None
    phone: Phone | None = None
    gender: Gender | None = None
    birth_date: date | None = None
    city: ShortText | None = None
    city_tier: CityTier | None = None
    locale: Locale | None = None
    time_zone: TimeZone | None = None


class ChannelConsentIn(Strict):
    email: bool | None = None
    sms: bool | None = None
    push: bool | None = None


class ConsentIn(Strict):
    marketing_consent: bool | None = Field(None, description="Every channel at once")
    channels: ChannelConsentIn | None = Field(None, description="The channels named; the others stay")
    source: ShortText | None = Field(None, description="Where the customer said so: web form, call, ...")

    @model_validator(mode="after")
    def _something(self) -> ConsentIn:
        if self.marketing_consent is None and (
            self.channels is None or not self.channels.model_dump(exclude_none=True)
        ):
            raise ValueError("send marketing_consent, channels, or both")
        return self


class InteractionIn(Strict):
    interaction_id: EntityId | None = Field(None, description="The sender's id; generated when absent")
    customer_id: CustomerId
    kind: Literal[
        "page_view",
        "search",
        "cart_add",
        "wishlist_add",
        "login",
        "message",
        "referral_sent",
        "review_posted",
        "email_opened",
        "push_clicked",
        "churn_action",
    ]
    channel: Channel | None = None
    occurred_at: PastTime | None = Field(None, description="Defaults to now")
    attributes: (
        Annotated[
            dict[
                Annotated[str, StringConstraints(max_length=64)],
                Annotated[str, StringConstraints(max_length=2000)] | JsonInt | FiniteFloat | bool | None,
            ],
            Field(max_length=20),
        ]
        | None
    ) = None


class AssignIn(Strict):
    assignee: ShortText


class ActionIn(Strict):
    action: ChurnAction
    note: LongText | None = None
    channel: Channel = "phone"


class OutcomeIn(Strict):
    outcome: Literal[OUTCOMES]  # type: ignore[valid-type]


class EraseIn(Strict):
    reason: ShortText | None = None


def _ts(value: Any) -> Any:
    return to_rfc3339(value) if value is not None and not isinstance(value, str) else value


def present_customer(c: Customer) -> dict[str, Any]:
    out = {k: _ts(v) if k.endswith("_at") else v for k, v in c.__dict__.items()}
    out["erased"] = c.erased_at is not None
    out["consent_channels"] = channel_consent(c)
    out["consent_history"] = [{**h, "at": _ts(h["at"])} for h in c.consent_history]
    return out


def present_warning(w: ChurnWarning) -> dict[str, Any]:
    return {
        "warning_id": w.episode_id,
        "customer_id": w.customer_id,
        "status": w.status.value,
        "open": w.is_open,
        "risk": w.risk,
        "level": w.level,
        "reasons": list(w.reasons),
        "recommended_action": w.recommended_action,
        "abc_class": w.abc_class,
        "clv_cents": w.clv_cents,
        "value_at_risk_cents": w.value_at_risk_cents,
        "warned_at": _ts(w.warned_at),
        "assignee": w.assignee,
        "actions": [{**a, "at": _ts(a["at"])} for a in w.actions],
        "outcome": w.outcome,
        "closed_at": _ts(w.closed_at),
        "recovered_at": _ts(w.recovered_at),
        "ended_by": w.ended_by,
        "history": [{**h, "at": _ts(h["at"])} for h in w.history],
        "version": w.version,
    }


# --- the 360 view from its read model (activity.py) ----------------------------------------------

ENTRY_TIER = next(iter(LoyaltyTier)).value  # an account's tier until its first tier change


def _time(value: str | None) -> str | None:
    """A stored stamp in the form every service answers with."""
    return to_rfc3339(parse_rfc3339(value)) if value else None


def _times(entity: dict[str, Any], *internal: str) -> dict[str, Any]:
    hidden = ("first", "last", *internal)
    return {k: _time(v) if k.endswith(("_at", "_due")) else v for k, v in entity.items() if k not in hidden}


def present_order(order: dict[str, Any]) -> dict[str, Any]:
    refunds, returns = order.get("refunds", []), order.get("returns", [])
    return {
        **_times(order, "returns", "refunds"),
        "status": order_status(order),
        "returned_cents": sum(r["amount_cents"] for r in returns),
        "refunded_cents": sum(r["amount_cents"] for r in refunds),
        "returns": [{**r, "at": _time(r["at"])} for r in returns],
        "refunds": [{**r, "at": _time(r["at"])} for r in refunds],
    }


def present_complaint(complaint: dict[str, Any]) -> dict[str, Any]:
    """In the complaints service's shape as far as events tell (no description, no assignee:
    ask complaints for those)."""
    reopened = complaint.get("reopened", [])
    sla = ("first_response_due", "resolution_due", "resolved_within_sla", "resolution_hours")
    return {
        **_times(complaint, "reopened", "breaches", *sla),
        "status": complaint_status(complaint),
        "escalation_level": complaint.get("escalation_level", 0),
        "reopen_count": len(reopened),
        "reopened_at": _time(reopened[-1]) if reopened else None,
        "sla": {
            **{k: _time(complaint.get(k)) for k in sla[:2]},
            **{k: complaint.get(k) for k in sla[2:]},
            "breaches": complaint.get("breaches", []),
        },
    }


def present_entry(entry: dict[str, Any]) -> dict[str, Any]:
    return _times(entry)


def present_activity(activity: dict[str, Any]) -> dict[str, Any]:
    """The 360 view's orders, complaints, surveys and loyalty from the read model, newest
    first as the owning services list them, each section with `as_of`: the latest event time
    folded into it (None: no event yet)."""
    as_of = {k: _time(v) for k, v in activity["as_of"].items()}

    def newest(section: str, at: str) -> list[dict[str, Any]]:
        return sorted(activity[section], key=lambda e: e.get(at) or e["first"], reverse=True)

    def section(name: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"status": "ok", "items": items, "as_of": as_of.get(name)}

    account = activity["loyalty"]
    return {
        "orders": section("orders", [present_order(o) for o in newest("orders", "placed_at")]),
        "complaints": section(
            "complaints", [present_complaint(c) for c in newest("complaints", "opened_at")]
        ),
        "surveys": section("surveys", [_times(s) for s in newest("surveys", "submitted_at")]),
        "loyalty": {
            "status": "ok",
            "account": {
                "customer_id": activity["customer_id"],
                "balance": 0 if activity["erased"] else account.get("balance", 0),  # points lapse
                "tier": account.get("tier", ENTRY_TIER),
                "tier_changed_at": _time(account.get("tier_changed_at")),
                "closed": activity["erased"],  # loyalty closes the account on erasure
                # Known to loyalty's lots, not to its events: ask loyalty (?source=services).
                "lifetime_earned": None,
                "next_expiry": None,
            }
            if account
            else None,
            "ledger": [
                present_entry(e)
                for e in sorted(activity["ledger"], key=lambda e: (e["at"], e["entry_id"]), reverse=True)
            ],
            "as_of": as_of.get("loyalty"),
        },
    }
