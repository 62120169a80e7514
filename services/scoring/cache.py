"""The profile cache: what the last write of each recently folded customer left."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from . import facts as F


class ProfileCache:
    """Each recently folded customer's facts and the parts of the profile the next fold
    compares against, so a batch reads the database only for customers it has not seen lately.

    Sound because this worker is the only writer of the profiles on its partitions: the
    cache is emptied whenever partitions move (a rebalance), an entry is stored only after its
    write succeeded and no rebalance happened meanwhile, and a failed write drops the entries
    it touched. Bounded (least recently used go first)."""

    KEPT = ("rfm", "lifecycle", "churn", "care", "pending", "pending_seq", "event_time", "write_seq")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.generation = 0  # raised by every clear(): a batch staged before it must not fill the cache
        self._entries: OrderedDict[str, tuple[F.Facts, dict[str, Any]]] = OrderedDict()

    def get(self, customer_id: str) -> tuple[F.Facts, dict[str, Any]] | None:
        entry = self._entries.get(customer_id)
        if entry is not None:
            self._entries.move_to_end(customer_id)
        return entry

    @classmethod
    def slim(cls, doc: dict[str, Any]) -> dict[str, Any]:
        return {k: doc.get(k) for k in cls.KEPT}

    def put(self, customer_id: str, facts: F.Facts, doc: dict[str, Any]) -> None:
        if self.capacity <= 0:
            return
        self._entries[customer_id] = (facts, self.slim(doc))
        self._entries.move_to_end(customer_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def drop(self, customer_ids: list[str]) -> None:
        for cid in customer_ids:
            self._entries.pop(cid, None)

    def clear(self) -> None:
        """Partitions moved: another worker may write these profiles now."""
        self._entries.clear()
        self.generation += 1

    def __len__(self) -> int:
        return len(self._entries)
