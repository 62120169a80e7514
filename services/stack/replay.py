"""Replays of history through the services' real APIs: CDNOW through the orders service's
history import (`crm replay cdnow`, `crm model evaluate`)."""

from __future__ import annotations

from datetime import date

import httpx
from rich.console import Console

from services.common.cdnow import import_lines

console = Console()


def replay_cdnow(
    orders_url: str, key: str, until: date | None, chunk: int = 10_000, client: httpx.Client | None = None
) -> dict[str, int]:
    """Load CDNOW through the orders service's history import, in chunks."""
    totals = {"lines": 0, "accepted": 0, "duplicates": 0, "rejected": 0, "events": 0}
    own = client is None
    client = client or httpx.Client(timeout=300.0)
    try:
        batch: list[bytes] = []

        def send() -> None:
            answer = client.post(
                f"{orders_url}/orders/import",
                content=b"\n".join(batch),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"},
            )
            if answer.status_code != 200:
                raise SystemExit(f"import failed ({answer.status_code}): {answer.text[:500]}")
            report = answer.json()
            for name in totals:
                totals[name] += report[name]
            for reject in report["rejects"][:5]:
                console.print(f"[yellow]rejected[/] line {reject['line']}: {reject['error']}")
            batch.clear()

        for line in import_lines(until):
            batch.append(line)
            if len(batch) >= chunk:
                send()
                console.print(f"  {totals['accepted']:>6} orders imported")
        if batch:
            send()
    finally:
        if own:
            client.close()
    return totals
