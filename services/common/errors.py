"""Exceptions the domain and the stores raise, and the HTTP shell translates."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """What kind of refusal a broken rule is. The domain says which; only the HTTP shell
    (services/common/problems.py) knows the status code each kind answers with."""

    INVALID = "invalid"  # the request itself breaks a rule
    NOT_FOUND = "not_found"  # what it names does not exist
    CONFLICT = "conflict"  # it clashes with the current state
    TOO_LARGE = "too_large"  # more than one request may carry
    UNAVAILABLE = "unavailable"  # a service it needs did not answer


class RuleBroken(Exception):
    """A rule refused the change. `kind` says how (invalid by default); `extra` members go
    into the problem+json body, e.g. the transitions that are allowed."""

    def __init__(self, detail: str, kind: Kind = Kind.INVALID, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.kind = kind
        self.extra = extra


class ConcurrentChange(Exception):
    """The entity changed between read and write (optimistic concurrency); the write is retried."""
