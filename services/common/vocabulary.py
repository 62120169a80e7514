"""The words the services share about a customer: RFM segments, lifecycle stages, loyalty
tiers, churn levels and the retention actions of the churn-warning workflow.

Defined once here; the scorer writes them, the profiles API filters and records with them,
loyalty names its tiers with them and the OpenAPI lists them. The JSON Schemas in schemas/
spell them out as literal enums (they are files other systems read); a unit test keeps
those equal to these. Members are `str`, so they store and serialise as their values.
"""

from __future__ import annotations

from enum import StrEnum


class Segment(StrEnum):
    """RFM segments (docs/architecture.md, "Scores"), Prospect before the first purchase."""

    PROSPECT = "Prospect"
    HIBERNATING = "Hibernating"
    AT_RISK = "At Risk"
    CANT_LOSE_THEM = "Can't Lose Them"
    ABOUT_TO_SLEEP = "About to Sleep"
    NEED_ATTENTION = "Need Attention"
    LOYAL = "Loyal"
    PROMISING = "Promising"
    NEW = "New"
    POTENTIAL_LOYALIST = "Potential Loyalist"
    CHAMPIONS = "Champions"


class LifecycleStage(StrEnum):
    PROSPECT = "prospect"
    EXPLORATION = "exploration"
    GROWTH = "growth"
    STABLE = "stable"
    DECLINE = "decline"
    LOST = "lost"


class LoyaltyTier(StrEnum):
    """In ascending order: the first is every new account's tier."""

    MEMBER = "member"
    SILVER = "silver"
    GOLD = "gold"
    PLATINUM = "platinum"


class ChurnLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class ChurnAction(StrEnum):
    """What the scorer recommends for a churn warning and what an agent records taking:
    one set, so every recommendation is an action the workflow accepts."""

    CALL = "call"
    COUPON = "coupon"
    EMAIL = "email"
    SERVICE_RECOVERY = "service_recovery"
