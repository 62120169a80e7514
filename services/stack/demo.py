"""Demo traffic: a believable shop driven through the services' real APIs.

Customers have their own cadence and basket size; some drift away. At start a year of
history is loaded through the orders import so segments and lifecycle stages mean
something at once; then live traffic follows. Each service is driven only when it is up,
so the demo grows as services land.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from services.common.settings import Settings
from services.engagement.stock import DEMO_CAMPAIGNS

CATEGORIES = {
    "shoes": (3000, 25000),
    "dresses": (5000, 40000),
    "bags": (8000, 90000),
    "accessories": (500, 6000),
    "beauty": (800, 12000),
}
BRANDS = ["Aurora", "Bamboo & Co", "Cobalt", "Dune", "Ember", "Fjord"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗"
GIVEN_NAMES = [
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "磊",
    "洋",
    "艳",
    "勇",
    "军",
    "杰",
    "娟",
    "涛",
    "明",
    "超",
    "秀英",
    "晓东",
    "雨桐",
    "子涵",
    "浩然",
]
# (city, city tier): where the shop's customers live
CITIES = [
    ("上海", 1),
    ("北京", 1),
    ("广州", 1),
    ("深圳", 1),
    ("杭州", 2),
    ("成都", 2),
    ("南京", 2),
    ("武汉", 2),
    ("西安", 2),
    ("苏州", 2),
    ("长沙", 3),
    ("青岛", 3),
    ("厦门", 3),
    ("昆明", 3),
    ("洛阳", 4),
]
CHANNELS = ["web", "app", "app", "marketplace", "store"]
# The service desk's people (the staff directory): two teams, each with two supervisors (levels 1
# and 2 of escalation) and three agents, an analyst and an admin. (team id, team name) -> people
# as (login, name, roles); the team's supervisors are the first two, in level order.
DEMO_TEAMS = {
    ("east", "华东客服组"): [
        ("wang.fang", "王芳", ["agent", "supervisor"]),
        ("zhao.lei", "赵磊", ["supervisor"]),
        ("li.na", "李娜", ["agent"]),
        ("chen.jie", "陈杰", ["agent"]),
        ("liu.yang", "刘洋", ["agent"]),
    ],
    ("north", "华北客服组"): [
        ("zhang.min", "张敏", ["agent", "supervisor"]),
        ("sun.tao", "孙涛", ["supervisor"]),
        ("zhou.jing", "周静", ["agent"]),
        ("wu.yong", "吴勇", ["agent"]),
        ("ma.chao", "马超", ["agent"]),
    ],
}
# The agent whose key (issued by the demo's admin) works the demo's cases and leaves its notes
# and callbacks, so a case's history names a person; cases are assigned to their team's agents.
DEMO_AGENT = ("li.na", "east")
DEMO_ASSIGNEES = [login for people in DEMO_TEAMS.values() for login, _, roles in people if "agent" in roles]
DEMO_STAFF_WITHOUT_TEAM = [
    ("huang.xd", "黄晓东", ["analyst"]),
    ("shop.admin", "Shop Admin", ["admin"]),
]


@dataclass
class Shopper:
    customer_id: str
    cadence_days: float  # mean days between purchases
    basket: float  # spend multiplier
    drifting: bool  # stops buying after a while
    name: str = ""
    city: tuple[str, int] = ("上海", 1)
    orders: list[str] = field(default_factory=list)


@dataclass
class Shop:
    """The simulated population; pure, seeded, so a demo run is reproducible."""

    rng: random.Random
    shoppers: list[Shopper] = field(default_factory=list)

    def add_shopper(self, index: int) -> Shopper:
        shopper = Shopper(
            f"demo-{index:05d}",
            cadence_days=self.rng.choice([7, 14, 30, 45, 90, 180]),
            basket=self.rng.lognormvariate(0, 0.5),
            drifting=self.rng.random() < 0.25,
            name=self.rng.choice(SURNAMES) + self.rng.choice(GIVEN_NAMES),
            city=self.rng.choice(CITIES),
        )
        self.shoppers.append(shopper)
        return shopper

    def registration(self, shopper: Shopper, now: datetime) -> dict:
        """What the shop knows of the person when they sign up, a little over a year ago."""
        index = int(shopper.customer_id.rsplit("-", 1)[1])
        return {
            "customer_id": shopper.customer_id,
            "name": shopper.name,
            "email": f"customer{index:05d}@example.com",
            "phone": f"+86 138 {index:04d} {self.rng.randint(1000, 9999)}",
            "gender": self.rng.choice(["female", "female", "male", "unspecified"]),
            "birth_date": f"{self.rng.randint(1965, 2004)}-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}",
            "city": shopper.city[0],
            "city_tier": shopper.city[1],
            "channel": self.rng.choice(CHANNELS),
            "marketing_consent": self.rng.random() < 0.7,
            "registered_at": _ts(now - timedelta(days=366 + self.rng.uniform(0, 30))),
        }

    def basket_items(self, shopper: Shopper) -> list[dict]:
        items = []
        for category in self.rng.sample(list(CATEGORIES), self.rng.randint(1, 3)):
            low, high = CATEGORIES[category]
            price = int(self.rng.uniform(low, high) * shopper.basket) // 100 * 100 + 99
            items.append(
                {
                    "sku": f"{category[:3].upper()}-{self.rng.randint(1, 400):04d}",
                    "category": category,
                    "brand": self.rng.choice(BRANDS),
                    "qty": self.rng.choice([1, 1, 1, 2]),
                    "unit_price_cents": max(price, 99),
                }
            )
        return items

    def history(self, shopper: Shopper, now: datetime, days: int = 365) -> list[dict]:
        """A year of past orders: on cadence with jitter; drifting shoppers stop part-way."""
        lines = []
        stop_after = now - timedelta(days=self.rng.uniform(60, 240)) if shopper.drifting else now
        when = now - timedelta(days=self.rng.uniform(0, days))
        while when < stop_after - timedelta(days=1):
            order_id = f"{shopper.customer_id}-h{len(lines) + 1}"
            paid = when + timedelta(minutes=self.rng.randint(1, 30))
            steps = {
                "paid_at": paid,
                "shipped_at": paid + timedelta(hours=20),
                "delivered_at": paid + timedelta(days=self.rng.randint(2, 6)),
            }
            if self.rng.random() < 0.06:
                steps["returned_at"] = paid + timedelta(days=12)
            line = {
                "order_id": order_id,
                "customer_id": shopper.customer_id,
                "currency": "CNY",
                "channel": self.rng.choice(CHANNELS),
                "items": self.basket_items(shopper),
                "placed_at": _ts(when),
            }
            # Recent orders are still in flight: only what has already happened is history.
            line.update({name: _ts(at) for name, at in steps.items() if at < now})
            lines.append(line)
            shopper.orders.append(order_id)
            when += timedelta(days=max(1.0, self.rng.expovariate(1 / shopper.cadence_days)))
        return lines


def _ts(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Demo:
    def __init__(
        self, settings: Settings, keys: dict[str, str], rate: float, customers: int, seed: int
    ) -> None:
        self.settings = settings
        self.shop = Shop(random.Random(seed))
        self.rate = rate
        self.customers = customers
        self.agent = {"Authorization": f"Bearer {keys['agent']}"}
        # the demo agent's own key once the directory issued it (directory()); until then the
        # keys file's agent key
        self.case_agent = self.agent
        self.admin = {"Authorization": f"Bearer {keys['admin']}"}
        self.http = httpx.Client(timeout=30.0)
        self.running = True
        self.open_orders: list[tuple[str, str]] = []  # (order id, status)
        self.open_complaints: list[tuple[str, str, str]] = []  # (complaint id, customer id, status)

    def up(self, service: str) -> bool:
        try:
            return self.http.get(f"{self.settings.url_of(service)}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def backfill(self) -> None:
        now = datetime.now(UTC)
        lines = []
        registrations = []
        for index in range(self.customers):
            shopper = self.shop.add_shopper(index)
            registrations.append(self.shop.registration(shopper, now))
            lines.extend(self.shop.history(shopper, now))
        if self.up("profiles"):
            # Names, cities and consent first, so the console shows people rather than ids.
            created = sum(
                self.http.post(
                    f"{self.settings.url_of('profiles')}/customers", json=body, headers=self.agent
                ).status_code
                == 201
                for body in registrations
            )
            print(f"demo: registered {created} customers ({len(registrations)} known)", flush=True)
        if self.up("orders"):
            body = b"\n".join(orjson.dumps(line) for line in lines)
            answer = self.http.post(
                f"{self.settings.url_of('orders')}/orders/import",
                content=body,
                headers={**self.admin, "Content-Type": "application/x-ndjson"},
                timeout=300,
            )
            report = answer.json() if answer.status_code == 200 else {"error": answer.text[:300]}
            report["rejects"] = report.get("rejects", [])[:3]
            print(f"demo: loaded a year of history for {self.customers} customers: {report}", flush=True)

    def step(self) -> None:
        rng = self.shop.rng
        roll = rng.random()
        if roll < 0.06 and self.up("complaints"):
            self.open_complaint(rng.choice(self.shop.shoppers))
        elif roll < 0.14 and self.open_complaints:
            self.advance_complaint()
        elif roll < 0.18 and self.up("complaints"):
            self.general_survey(rng.choice(self.shop.shoppers))
        elif roll < 0.21 and self.up("loyalty"):
            self.redeem_points(rng.choice(self.shop.shoppers))
        elif self.open_orders and roll < 0.6:
            self.advance_order()
        elif self.up("orders"):
            active = [s for s in self.shop.shoppers if not s.drifting] or self.shop.shoppers
            self.place_order(rng.choice(active))

    def open_complaint(self, shopper: Shopper) -> None:
        rng = self.shop.rng
        body = {
            "customer_id": shopper.customer_id,
            "category": rng.choice(["logistics"] * 4 + ["product"] * 3 + ["payment", "service", "website"]),
            "severity": rng.choice(["low"] * 3 + ["medium"] * 4 + ["high"] * 2 + ["critical"]),
            "channel": rng.choice(["phone", "chat", "email", "app"]),
            "description": "demo complaint",
        }
        if shopper.orders:
            body["order_id"] = rng.choice(shopper.orders)
        answer = self.http.post(
            f"{self.settings.url_of('complaints')}/complaints", json=body, headers=self.case_agent
        )
        if answer.status_code == 201:
            self.open_complaints.append((answer.json()["complaint_id"], shopper.customer_id, "open"))

    def advance_complaint(self) -> None:
        """Most complaints are handled; some wait for the customer; some are left to breach."""
        rng = self.shop.rng
        complaint_id, customer, status = self.open_complaints.pop(rng.randrange(len(self.open_complaints)))
        if rng.random() < 0.15:
            return  # forgotten: the SLA watcher will escalate it
        base = f"{self.settings.url_of('complaints')}/complaints/{complaint_id}"
        if status == "open":
            self.http.post(
                f"{base}/assign",
                json={"assignee": rng.choice(DEMO_ASSIGNEES)},
                headers=self.case_agent,
            )
            self.open_complaints.append((complaint_id, customer, "assigned"))
        elif status == "assigned" and rng.random() < 0.2:
            self.http.post(
                f"{base}/await-customer", json={"note": "asked for details"}, headers=self.case_agent
            )
            self.open_complaints.append((complaint_id, customer, "awaiting"))
        else:
            if status == "awaiting":
                self.http.post(f"{base}/assign", json={"assignee": DEMO_AGENT[0]}, headers=self.case_agent)
            self.http.post(
                f"{base}/resolve", json={"resolution": "resolved in the demo"}, headers=self.case_agent
            )
            if rng.random() < 0.5:
                self.after_case(customer, complaint_id)
            if rng.random() < 0.6:
                self.http.post(
                    f"{self.settings.url_of('complaints')}/surveys",
                    headers=self.case_agent,
                    json={
                        "customer_id": customer,
                        "complaint_id": complaint_id,
                        "scores": {"overall": rng.choice([1, 2, 3, 4, 4, 5, 5])},
                    },
                )

    def after_case(self, customer: str, complaint_id: str) -> None:
        """What the agent leaves on the desk after a case: a note, and a callback of their own a
        day later (its reminder emails them)."""
        desk = self.settings.url_of("desk")
        self.http.post(
            f"{desk}/customers/{customer}/notes",
            json={"text": f"Resolved {complaint_id}; prefers a call in the evening", "pinned": False},
            headers=self.case_agent,
        )
        due = datetime.now(UTC) + timedelta(days=1)
        self.http.post(
            f"{desk}/tasks",
            json={"customer_id": customer, "kind": "callback", "title": "Check the customer is happy",
                  "due_at": _ts(due), "assignee": DEMO_AGENT[0], "team": DEMO_AGENT[1],
                  "case_id": complaint_id},
            headers=self.case_agent,
        )  # fmt: skip

    def redeem_points(self, shopper: Shopper) -> None:
        """Shoppers spend part of their points on vouchers now and then."""
        url = f"{self.settings.url_of('loyalty')}/accounts/{shopper.customer_id}"
        account = self.http.get(url, headers=self.agent)
        if account.status_code == 200 and account.json()["balance"] >= 100:
            points = self.shop.rng.randint(50, account.json()["balance"] // 2 or 50)
            self.http.post(
                f"{url}/redemptions",
                json={"points": points, "reason": "voucher"},
                headers={**self.agent, "Idempotency-Key": uuid.uuid4().hex},
            )

    def general_survey(self, shopper: Shopper) -> None:
        rng = self.shop.rng
        mood = -1 if shopper.drifting else 0
        scores = {
            d: max(1, min(5, rng.choice([3, 4, 4, 5]) + mood))
            for d in ("website", "product", "payment", "service", "logistics", "overall")
        }
        self.http.post(
            f"{self.settings.url_of('complaints')}/surveys",
            headers=self.agent,
            json={
                "customer_id": shopper.customer_id,
                "scores": scores,
                "recommend": max(0, min(10, rng.choice([6, 7, 8, 9, 10]) + 3 * mood)),
            },
        )

    def place_order(self, shopper: Shopper) -> None:
        body = {
            "customer_id": shopper.customer_id,
            "currency": "CNY",
            "channel": self.shop.rng.choice(CHANNELS),
            "items": self.shop.basket_items(shopper),
            "promised_delivery_date": (datetime.now(UTC) + timedelta(days=3)).date().isoformat(),
        }
        answer = self.http.post(f"{self.settings.url_of('orders')}/orders", json=body, headers=self.agent)
        if answer.status_code == 201:
            self.open_orders.append((answer.json()["order_id"], "placed"))

    def advance_order(self) -> None:
        rng = self.shop.rng
        order_id, status = self.open_orders.pop(rng.randrange(len(self.open_orders)))
        following = {
            "placed": ["pay"] * 9 + ["cancel"],
            "paid": ["ship"] * 19 + ["cancel"],
            "shipped": ["deliver"],
            "delivered": ["return"] + [None] * 12,
        }[status]
        action = rng.choice(following)
        if action is None:
            return
        body = {"reason": "did not fit"} if action == "return" else None
        # One key per order and move: money moves need it, and a retry must not repeat them.
        answer = self.http.post(
            f"{self.settings.url_of('orders')}/orders/{order_id}/{action}",
            json=body,
            headers={**self.agent, "Idempotency-Key": f"{order_id}-{action}"},
        )
        if answer.status_code == 200:
            new_status = answer.json()["status"]
            if new_status in ("paid", "shipped", "delivered"):
                self.open_orders.append((order_id, new_status))
            elif new_status in ("returned", "partially_returned"):
                self.http.post(
                    f"{self.settings.url_of('orders')}/orders/{order_id}/refund",
                    headers={**self.agent, "Idempotency-Key": f"{order_id}-refund"},
                )

    def campaigns(self) -> None:
        """Switch on the birthday greeting and the win-back on churn warnings (once: a second
        run's 409 says they exist), so the demo's mail arrives in the local mailbox."""
        if not self.up("engagement"):
            return
        for body in DEMO_CAMPAIGNS:
            self.http.post(f"{self.settings.url_of('engagement')}/campaigns", json=body, headers=self.agent)

    def directory(self) -> None:
        """The demo's teams and people in the staff directory (once: a second run's 409s say
        they exist), and a key of the demo agent's own for the case work (a new one each run:
        a key is shown only when issued)."""
        if not self.up("staff"):
            return
        url = self.settings.url_of("staff")

        def person(login: str, name: str, roles: list[str], team: str | None) -> None:
            body = {"id": login, "name": name, "email": f"{login}@shop.example", "roles": roles, "team": team}
            self.http.post(
                f"{url}/users",
                json={**body, "locale": "en" if login == "shop.admin" else "zh-CN"},
                headers=self.admin,
            )

        for (team_id, team_name), people in DEMO_TEAMS.items():
            self.http.post(f"{url}/teams", json={"id": team_id, "name": team_name}, headers=self.admin)
            for login, name, roles in people:
                person(login, name, roles, team_id)
            supervisors = [login for login, _, roles in people if "supervisor" in roles][:2]
            self.http.patch(f"{url}/teams/{team_id}", json={"supervisors": supervisors}, headers=self.admin)
        for login, name, roles in DEMO_STAFF_WITHOUT_TEAM:
            person(login, name, roles, None)
        if self.case_agent is self.agent:  # once a run
            issued = self.http.post(
                f"{url}/users/{DEMO_AGENT[0]}/keys", json={"label": "demo"}, headers=self.admin
            )
            if issued.status_code == 201:
                self.case_agent = {"Authorization": f"Bearer {issued.json()['key']}"}
        print(f"demo: staff directory: {len(DEMO_TEAMS)} teams at {url}/teams", flush=True)

    def run(self) -> None:
        self.directory()
        self.campaigns()
        self.backfill()
        interval = 1.0 / self.rate
        while self.running:
            started = time.monotonic()
            try:
                self.step()
            except httpx.HTTPError as exc:
                print(f"demo: {exc!r}", flush=True)
                time.sleep(1)
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


def main() -> None:
    parser = argparse.ArgumentParser(description="demo traffic for the CRM platform")
    parser.add_argument("--rate", type=float, default=5.0, help="actions per second")
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    keys_path = Path(os.environ.get("CRM_DEMO_KEYS", ".crm/api-keys.txt"))
    keys = dict(line.split("=", 1) for line in keys_path.read_text().split() if "=" in line)
    demo = Demo(Settings(), keys, args.rate, args.customers, args.seed)

    def stop(*_: object) -> None:
        demo.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    demo.run()


if __name__ == "__main__":
    main()
