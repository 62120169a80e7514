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


# The RFM map of docs/architecture.md ("Scores"), first match wins: (R from, R to, F from, F to, segment).
# The scorer places customers with it; the console draws the same map on its dashboard.
SEGMENT_RULES = (
    (1, 2, 1, 2, Segment.HIBERNATING),
    (1, 2, 3, 4, Segment.AT_RISK),
    (1, 2, 5, 5, Segment.CANT_LOSE_THEM),
    (3, 3, 1, 2, Segment.ABOUT_TO_SLEEP),
    (3, 3, 3, 3, Segment.NEED_ATTENTION),
    (3, 4, 4, 5, Segment.LOYAL),
    (4, 4, 1, 1, Segment.PROMISING),
    (5, 5, 1, 1, Segment.NEW),
    (4, 5, 2, 3, Segment.POTENTIAL_LOYALIST),
    (5, 5, 4, 5, Segment.CHAMPIONS),
)


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


# Age bands, [from, to) in whole years: how reports break customers down and the profile
# search filters them.
AGE_BANDS = (
    (0, 18, "under 18"),
    (18, 25, "18-24"),
    (25, 35, "25-34"),
    (35, 45, "35-44"),
    (45, 55, "45-54"),
    (55, 65, "55-64"),
    (65, 200, "65+"),
)
AGE_BAND_NAMES = tuple(label for _, _, label in AGE_BANDS)

# What the reports break customers down by (one, or two crossed); the console offers the same.
REPORT_DIMENSIONS = (
    "gender",
    "age_band",
    "city_tier",
    "city",
    "channel",
    "acquisition_month",
    "tier",
    "segment",
    "lifecycle_stage",
    "abc_class",
)
