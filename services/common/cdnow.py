"""The CDNOW data set (shipped in the `lifetimes` wheel): 69,659 purchases by 23,570
customers of an online CD shop, January 1997 to June 1998. Found through the package's
file list, so the (heavy, old) `lifetimes` package itself is never imported."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path

import orjson


@dataclass(frozen=True)
class Purchase:
    customer: str
    day: date
    cds: int
    dollars: float

    @property
    def cents(self) -> int:
        return round(self.dollars * 100)


def master_path() -> Path:
    for file in metadata.files("lifetimes") or []:
        if file.name == "CDNOW_master.txt":
            return Path(file.locate())
    raise FileNotFoundError("CDNOW_master.txt not found: is the lifetimes package installed?")


def purchases(until: date | None = None) -> Iterator[Purchase]:
    """Each line: customer id, yyyymmdd, number of CDs, dollar value."""
    with open(master_path()) as handle:
        for line in handle:
            parts = line.split()
            if len(parts) != 4 or not parts[1].isdigit():  # the header line
                continue
            day = datetime.strptime(parts[1], "%Y%m%d").date()
            if until is not None and day > until:
                continue
            yield Purchase(f"cdnow-{int(parts[0]):05d}", day, int(parts[2]), float(parts[3]))


def import_lines(until: date | None = None) -> Iterator[bytes]:
    """Orders-service import lines (NDJSON), one paid order per purchase. The CD count becomes
    the quantity; the dollar value is kept exactly by rounding the unit price up and taking
    the difference off as a discount."""
    seen: dict[tuple[str, date], int] = {}
    for p in purchases(until):
        key = (p.customer, p.day)
        seen[key] = seen.get(key, 0) + 1
        qty = max(p.cds, 1)
        unit = -(-p.cents // qty)
        placed = datetime(p.day.year, p.day.month, p.day.day, 12, 0, tzinfo=UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        yield orjson.dumps(
            {
                "order_id": f"{p.customer}-{p.day:%Y%m%d}-{seen[key]}",
                "customer_id": p.customer,
                "items": [
                    {"sku": "cd", "category": "music", "brand": "cdnow", "qty": qty, "unit_price_cents": unit}
                ],
                "currency": "USD",
                "discount_cents": unit * qty - p.cents,
                "amount_cents": p.cents,
                "placed_at": placed,
                "paid_at": placed,
            }
        )
