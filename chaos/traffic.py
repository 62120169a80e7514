"""Steady mixed traffic through the platform's real HTTP APIs, and the ledger of what every
client was told.

Each client owns its customers (no two clients race on one), sends every write with an
Idempotency-Key, and retries a 5xx, a timeout or a refused connection with the same key, as a
real client would, until it gets an answer or its retry budget runs out. The ledger keeps
each write's every attempt and its final outcome: what the client knows was accepted.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from services.stack.demo import BRANDS, CATEGORIES, Shop

from .platform import ChaosPlatform

INTERACTION_KINDS = ["page_view", "search", "cart_add", "wishlist_add", "login", "email_opened"]


@dataclass
class Write:
    """One write as the client saw it: every attempt's status, and the final answer."""

    kind: str
    customer_id: str
    method: str
    path: str
    key: str | None
    client: int
    started: float
    statuses: list[int | str] = field(default_factory=list)
    final: int | str | None = None  # the last status, or the last error's name
    body: Any = None
    entity: str | None = None  # order, complaint, survey ... id the answer named
    service: str = ""
    role: str = "agent"
    request: Any = None

    @property
    def accepted(self) -> bool:
        return isinstance(self.final, int) and 200 <= self.final < 300

    @property
    def unanswered(self) -> bool:
        """No definite answer: the last attempt was a 5xx or a transport error."""
        return not isinstance(self.final, int) or self.final >= 500

    @property
    def retried_after_failure(self) -> bool:
        return any(not isinstance(s, int) or s >= 500 for s in self.statuses[:-1])

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Customer:
    customer_id: str
    tokens: list[str]  # strings that appear only in this person's personal data
    orders: dict[str, str] = field(default_factory=dict)  # order id -> status
    erased: bool = False


