"""One fault-injection run: start, load history, drive traffic while injecting the faults one
after another, stop the traffic, settle what is unanswered, wait for quiet, check, report."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from .checks import CHECKS, Finding, Snapshot, run_checks
from .faults import CATALOGUE, Injection, inject, recover
from .platform import ChaosPlatform
from .traffic import Client, Ledger


@dataclass
class Options:
    duration: float = 240.0  # seconds of traffic at least (longer if the faults need it)
    clients: int = 6
    faults: tuple[str, ...] = tuple(CATALOGUE)
    warmup: float = 20.0  # traffic before the first fault (the population job runs every 10 s)
    gap: float = 8.0  # traffic between one fault's recovery and the next
    recovery_timeout: float = 120.0
    quiet_seconds: float = 15.0  # nothing pending and nothing moving for this long
    quiet_timeout: float = 180.0
    history_customers: int = 60  # a year of orders each, so churn warnings have someone to warn
    think: float = 0.25  # a client's pause between requests (seconds, on average)
    retry_seconds: float = 90.0  # how long a client retries one write
    request_timeout: float = 10.0
    seed: int = 18
    data_dir: Path = Path(".crm/chaos")


@dataclass
class Result:
    options: dict[str, Any]
    started_at: str
    traffic_seconds: float = 0.0
    injections: list[Injection] = field(default_factory=list)
    writes: dict[str, dict[str, int]] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    quiet_after: float | None = None
    quiet_state: dict[str, Any] = field(default_factory=dict)
    findings: dict[str, list[Finding]] = field(default_factory=dict)
    data_dir: str = ""

    @property
    def discrepancies(self) -> int:
        return sum(len(v) for v in self.findings.values())

    def recovery(self) -> dict[str, dict[str, Any]]:
        by_kind: dict[str, list[Injection]] = {}
        for injection in self.injections:
            by_kind.setdefault(injection.fault, []).append(injection)
        out = {}
        for kind, injections in by_kind.items():
            times = [i.recovered_after for i in injections if i.recovered_after is not None]
            out[kind] = {
                "injected": len(injections),
                "recovered": len(times),
                "p50_seconds": round(statistics.median(times), 1) if times else None,
                "max_seconds": round(max(times), 1) if times else None,
                "notes": [n for i in injections for n in i.notes],
            }
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "options": self.options,
            "started_at": self.started_at,
            "traffic_seconds": round(self.traffic_seconds, 1),
            "faults_injected": len(self.injections),
            "injections": [asdict(i) for i in self.injections],
            "recovery": self.recovery(),
            "writes": self.writes,
            "events": self.events,
            "quiet_after_seconds": self.quiet_after,
            "quiet_state": self.quiet_state,
            "discrepancies": {name: len(self.findings.get(name, [])) for name in CHECKS},
            "findings": {name: [asdict(f) for f in found] for name, found in self.findings.items()},
        }


class Run:
    def __init__(self, options: Options, console: Console | None = None) -> None:
        self.options = options
        self.console = console or Console(stderr=True)
        self.rng = random.Random(options.seed)
        self.ledger = Ledger()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.data_dir = (options.data_dir / stamp).resolve()
        self.platform = ChaosPlatform(self.data_dir)
        self.result = Result(
            {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
            datetime.now(UTC).isoformat(),
            data_dir=str(self.data_dir),
        )
        self._t0 = time.monotonic()

    def log(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self._t0:7.1f}s[/] {text}")

    async def execute(self) -> Result:
        self.log(f"starting the platform on free ports, files under {self.data_dir}")
        try:
            await asyncio.to_thread(self.platform.up)
            await self._drive()
        finally:
            self.log("stopping the platform")
            await asyncio.to_thread(self.platform.down)
        (self.data_dir / "chaos-report.json").write_bytes(
            orjson.dumps(self.result.as_json(), option=orjson.OPT_INDENT_2, default=str)
        )
        self._write_ledger()
        return self.result

    async def _drive(self) -> None:
        options = self.options
        clients = [
            Client(
                i,
                self.platform,
                self.ledger,
                random.Random(self.rng.random()),
                think=options.think,
                retry_seconds=options.retry_seconds,
                timeout=options.request_timeout,
            )
            for i in range(options.clients)
        ]
        prober = Client(
            -1,
            self.platform,
            self.ledger,
            random.Random(0),
            think=0,
            retry_seconds=60,
            timeout=options.request_timeout,
        )
        try:
            await self._history(clients)
            stop = asyncio.Event()
            started = time.monotonic()
            traffic = [asyncio.create_task(c.run(stop)) for c in clients]
            self.log(f"traffic: {len(clients)} clients")
            await asyncio.sleep(options.warmup)
            for name in options.faults:
                fault = CATALOGUE[name]
                at = time.monotonic()
                injection = await inject(fault, self.platform, self.log)
                self.result.injections.append(injection)
                await recover(injection, self.platform, prober, options.recovery_timeout, at)
                self.log(
                    f"fault {name}: recovered after {injection.recovered_after:.1f}s"
                    if injection.recovered_after is not None
                    else f"[red]fault {name}: {'; '.join(injection.notes)}[/]"
                )
                await asyncio.sleep(options.gap)
            await asyncio.sleep(max(0.0, options.duration - (time.monotonic() - started)))
            stop.set()
            self.log("traffic stopping (each client finishes its write)")
            await asyncio.gather(*traffic)
            self.result.traffic_seconds = time.monotonic() - started
            await self._settle(prober)
            self.result.writes = self.ledger.by_kind()
            await self._quiet()
            self.log("reading every database and crm.signals.v1")
            snapshot = await asyncio.to_thread(Snapshot.read, self.platform)
            self.result.events = await asyncio.to_thread(self.platform.end_offsets)
            self.result.events["signals read"] = snapshot.signal_records
            self.result.findings = run_checks(snapshot, self.ledger)
        finally:
            for client in [*clients, prober]:
                await client.close()

    async def _history(self, clients: list[Client]) -> None:
        """Customers with a year of history, shared among the clients, so the scorer has
        valuable customers slipping away to warn about (services/stack/demo.py's shop)."""
        now = datetime.now(UTC)
        lines = []
        for index in range(self.options.history_customers):
            client = clients[index % len(clients)]
            customer = await client.register(f"ch{client.index}-{index:04d}")
            if customer is None:
                continue
            shopper = client.shop.add_shopper(index)
            shopper.customer_id = customer.customer_id
            shopper.drifting = shopper.drifting or index % 2 == 0  # enough customers slipping away
            for line in client.shop.history(shopper, now):
                self.ledger.imported_orders[line["order_id"]] = customer.customer_id
                lines.append(line)
        answer = await clients[0].http.post(
            f"{self.platform.url('orders')}/orders/import",
            content=b"\n".join(orjson.dumps(line) for line in lines),
            headers={**self.platform.headers("admin"), "Content-Type": "application/x-ndjson"},
            timeout=300,
        )
        report = answer.json() if answer.status_code == 200 else answer.text[:300]
        self.log(
            f"history: {len(lines)} orders of {self.options.history_customers} customers imported: {report}"
        )

    async def _settle(self, prober: Client) -> None:
        """What no attempt got an answer for is sent once more with its own key, now that the
        faults are over, as a client that keeps its outbox of requests would."""
        unanswered = [w for w in self.ledger.writes if w.unanswered]
        self.log(f"{len(unanswered)} writes unanswered after their retries; sending each once more")
        for write in unanswered:
            await prober.attempts(write, 30.0)

    async def _quiet(self) -> None:
        """Until no outbox row is pending, no consumer group lags, no scorer signal waits and
        nothing moves for `quiet_seconds`."""
        options = self.options
        started = time.monotonic()
        last, since = None, time.monotonic()
        state: dict[str, Any] = {}
        next_log = started + 30.0
        while time.monotonic() - started < options.quiet_timeout:
            state = await asyncio.to_thread(self._backlog)
            if time.monotonic() >= next_log:
                next_log += 30.0
                self.log(f"not quiet yet: {state}")
            pending = state["outbox"] + state["signals_waiting"] + sum(state["lag"].values())
            fingerprint = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
            if fingerprint != last or pending:
                last, since = fingerprint, time.monotonic()
            elif time.monotonic() - since >= options.quiet_seconds:
                self.result.quiet_after = round(time.monotonic() - started, 1)
                self.result.quiet_state = state
                self.log(f"quiet after {self.result.quiet_after}s")
                return
            await asyncio.sleep(2.0)
        self.result.quiet_state = state
        self.log(f"[red]not quiet after {options.quiet_timeout:.0f}s: {state}[/]")

    def _backlog(self) -> dict[str, Any]:
        platform = self.platform
        state: dict[str, Any] = {"outbox": 0, "signals_waiting": 0, "lag": {}, "moving": {}}
        try:
            client = platform.mongo(timeout_ms=5000)
            try:
                for service in ("orders", "complaints", "loyalty", "profiles"):
                    db = client[platform.db_name(service)]
                    state["outbox"] += db["outbox"].count_documents({})
                scoring = client[platform.db_name("profiles")]
                marks = {d["_id"]: d["seq"] for d in scoring["signals_published"].find({})}
                for doc in scoring["profiles"].find(
                    {"pending_seq": {"$gt": 0}}, {"partition": 1, "pending_seq": 1}
                ):
                    if doc["pending_seq"] > marks.get(doc["partition"], 0):
                        state["signals_waiting"] += 1
                rows = scoring["profiles"].aggregate(
                    [
                        {
                            "$group": {
                                "_id": None,
                                "n": {"$sum": 1},
                                "bought": {"$sum": "$purchases.count"},
                                "points": {"$sum": "$loyalty.points"},
                            }
                        }
                    ]
                )
                state["moving"]["profiles"] = [(r["n"], r["bought"], r["points"]) for r in rows]
                state["moving"]["ledger"] = client[platform.db_name("loyalty")]["ledger"].count_documents({})
                state["moving"]["warnings"] = client[platform.db_name("profiles")][
                    "churn_warnings"
                ].count_documents({})
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 - a part still recovering: not quiet
            state["outbox"] += 1
            state["error"] = repr(exc)[:200]
        try:
            state["lag"] = platform.consumer_lag()
            state["moving"]["topics"] = platform.end_offsets()
        except Exception as exc:  # noqa: BLE001
            state["lag"] = {"unknown": 1}
            state["error"] = repr(exc)[:200]
        return state

    def _write_ledger(self) -> None:
        with open(self.data_dir / "chaos-ledger.jsonl", "wb") as handle:
            for write in self.ledger.writes:
                handle.write(orjson.dumps(write.as_json(), default=str) + b"\n")
