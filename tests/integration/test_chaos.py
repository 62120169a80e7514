"""The short fault-injection run (issue 18, "Nothing lost, nothing doubled"): the whole
platform under mixed traffic while the scorer, the orders service and the broker are each
killed with SIGKILL and restarted by the launcher; then every check of `make chaos`, exact.

A check that finds a discrepancy caused by a known defect is marked xfail(strict=True) with
the defect's name: it keeps running, and fails the day a fix lands so the mark goes too. A
check that fails only when a fault lands at an unlucky moment (the race is real, its timing
is not under the run's control) is marked xfail(strict=False) with the defect: it still runs,
and an XPASS in the summary is expected until then."""

from __future__ import annotations

import asyncio
import os

import pytest
from rich.console import Console

from chaos.checks import CHECKS
from chaos.faults import SHORT
from chaos.report import print_report
from chaos.run import Options, Result, Run


@pytest.fixture(scope="module")
def chaos_run(tmp_path_factory: pytest.TempPathFactory) -> Result:
    options = Options(
        duration=75.0,
        clients=4,
        faults=SHORT,
        warmup=25.0,  # churn warnings fire before the broker's SIGKILL
        recovery_timeout=60.0,
        history_customers=30,
        quiet_seconds=10.0,
        quiet_timeout=90.0,
        data_dir=tmp_path_factory.mktemp("chaos"),
    )
    console = Console(stderr=True, width=160)
    # The chaos platform configures its launcher through this process's environment (ports,
    # quick timers, database prefix); the tests after this module start their own services.
    saved = dict(os.environ)
    try:
        result = asyncio.run(Run(options, console).execute())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    print_report(result, console)
    return result


def test_every_fault_was_injected_and_the_platform_recovered(chaos_run: Result) -> None:
    """Each part came back (the launcher restarted it), a probe order placed and paid after
    the orders service's and the scorer's restarts reached the customer's profile, the traffic
    kept flowing around the faults, and the platform got quiet. (The probe after the broker's
    restart is reported, not asserted: until the scorer restarts it skips records of the
    broker's new log, so that probe arrives or not by the partition it lands on.)"""
    assert [i.fault for i in chaos_run.injections] == list(SHORT)
    recovered = {i.fault: i.recovered_after for i in chaos_run.injections}
    assert recovered["orders"] is not None and recovered["scorer"] is not None, chaos_run.recovery()
    accepted = {kind: row["accepted"] for kind, row in chaos_run.writes.items()}
    assert accepted.get("order", 0) > 50 and accepted.get("pay", 0) > 20, accepted
    assert chaos_run.quiet_after is not None, chaos_run.quiet_state


# None known: the embedded broker's memory storage, once marked here, is covered by the
# outboxes' retention (services/common/outbox.py Retention).
KNOWN: dict[str, pytest.MarkDecorator] = {}


@pytest.mark.parametrize(
    "check", [pytest.param(name, marks=KNOWN[name]) if name in KNOWN else name for name in CHECKS]
)
def test_nothing_lost_nothing_doubled(chaos_run: Result, check: str) -> None:
    found = chaos_run.findings[check]
    examples = "; ".join(f"{f.customer_id}: {f.what}" for f in found[:5])
    assert not found, (
        f"{CHECKS[check]}: {len(found)} discrepancies, e.g. {examples} "
        f"(all of them: {chaos_run.data_dir}/chaos-report.json)"
    )