@dataclass
class Ledger:
    writes: list[Write] = field(default_factory=list)
    customers: dict[str, Customer] = field(default_factory=dict)
    imported_orders: dict[str, str] = field(default_factory=dict)  # order id -> customer id

    def accepted(self, kind: str | None = None) -> list[Write]:
        return [w for w in self.writes if w.accepted and (kind is None or w.kind == kind)]

    def by_kind(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for w in self.writes:
            row = out.setdefault(w.kind, {"accepted": 0, "refused_4xx": 0, "unanswered": 0, "retried": 0})
            if w.accepted:
                row["accepted"] += 1
            elif w.unanswered:
                row["unanswered"] += 1
            else:
                row["refused_4xx"] += 1
            if len(w.statuses) > 1:
                row["retried"] += 1
        return out


class Client:
    """One shop system talking to the platform: registers its customers, places and pays
    their orders, takes returns and refunds, complaints, surveys, redemptions, interactions
    and, now and then, an erasure."""

    def __init__(
        self,
        index: int,
        platform: ChaosPlatform,
        ledger: Ledger,
        rng: random.Random,
        *,
        think: float,
        retry_seconds: float,
        timeout: float,
    ) -> None:
        self.index = index
        self.platform = platform
        self.ledger = ledger
        self.rng = rng
        self.shop = Shop(rng)
        self.think = think
        self.retry_seconds = retry_seconds
        self.http = httpx.AsyncClient(timeout=timeout)
        self.mine: list[Customer] = []
        self.complaints: list[tuple[str, str]] = []  # (complaint id, customer id) open ones

    async def close(self) -> None:
        await self.http.aclose()

    # --- the wire ----------------------------------------------------------------------------

    async def send(
        self,
        kind: str,
        customer_id: str,
        service: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        role: str = "agent",
        key: bool = True,
    ) -> Write:
        write = Write(
            kind, customer_id, method, path, uuid.uuid4().hex if key else None, self.index, time.time()
        )
        write.service, write.role, write.request = service, role, body
        self.ledger.writes.append(write)
        await self.attempts(write, self.retry_seconds)
        return write

    async def attempts(self, write: Write, budget: float) -> None:
        """Send until an answer below 500 or until `budget` seconds are spent, with the
        write's own Idempotency-Key every time."""
        headers = self.platform.headers(write.role)
        if write.key:
            headers["Idempotency-Key"] = write.key
        content = orjson.dumps(write.request) if write.request is not None else None
        if content is not None:
            headers["Content-Type"] = "application/json"
        deadline = time.monotonic() + budget
        backoff = 0.25
        while True:
            try:
                answer = await self.http.request(
                    write.method,
                    f"{self.platform.url(write.service)}{write.path}",
                    content=content,
                    headers=headers,
                )
                write.statuses.append(answer.status_code)
                write.final = answer.status_code
                try:
                    write.body = answer.json()
                except ValueError:
                    write.body = answer.text[:300]
                if answer.status_code < 500:
                    return
            except httpx.HTTPError as exc:
                write.statuses.append(type(exc).__name__)
                write.final = type(exc).__name__
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 4.0)

    # --- the operations ----------------------------------------------------------------------

    def personal(self) -> tuple[dict[str, Any], list[str]]:
        token = uuid.uuid4().hex[:10]
        phone = "+86 " + "".join(str(self.rng.randint(0, 9)) for _ in range(11))
        fields = {
            "name": f"Person {token}",
            "email": f"p{token}@mail.example",
            "phone": phone,
            "city": self.rng.choice(["Hangzhou", "Shanghai", "Chengdu", "Xi'an"]),
            "gender": self.rng.choice(["female", "male", "other"]),
            "birth_date": f"19{self.rng.randint(60, 99)}-0{self.rng.randint(1, 9)}-1{self.rng.randint(0, 9)}",
            "marketing_consent": self.rng.random() < 0.5,
        }
        return fields, [token, phone]

    async def register(self, customer_id: str | None = None) -> Customer | None:
        customer_id = customer_id or f"cc{self.index}-{uuid.uuid4().hex[:10]}"
        fields, tokens = self.personal()
        body = {"customer_id": customer_id, **fields}
        if self.mine and self.rng.random() < 0.2:
            body["referred_by"] = self.rng.choice(self.mine).customer_id
        write = await self.send("register", customer_id, "profiles", "POST", "/customers", body)
        customer = Customer(customer_id, tokens)
        self.ledger.customers[customer_id] = customer
        if write.accepted:
            self.mine.append(customer)
            return customer
        return None

    async def place_order(self, customer: Customer) -> None:
        body = {
            "customer_id": customer.customer_id,
            "currency": "CNY",
            "channel": self.rng.choice(["web", "app", "marketplace"]),
            "items": self.items(),
            "promised_delivery_date": (datetime.now(UTC) + timedelta(days=3)).date().isoformat(),
        }
        write = await self.send("order", customer.customer_id, "orders", "POST", "/orders", body)
        if write.accepted:
            write.entity = write.body["order_id"]
            customer.orders[write.entity] = write.body["status"]

    def items(self) -> list[dict[str, Any]]:
        out = []
        for category in self.rng.sample(list(CATEGORIES), self.rng.randint(1, 2)):
            low, high = CATEGORIES[category]
            out.append(
                {
                    "sku": f"{category[:3].upper()}-{self.rng.randint(1, 400):04d}",
                    "category": category,
                    "brand": self.rng.choice(BRANDS),
                    "qty": self.rng.choice([1, 1, 2]),
                    "unit_price_cents": int(self.rng.uniform(low, high)) // 100 * 100 + 99,
                }
            )
        return out

    async def advance_order(self, customer: Customer) -> None:
        movable = [(o, s) for o, s in customer.orders.items() if s in NEXT]
        if not movable:
            return await self.place_order(customer)
        order_id, status = self.rng.choice(movable)
        action = self.rng.choice(NEXT[status])
        if action == "keep":
            customer.orders[order_id] = "kept"
            return
        body = {"reason": "did not fit"} if action in ("return",) else None
        if action == "cancel":
            body = {"reason": "changed mind"}
        write = await self.send(
            action, customer.customer_id, "orders", "POST", f"/orders/{order_id}/{action}", body
        )
        write.entity = order_id
        if write.accepted:
            customer.orders[order_id] = "refunded" if action == "refund" else write.body["status"]

    async def complaint(self, customer: Customer) -> None:
        token = uuid.uuid4().hex[:10]
        customer.tokens.append(token)  # free text describing the person
        body = {
            "customer_id": customer.customer_id,
            "category": self.rng.choice(["logistics", "product", "payment", "service"]),
            "severity": self.rng.choice(["low", "medium", "high"]),
            "channel": self.rng.choice(["phone", "chat", "email"]),
            "description": f"my parcel for flat {token} never came",
        }
        if customer.orders and self.rng.random() < 0.5:
            body["order_id"] = self.rng.choice(list(customer.orders))
        write = await self.send("complaint", customer.customer_id, "complaints", "POST", "/complaints", body)
        if write.accepted:
            write.entity = write.body["complaint_id"]
            self.complaints.append((write.entity, customer.customer_id))

    async def resolve(self) -> None:
        complaint_id, customer_id = self.complaints.pop(self.rng.randrange(len(self.complaints)))
        if self.ledger.customers[customer_id].erased:
            return
        write = await self.send(
            "resolve",
            customer_id,
            "complaints",
            "POST",
            f"/complaints/{complaint_id}/resolve",
            {"resolution": "sent a new parcel"},
        )
        write.entity = complaint_id

    async def survey(self, customer: Customer) -> None:
        scores = {
            d: self.rng.choice([2, 3, 4, 5])
            for d in ("website", "product", "payment", "service", "logistics", "overall")
        }
        body = {"customer_id": customer.customer_id, "scores": scores, "recommend": self.rng.randint(0, 10)}
        write = await self.send("survey", customer.customer_id, "complaints", "POST", "/surveys", body)
        if write.accepted:
            write.entity = write.body.get("survey_id")

    async def redeem(self, customer: Customer) -> None:
        try:
            account = await self.http.get(
                f"{self.platform.url('loyalty')}/accounts/{customer.customer_id}",
                headers=self.platform.headers("agent"),
            )
        except httpx.HTTPError:
            return
        if account.status_code != 200 or account.json().get("balance", 0) < 20:
            return
        points = self.rng.randint(1, account.json()["balance"] // 3 or 1)
        body = {"points": points, "reason": "voucher"}
        await self.send(
            "redeem",
            customer.customer_id,
            "loyalty",
            "POST",
            f"/accounts/{customer.customer_id}/redemptions",
            body,
        )

    async def interactions(self, customer: Customer) -> None:
        batch = [
            {
                "interaction_id": f"i-{uuid.uuid4().hex[:16]}",
                "customer_id": customer.customer_id,
                "kind": self.rng.choice(INTERACTION_KINDS),
                "channel": "app",
            }
            for _ in range(self.rng.randint(1, 4))
        ]
        write = await self.send(
            "interactions", customer.customer_id, "profiles", "POST", "/interactions", batch
        )
        write.entity = ",".join(i["interaction_id"] for i in batch)

    async def erase(self, customer: Customer) -> None:
        self.mine.remove(customer)
        customer.erased = True  # from the first attempt on: it may apply even unanswered
        write = await self.send(
            "erase",
            customer.customer_id,
            "profiles",
            "DELETE",
            f"/customers/{customer.customer_id}",
            role="admin",
            key=False,
        )
        write.entity = customer.customer_id

    async def step(self) -> None:
        if len(self.mine) < 4 or self.rng.random() < 0.06:
            await self.register()
            return
        customer = self.rng.choice(self.mine)
        roll = self.rng.random()
        operation = next(name for share, name in MIX if roll < share)
        if operation == "resolve" and not self.complaints:
            operation = "survey"
        if operation == "erase":
            if len(self.mine) > 6:
                await self.erase(customer)
        elif operation == "resolve":
            await self.resolve()
        else:
            await getattr(self, operation)(customer)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            await self.step()
            await asyncio.sleep(
                max(0.0, self.think * self.rng.uniform(0.5, 1.5) - (time.monotonic() - started))
            )


# The mix of a client's steps (besides registering): cumulative shares of a roll in [0, 1).
MIX = (
    (0.25, "place_order"),
    (0.62, "advance_order"),
    (0.68, "complaint"),
    (0.72, "resolve"),
    (0.76, "survey"),
    (0.83, "redeem"),
    (0.99, "interactions"),
    (1.00, "erase"),
)
# What a client does next to an order in each status.
NEXT = {
    "placed": ["pay"] * 9 + ["cancel"],
    "paid": ["ship"] * 8 + ["cancel"],
    "shipped": ["deliver"],
    "delivered": ["return", "keep", "keep"],
    "returned": ["refund"],
    "partially_returned": ["refund"],
}
