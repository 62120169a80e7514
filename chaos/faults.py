"""The faults, injected through the children's pids; the launcher's supervisor restarts what
died, exactly as under `crm up`. Recovery is timed from the injection until every part is
alive, every service's /readyz is green and a probe order, placed and paid, shows in the
customer's profile."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from services.stack.embedded import existing_services

from .platform import ChaosPlatform
from .traffic import Client

FREEZE_SECONDS = 20.0


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    targets: tuple[str, ...]  # children, by the launcher's names
    freeze: bool = False  # SIGSTOP for FREEZE_SECONDS then SIGCONT, instead of SIGKILL


# The list, in the order a full run injects them. The embedded broker keeps its log in
# memory (services/stack/embedded.py `broker_child`), so every broker restart is the broker
# "coming back empty": its topics re-created by the launcher, every consumer offset gone.
def _catalogue() -> dict[str, Fault]:
    http = [s for s in existing_services() if s not in ("scoring", "orders")]  # orders goes first
    faults = (
        Fault("scorer", "SIGKILL the scorer", ("scoring",)),
        Fault("orders", "SIGKILL the orders service", ("orders",)),
        Fault(
            "broker", "SIGKILL the broker; it comes back empty (memory storage, offsets gone)", ("broker",)
        ),
        Fault("database", "SIGKILL the database", ("mongo",)),
        *(Fault(name, f"SIGKILL the {name} service", (name,)) for name in http),
        Fault("broker+scorer", "SIGKILL the broker and the scorer at once", ("broker", "scoring")),
        Fault(
            "database-freeze",
            f"SIGSTOP the database for {FREEZE_SECONDS:.0f} s, then SIGCONT (recovery counts from SIGSTOP)",
            ("mongo",),
            True,
        ),
    )
    return {f.name: f for f in faults}


CATALOGUE = _catalogue()
FULL = tuple(CATALOGUE)
# `make test`'s short run. The scorer is killed after the broker: until it restarts, a scorer
# that lived through the broker's restart skips records (see the report of issue 18), which
# would make the short run's outcome depend on which partitions the traffic hit.
SHORT = ("orders", "broker", "scorer")


@dataclass
class Injection:
    fault: str
    at: float  # wall clock
    pids: dict[str, int]
    recovered_after: float | None = None  # seconds; None: not within the timeout
    probe: str = ""
    notes: list[str] = field(default_factory=list)


def signal_group(pid: int, signum: int) -> None:
    """The child is a session leader (embedded.Child.start): its group is the child and
    whatever it started."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


async def inject(fault: Fault, platform: ChaosPlatform, log: Callable[[str], None]) -> Injection:
    children = platform.children()
    pids = {name: children[name].pid for name in fault.targets}
    injection = Injection(fault.name, time.time(), pids)
    if fault.freeze:
        for pid in pids.values():
            signal_group(pid, signal.SIGSTOP)
        log(f"fault {fault.name}: stopped {pids}")
        await asyncio.sleep(FREEZE_SECONDS)
        for pid in pids.values():
            signal_group(pid, signal.SIGCONT)
        log(f"fault {fault.name}: continued {pids}")
    else:
        for pid in pids.values():
            signal_group(pid, signal.SIGKILL)
        log(f"fault {fault.name}: killed {pids}")
    return injection


async def recover(
    injection: Injection, platform: ChaosPlatform, prober: Client, timeout: float, started: float
) -> None:
    """Wait until every part is back and a probe write round-trips; time it from `started`
    (the moment of injection, monotonic)."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(platform.all_ready):
            break
        await asyncio.sleep(0.5)
    else:
        injection.notes.append(f"not every part ready after {timeout:.0f} s")
        return
    customer_id = f"probe-{uuid.uuid4().hex[:10]}"
    injection.probe = customer_id
    placed = await prober.send(
        "probe-order",
        customer_id,
        "orders",
        "POST",
        "/orders",
        {
            "customer_id": customer_id,
            "currency": "CNY",
            "items": [
                {"sku": "PRB-0001", "category": "probe", "brand": "Probe", "qty": 1, "unit_price_cents": 1000}
            ],
        },
    )
    if not placed.accepted:
        injection.notes.append(f"probe order answered {placed.final}")
        return
    order_id = placed.entity = placed.body["order_id"]
    paid = await prober.send("pay", customer_id, "orders", "POST", f"/orders/{order_id}/pay")
    paid.entity = order_id
    if not paid.accepted:
        injection.notes.append(f"probe payment answered {paid.final}")
        return
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_profile_purchases, platform, customer_id) == 1:
            injection.recovered_after = time.monotonic() - started
            return
        await asyncio.sleep(0.5)
    injection.notes.append(f"probe purchase not in the profile after {timeout:.0f} s")


def _profile_purchases(platform: ChaosPlatform, customer_id: str) -> int | None:
    try:
        answer = httpx.get(
            f"{platform.url('profiles')}/customers/{customer_id}",
            headers=platform.headers("viewer"),
            timeout=5,
        )
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    return ((answer.json().get("purchases") or {}).get("count")) or 0
