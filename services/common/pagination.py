"""Cursor (keyset) pagination shared by every list endpoint: stable under inserts, and the
cursor is opaque to clients."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson

from .clock import as_utc
from .problems import Problem

Sort = list[tuple[str, int]]  # [(field, 1 | -1)], always ending with a unique field


def encode_cursor(values: list[Any]) -> str:
    tagged = [{"t": v.isoformat()} if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(orjson.dumps(tagged)).decode().rstrip("=")


def decode_cursor(cursor: str, expected: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != expected:
            raise ValueError
        return [as_utc(datetime.fromisoformat(v["t"])) if isinstance(v, dict) else v for v in values]
    except Exception:  # noqa: BLE001 - anything unreadable is the client's mistake
        raise Problem(
            400, "malformed cursor: pass back the next_cursor of a previous page unchanged"
        ) from None


def after(sort: Sort, values: list[Any]) -> dict[str, Any]:
    """The filter for documents strictly after `values` in `sort` order."""
    clauses = []
    for depth, (field, direction) in enumerate(sort):
        clause = {f: values[k] for k, (f, _) in enumerate(sort[:depth])}
        clause[field] = {"$lt" if direction < 0 else "$gt": values[depth]}
        clauses.append(clause)
    return {"$or": clauses}


def cursor_of(doc: dict[str, Any], sort: Sort) -> str:
    values = []
    for field, _ in sort:
        value: Any = doc
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values.append(value)
    return encode_cursor(values)


async def page(
    collection: Any,
    query: dict[str, Any],
    sort: Sort,
    limit: int,
    cursor: str | None,
    projection: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page and the cursor of the next (None on the last page)."""
    if cursor:
        query = (
            {"$and": [query, after(sort, decode_cursor(cursor, len(sort)))]}
            if query
            else after(sort, decode_cursor(cursor, len(sort)))
        )
    docs = await collection.find(query, projection).sort(sort).limit(limit + 1).to_list(None)
    more = len(docs) > limit
    docs = docs[:limit]
    return docs, (cursor_of(docs[-1], sort) if more and docs else None)
