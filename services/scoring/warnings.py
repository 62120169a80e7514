"""When a churn risk becomes a churn warning. Pure.

A risk ranks customers; a warning interrupts a person, who calls the customer or spends a coupon
on them. So a warning means the customer started to slip away: something changed (they are
overdue against their own cadence, or against how long this shop's repeat buyers take to come
back; their buying fell off; or service went wrong), the risk is high, and the customer is
worth keeping. Never in the quiet days right after a purchase: whatever the model's 90-day odds,
a customer who just bought has not left.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from services.common.vocabulary import ChurnLevel

# Risk levels. HIGH and OVERDUE_FACTOR were chosen on the CDNOW replay (warning_replay, a
# 1,000-customer sample): 0.7 and 2.0 gave precision 0.786 at coverage 0.839, short of the
# 2x-gap rule's 0.882; 0.6 and 1.5 give 0.765 at 0.913 (the rule: 0.723 at 0.882).
HIGH, MEDIUM = 0.6, 0.4
QUIET_DAYS = 14.0  # after a purchase nothing warns, whatever the reasons
# Overdue: silent for longer than this many of the customer's own mean gaps between purchase
# days. One-time buyers are measured against the shop's repeat buyers' first gap instead
# (Population.repeat_gap_days).
OVERDUE_FACTOR = 1.5
# The reasons that say something changed; the model's probability alone is not one.
CHANGES = frozenset(
    (
        "overdue",
        "no_second_purchase",
        "falling_frequency",
        "open_complaint",
        "sla_breached",
        "low_csat",
        "detractor",
        "late_delivery",
        "high_returns",
    )
)
WARNING = "crm.profile.churn_warning"
RECOVERED = "crm.profile.churn_recovered"


def changed(reasons: list[dict[str, Any]]) -> bool:
    return not CHANGES.isdisjoint([r["code"] for r in reasons])


def level(risk: float, reasons: list[dict[str, Any]], days_since_purchase: float | None) -> ChurnLevel:
    """high: act now (high risk and something changed, past the quiet days); medium: worth a
    look; low: nothing to do, which includes everyone who just bought."""
    if risk < MEDIUM:
        return ChurnLevel.LOW
    change = changed(reasons)
    settled = days_since_purchase is None or days_since_purchase >= QUIET_DAYS
    if risk >= HIGH and change and settled:
        return ChurnLevel.HIGH
    if risk >= MEDIUM and (change or settled):
        return ChurnLevel.MEDIUM
    return ChurnLevel.LOW


class Episode(NamedTuple):
    """The churn-warning state kept on the profile: an open episode has fired its one warning,
    and remembers when and what the shop stood to lose then."""

    open: bool = False
    episode: int = 0
    opened_at: datetime | None = None
    value_at_risk_cents: int = 0
    # The last purchase when it opened: a later one (by event time, backdated or not) ends it.
    last_purchase_at: datetime | None = None
    # Whether the customer was worth keeping when they made their last purchase, and which
    # purchase that was (see worth_keeping).
    judged_purchase_at: datetime | None = None
    valued: bool = False


NO_EPISODE = Episode()


class Step(NamedTuple):
    episode: Episode
    fired: str | None = None  # WARNING or RECOVERED
    ended_by: str | None = None  # why an episode closed: purchase, reasons_cleared, erased


def stored_precision(when: datetime | None) -> datetime | None:
    """Times as MongoDB keeps them (milliseconds), so a purchase compared with the one the
    stored episode remembers is the same purchase after a round trip."""
    if when is None or not when.microsecond % 1000:  # already whole milliseconds
        return when
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def worth_keeping(
    state: Episode, keep_now: bool, last_purchase: datetime | None, kept_when_bought: Callable[[], bool]
) -> tuple[bool, Episode]:
    """(worth keeping, the state remembering it). A customer worth keeping when they last
    bought stays so while they are silent: their expected value shrinks with every silent day
    (that is the risk), which must not talk the shop out of warning about them.
    `kept_when_bought` judges them as of their last purchase, asked once per purchase and only
    when they are not worth keeping now (history that arrives late)."""
    if last_purchase is None:
        return keep_now, state
    last_purchase = stored_precision(last_purchase)
    if state.judged_purchase_at != last_purchase:
        open_, episode, opened_at, value_at_risk_cents, last_purchase_at, _, _ = state
        state = Episode(  # not _replace: this runs for every customer of every batch
            open_,
            episode,
            opened_at,
            value_at_risk_cents,
            last_purchase_at,
            judged_purchase_at=last_purchase,
            valued=keep_now or kept_when_bought(),
        )
    return keep_now or state.valued, state


def step(
    state: Episode,
    level_now: str | None,
    reasons: list[dict[str, Any]],
    last_purchase: datetime | None,
    keep: bool,
    erased: bool,
    value_at_risk_cents: int,
    now: datetime,
    kept_when_bought: Callable[[], bool] = lambda: False,
) -> Step:
    """Open an episode (one warning) when the level turns high for a customer worth keeping;
    close it when they bought again and are no longer high, when nothing that changed holds
    any more, or when they are erased (nobody is to contact them)."""
    last_purchase = stored_precision(last_purchase)
    worth, state = worth_keeping(state, keep, last_purchase, kept_when_bought)
    if state.open:
        if erased:
            ended_by = "erased"
        elif level_now != ChurnLevel.HIGH and (
            last_purchase is not None
            and (state.last_purchase_at is None or last_purchase > state.last_purchase_at)
        ):
            ended_by = "purchase"  # a purchase that still leaves them high (old history) does not
        elif not changed(reasons):
            ended_by = "reasons_cleared"
        else:
            return Step(state)
        return Step(state._replace(open=False, opened_at=None, value_at_risk_cents=0), RECOVERED, ended_by)
    if level_now == ChurnLevel.HIGH and worth and not erased:
        opened = Episode(
            open=True,
            episode=state.episode + 1,
            opened_at=now,
            value_at_risk_cents=value_at_risk_cents,
            last_purchase_at=last_purchase,
            judged_purchase_at=state.judged_purchase_at,
            valued=state.valued,
        )
        return Step(opened, WARNING)
    return Step(state)


def episode_from(stored: dict[str, Any] | None) -> Episode:
    """The episode as the profile stored it (profiles written before opened_at had none)."""
    if not stored:
        return NO_EPISODE
    return Episode(
        stored.get("open", False),
        stored.get("episode", 0),
        stored.get("opened_at"),
        stored.get("value_at_risk_cents", 0),
        stored.get("last_purchase_at"),
        stored.get("judged_purchase_at"),
        stored.get("valued", False),
    )
