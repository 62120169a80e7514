"""What the staff service publishes on crm.staff.v1: crm.staff.user_created, user_changed,
user_deactivated, team_created, team_changed, key_issued and key_revoked, each keyed (subject)
by the user, or the team for team events. It consumes nothing: the directory is its own
source. Keys travel only as their id and label, never their text or hash."""

from __future__ import annotations

from typing import Any

from services.common.clock import as_utc
from services.common.contracts import build_event, jsonable

SOURCE = "/services/staff"


def events_of(facts: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Validated once, when the outbox stores them."""
    return [
        build_event(
            event_type,
            jsonable(data),
            source=SOURCE,
            subject=data.get("user_id") or data["team_id"],
            time=as_utc(data["at"]),
            validate=False,
        )
        for event_type, data in facts
    ]
