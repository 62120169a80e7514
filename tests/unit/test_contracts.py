"""Every event type has a schema; examples pass and fail as documented, in both validators."""

from __future__ import annotations

from datetime import UTC, datetime

import fastjsonschema
import orjson
import pytest
from jsonschema import Draft202012Validator

from services.common import topics
from services.common.clock import parse_rfc3339, to_rfc3339
from services.common.contracts import (
    SCHEMAS_DIR,
    EventValidationError,
    build_event,
    decode,
    encode,
    registry,
    schema_url,
)

# docs/architecture.md, "Topics and events": the event catalogue.
CATALOGUE = """
crm.customer.registered crm.customer.updated crm.customer.consent_changed crm.customer.erased
crm.order.placed crm.order.paid crm.order.shipped crm.order.delivered crm.order.cancelled crm.order.returned
crm.order.refunded crm.complaint.opened crm.complaint.escalated crm.complaint.resolved crm.complaint.reopened
crm.complaint.closed crm.survey.submitted crm.interaction.recorded crm.loyalty.points_earned
crm.loyalty.points_redeemed crm.loyalty.points_expired crm.loyalty.points_expiring crm.loyalty.points_reversed crm.loyalty.tier_changed
crm.profile.segment_changed crm.profile.lifecycle_changed crm.profile.churn_warning crm.profile.churn_recovered
crm.profile.care_due crm.message.sent crm.message.delivered crm.message.failed crm.message.opened
crm.message.clicked crm.coupon.issued crm.coupon.redeemed crm.coupon.released
crm.staff.user_created crm.staff.user_changed crm.staff.user_deactivated crm.staff.team_created
crm.staff.team_changed crm.staff.key_issued crm.staff.key_revoked
crm.case.opened crm.case.assigned crm.case.responded crm.case.awaiting_customer crm.case.escalated
crm.case.sla_warning crm.case.resolved crm.case.reopened crm.case.closed crm.case.decided
crm.case.remedy_proposed crm.case.remedy_approved crm.case.compensated crm.case.confirmed
crm.note.added crm.note.changed crm.task.created crm.task.reminded crm.task.overdue crm.task.completed
""".split()

SCHEMA_FILES = sorted(p for p in SCHEMAS_DIR.glob("*/v*.json") if not p.name.endswith(".examples.json"))
EXAMPLE_FILES = sorted(SCHEMAS_DIR.glob("*/v*.examples.json"))


def test_every_catalogued_event_type_has_a_schema_and_nothing_else_does():
    assert registry().event_types() == sorted(CATALOGUE)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.parent.name)
def test_schema_is_valid_draft_2020_12(path):
    Draft202012Validator.check_schema(orjson.loads(path.read_bytes()))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.parent.name)
def test_examples_pass_and_fail_in_both_validators(path):
    name = path.parent.name
    url = f"https://schemas.crm.example/{name}/v1.json"
    examples = orjson.loads(path.read_bytes())
    assert examples["valid"] and examples["invalid"], "each schema needs valid and invalid examples"
    strict = registry().validator(url)
    fast = registry().fast_validator(url)
    for good in examples["valid"]:
        assert strict.is_valid(good)
        fast(good)
        registry().check(url, good)
    for bad in examples["invalid"]:
        assert not strict.is_valid(bad), bad
        with pytest.raises(fastjsonschema.JsonSchemaException):
            fast(bad)
        with pytest.raises(EventValidationError):
            registry().check(url, bad)


def test_every_event_type_has_a_topic():
    for event_type in CATALOGUE:
        assert topics.topic_for_type(event_type) in topics.ALL
    assert topics.topic_for_type("crm.survey.submitted") == topics.COMPLAINTS
    assert topics.topic_for_type("crm.profile.churn_warning") == topics.SIGNALS


def paid(**override):
    data = {
        "order_id": "o-1",
        "customer_id": "c-1",
        "amount_cents": 100,
        "currency": "CNY",
        "paid_at": "2026-11-22T07:00:00Z",
    }
    data.update(override)
    return data


def test_built_event_is_a_cloudevent_keyed_by_customer():
    event = build_event("crm.order.paid", paid(), source="/services/orders")
    assert event["specversion"] == "1.0"
    assert event["subject"] == "c-1"
    assert event["dataschema"] == schema_url("crm.order.paid")
    assert decode(encode(event)) == event


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"amount_cents": -1}, "data.amount_cents"),
        ({"currency": "XYZ"}, "data.currency"),
        ({"paid_at": "2026-11-22 07:00"}, "data.paid_at"),
        ({"paid_at": "2026-13-45T07:00:00Z"}, "data.paid_at"),
        ({"extra": 1}, "data"),
    ],
)
def test_publishing_an_invalid_event_names_the_field(override, field):
    with pytest.raises(EventValidationError) as caught:
        build_event("crm.order.paid", paid(**override), source="/services/orders")
    assert caught.value.field == field
    assert field in str(caught.value)


def test_subject_must_be_the_customer():
    event = build_event("crm.order.paid", paid(), source="/services/orders")
    event["subject"] = "c-2"
    with pytest.raises(EventValidationError, match="subject"):
        registry().validate(event)


@pytest.mark.parametrize("raw", [b"not json", b"[]", b"", b'{"specversion": "1.0"}'])
def test_undecodable_records_are_rejected_with_a_reason(raw):
    with pytest.raises(EventValidationError):
        decode(raw)


def test_unknown_event_type_is_rejected():
    event = build_event("crm.order.paid", paid(), source="/services/orders")
    event["type"] = "crm.order.teleported"
    with pytest.raises(EventValidationError, match="dataschema"):
        registry().validate(event)


def test_satisfaction_dimensions_are_the_survey_schemas():
    from services.common.contracts import SATISFACTION_DIMENSIONS

    scores = registry().documents[schema_url("crm.survey.submitted")]["properties"]["scores"]["properties"]
    assert set(scores) == {*SATISFACTION_DIMENSIONS, "overall"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T08:30:00Z", datetime(2026, 11, 22, 8, 30, tzinfo=UTC)),
        ("2026-11-22T08:30:00.250000Z", datetime(2026, 11, 22, 8, 30, 0, 250000, tzinfo=UTC)),
        ("2026-11-22T10:30:00+02:00", datetime(2026, 11, 22, 8, 30, tzinfo=UTC)),
    ],
)
def test_event_times_are_read_as_utc_whatever_their_offset(text, expected):
    when = parse_rfc3339(text)
    assert when == expected and when.tzinfo is UTC
    assert to_rfc3339(when) == to_rfc3339(expected)


def test_a_time_without_a_timezone_is_refused():
    with pytest.raises(ValueError, match="without a timezone"):
        parse_rfc3339("2026-11-22T08:30:00")
