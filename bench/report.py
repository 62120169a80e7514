"""Printing and keeping benchmark results: each row is a measurement and its same-run baseline."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .stack import STORAGE, STORAGE_NOTE

RESULTS = Path(__file__).resolve().parent / "results"
console = Console(width=150)


@dataclass
class Row:
    bench: str
    measured: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    higher_is_better: bool = True

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")


def show(title: str, rows: list[Row]) -> None:
    title = f"{title} ({STORAGE_NOTE})"
    table = Table(title=title)
    for column in ("measured", "value", "baseline (same run)", "ratio"):
        table.add_column(column, justify="right" if column != "measured" else "left")
    for row in rows:
        table.add_row(
            row.measured + ("" if row.higher_is_better else " (lower is better)"),
            f"{row.value:,.1f} {row.unit}",
            f"{row.baseline_name}: {row.baseline:,.1f} {row.unit}",
            f"{row.ratio:.2f}x",
        )
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    payload = {
        "title": title,
        "machine": platform.platform(),
        "database_storage": STORAGE,
        "rows": [asdict(r) | {"ratio": r.ratio} for r in rows],
    }
    (RESULTS / f"{rows[0].bench}-{stamp}.json").write_text(json.dumps(payload, indent=2))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
