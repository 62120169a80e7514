"""The shapes of the console's forms (pydantic), and bad input as messages next to each field."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from services.common.vocabulary import ChurnAction, ChurnLevel, LoyaltyTier

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Required = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]


class Form(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_missing(cls, value: object) -> object:
        # An HTML form sends "" for an empty field; the optional fields then take their default.
        return None if value == "" else value


class SignInForm(Form):
    api_key: Required
    next: Text | None = None


class SearchForm(Form):
    """The profile filters as query parameters of the search page."""

    segment: Text | None = None
    lifecycle_stage: Text | None = None
    abc_class: Literal["A", "B", "C"] | None = None
    tier: LoyaltyTier | None = None
    churn_level: ChurnLevel | None = None
    min_risk: Annotated[float, Field(ge=0, le=1)] | None = None
    city: Text | None = None
    sort: Literal["clv", "risk", "spend", "recency"] = "clv"
    order: Literal["asc", "desc"] | None = None
    cursor: Annotated[str, StringConstraints(max_length=2000)] | None = None

    def params(self) -> dict[str, object]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ComplaintForm(Form):
    category: Literal["product", "logistics", "payment", "service", "website", "other"]
    severity: Literal["low", "medium", "high", "critical"]
    channel: Literal["phone", "chat", "email", "app", "web", "store"] = "phone"
    order_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,100}$")] | None = None
    description: Note = ""


class InteractionForm(Form):
    kind: Literal["message", "page_view", "email_opened", "push_clicked", "review_posted"]
    channel: Literal["phone", "chat", "email", "app", "web", "store"] = "phone"
    note: Note | None = None


class RedeemForm(Form):
    points: Annotated[int, Field(gt=0, le=10_000_000)]
    reason: Required


class WarningActionForm(Form):
    action: ChurnAction
    note: Note | None = None


class AssignForm(Form):
    assignee: Required


class KeyForm(Form):
    label: Required


class OutcomeForm(Form):
    outcome: Literal["retained", "lost"]


class ComplaintMoveForm(Form):
    """One transition from the queue; `text` is what that transition asks for (the assignee,
    the resolution, the reason to reopen, a note)."""

    action: Literal["assign", "await-customer", "resolve", "close", "reopen", "escalate"]
    text: Text | None = None

    def body(self) -> dict[str, str] | None:
        field = {"assign": "assignee", "resolve": "resolution", "reopen": "reason"}.get(self.action)
        if field:
            return {field: self.text or ""}
        if self.action == "close":
            return None
        return {"note": self.text} if self.text else {}

    @property
    def needs_text(self) -> bool:
        return self.action in ("assign", "resolve", "reopen")


def field_errors(error: ValidationError) -> dict[str, str]:
    """{field: message} for the first problem of each field, to show beside it."""
    found: dict[str, str] = {}
    for item in error.errors(include_url=False):
        field = str(item["loc"][0]) if item["loc"] else "form"
        found.setdefault(field, _message(item))
    return found


def _message(item: dict) -> str:
    kind = item["type"]
    if kind == "missing" or (item.get("input") is None and kind.endswith("_type")):
        return "required"
    if kind in ("literal_error", "enum"):
        return "choose one of the listed values"
    if kind in ("int_parsing", "float_parsing"):
        return "enter a number"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return "out of range"
    if kind == "string_too_short":
        return "required"
    if kind == "string_too_long":
        return "too long"
    if kind == "string_pattern_mismatch":
        return "not a valid value"
    return str(item.get("msg", "invalid"))
