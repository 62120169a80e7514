"""The run's report: rich tables on the terminal; the same as JSON under the data dir."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from .checks import CHECKS
from .faults import CATALOGUE
from .run import Result

EXAMPLES = 8


def print_report(result: Result, console: Console) -> None:
    recovery = result.recovery()
    faults = Table(title=f"Faults injected: {len(result.injections)}")
    for column in ("fault", "what", "injected", "recovered", "p50 s", "max s", "notes"):
        faults.add_column(column)
    for name, row in recovery.items():
        faults.add_row(
            name,
            CATALOGUE[name].what,
            str(row["injected"]),
            str(row["recovered"]),
            _num(row["p50_seconds"]),
            _num(row["max_seconds"]),
            "; ".join(row["notes"])[:80],
        )
    console.print(faults)

    writes = Table(title=f"Writes over {result.traffic_seconds:.0f} s of traffic")
    for column in ("kind", "accepted (2xx)", "refused (4xx)", "unanswered", "retried"):
        writes.add_column(column, justify="right" if column != "kind" else "left")
    totals: Counter[str] = Counter()
    for kind, row in sorted(result.writes.items()):
        writes.add_row(kind, *(str(row[k]) for k in ("accepted", "refused_4xx", "unanswered", "retried")))
        totals.update(row)
    writes.add_row(
        "all", *(str(totals[k]) for k in ("accepted", "refused_4xx", "unanswered", "retried")), style="bold"
    )
    console.print(writes)

    events = Table(title="Events (records on each topic at the end; a broker restart empties them)")
    events.add_column("topic")
    events.add_column("records", justify="right")
    for topic, count in result.events.items():
        events.add_row(topic, str(count))
    console.print(events)
    quiet = f"{result.quiet_after} s" if result.quiet_after is not None else "[red]never[/]"
    console.print(f"quiet after {quiet}: {result.quiet_state}")

    checks = Table(title=f"Discrepancies: {result.discrepancies} (the goal is 0)")
    checks.add_column("check")
    checks.add_column("discrepancies", justify="right")
    checks.add_column(f"examples (customer: what; first {EXAMPLES})")
    for name, text in CHECKS.items():
        found = result.findings.get(name, [])
        examples = "\n".join(f"{f.customer_id}: {f.what}" for f in found[:EXAMPLES])
        checks.add_row(text, str(len(found)), examples, style="red" if found else "green")
    console.print(checks)
    console.print(f"report and ledger: {result.data_dir}/chaos-report.json, chaos-ledger.jsonl")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
