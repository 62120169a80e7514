"""Consumers say what they do per event type; what they do not handle passes on purpose, and a
rule's refusal is handed to the consumer to dead-letter instead of stopping the stream."""

from __future__ import annotations

import asyncio

import pytest

from services.common import topics
from services.common.erasure import FOLLOWED
from services.common.errors import RuleBroken
from services.common.handlers import Handlers
from services.common.kafka import Delivered
from services.loyalty.events import CONSUMED as LOYALTY
from services.profiles.events import CONSUMED as PROFILES


def delivered(event_type: str, offset: int = 0, **data) -> Delivered:
    event = {"id": f"e-{offset}", "type": event_type, "subject": "c-1", "data": data}
    return Delivered(event, topics.topic_for_type(event_type), 0, offset)


def test_handlers_are_called_by_type_and_other_types_pass():
    handlers: Handlers[list] = Handlers()
    seen: list = []

    @handlers.on("crm.order.paid", "crm.order.refunded")
    async def money(target: list, event: dict) -> str:
        target.append(event["id"])
        return event["type"]

    batch = [
        delivered("crm.order.paid", 0),
        delivered("crm.order.placed", 1),
        delivered("crm.order.refunded", 2),
    ]
    refused = asyncio.run(handlers.one_by_one(seen)(batch))
    assert seen == ["e-0", "e-2"] and refused == []
    assert asyncio.run(handlers.dispatch(seen, batch[1], refused=[])) is None
    assert handlers.topics == (topics.ORDERS,)


def test_a_refused_event_is_handed_back_and_the_batch_goes_on():
    handlers: Handlers[list] = Handlers()

    @handlers.on("crm.order.paid")
    async def paid(target: list, event: dict) -> None:
        if event["data"].get("amount_cents", 0) < 0:
            raise RuleBroken("amount must not be negative")
        target.append(event["id"])

    seen: list = []
    refused = asyncio.run(
        handlers.one_by_one(seen)(
            [delivered("crm.order.paid", 0, amount_cents=-1), delivered("crm.order.paid", 1)]
        )
    )
    assert seen == ["e-1"]
    assert [(r.delivered.offset, r.reason) for r in refused] == [(0, "amount must not be negative")]


def test_any_other_failure_propagates_so_the_batch_is_retried():
    handlers: Handlers[None] = Handlers()

    @handlers.on("crm.order.paid")
    async def paid(target: None, event: dict) -> None:
        raise ConnectionError("database away")

    with pytest.raises(ConnectionError):
        asyncio.run(handlers.one_by_one(None)([delivered("crm.order.paid")]))


def test_a_type_has_one_handler_and_must_exist():
    handlers: Handlers[None] = Handlers()
    handlers.on("crm.order.paid")(lambda *_: None)
    with pytest.raises(ValueError, match="already has a handler"):
        handlers.on("crm.order.paid")(lambda *_: None)
    with pytest.raises(ValueError, match="unknown event type"):
        handlers.on("crm.orders.paid")(lambda *_: None)


def test_each_service_declares_what_it_consumes():
    assert LOYALTY.event_types == (
        "crm.customer.registered",
        "crm.order.paid",
        "crm.order.refunded",
        "crm.order.returned",
    )
    assert LOYALTY.topics == (topics.CUSTOMERS, topics.ORDERS)
    assert PROFILES.topics == (topics.SIGNALS,)
    assert FOLLOWED.event_types == ("crm.customer.erased",)  # the one erasure follower
