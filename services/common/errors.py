"""Exceptions the domain and the stores raise, and the HTTP shell translates."""

from __future__ import annotations

from typing import Any


class RuleBroken(Exception):
    """A domain rule refused the change. `status` is the HTTP status it maps to (422 by
    default, 409 for a conflict with the current state); `extra` members go into the
    problem+json body, e.g. the transitions that are allowed."""

    def __init__(self, detail: str, status: int = 422, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.extra = extra


class ConcurrentChange(Exception):
    """The entity changed between read and write (optimistic concurrency); the write is retried."""
