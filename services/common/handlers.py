"""How a service says what it does with the events it consumes: one handler per event type,
registered in its events.py with `@handlers.on("crm.order.paid")`.

A handler takes the service (its use cases), the event and whatever the consumer adds (a
transaction's session). Types without a handler are skipped on purpose: a topic carries more
types than any one consumer needs. A handler whose rule refuses its event (RuleBroken) does
not stop the stream: the event is refused, and the consumer dead-letters it with the reason
(kafka.EventConsumer holds that rule and the retry rule for everything else).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import structlog

from . import topics
from .errors import RuleBroken
from .kafka import BatchHandler, Delivered, Refused

log = structlog.get_logger(__name__)
Target = TypeVar("Target")
Handler = Callable[..., Awaitable[Any]]


class Handlers(Generic[Target]):
    def __init__(self) -> None:
        self._by_type: dict[str, Handler] = {}

    def on(self, *event_types: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            for event_type in event_types:
                if event_type in self._by_type:
                    raise ValueError(f"{event_type} already has a handler")
                topics.topic_for_type(event_type)  # an unknown type fails here, at import
                self._by_type[event_type] = handler
            return handler

        return register

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_type))

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics that carry the handled types: what the consumer subscribes to."""
        return tuple(sorted({topics.topic_for_type(t) for t in self._by_type}))

    async def dispatch(
        self, target: Target, delivered: Delivered, *context: Any, refused: list[Refused]
    ) -> Any:
        """The handler's result; None for a type nobody handles or an event a rule refused
        (added to `refused`). Any other error propagates: the consumer retries the batch."""
        handler = self._by_type.get(delivered.event["type"])
        if handler is None:
            return None
        try:
            return await handler(target, delivered.event, *context)
        except RuleBroken as exc:
            log.warning(
                "event refused by a rule",
                event_id=delivered.event["id"],
                type=delivered.event["type"],
                detail=exc.detail,
            )
            refused.append(Refused(delivered, exc.detail))
            return None

    def one_by_one(self, target: Target) -> BatchHandler:
        """A batch handler that dispatches each event in turn (no transaction around them:
        every handler is idempotent on its own)."""

        async def handle(batch: list[Delivered]) -> list[Refused]:
            refused: list[Refused] = []
            for delivered in batch:
                await self.dispatch(target, delivered, refused=refused)
            return refused

        return handle
