"""Order rules: totals, the lifecycle state machine, returns and refunds. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from services.common.errors import Kind, RuleBroken


class Status(StrEnum):
    PLACED = "placed"
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    PARTIALLY_RETURNED = "partially_returned"
    RETURNED = "returned"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


class Action(StrEnum):
    PAY = "pay"
    SHIP = "ship"
    DELIVER = "deliver"
    CANCEL = "cancel"
    RETURN = "return"
    REFUND = "refund"


# The lifecycle. Refund is further limited to orders with money left to give back.
TRANSITIONS: dict[Status, dict[Action, Status | None]] = {
    Status.PLACED: {Action.PAY: Status.PAID, Action.CANCEL: Status.CANCELLED},
    Status.PAID: {Action.SHIP: Status.SHIPPED, Action.CANCEL: Status.CANCELLED},
    Status.SHIPPED: {Action.DELIVER: Status.DELIVERED},
    Status.DELIVERED: {Action.RETURN: None, Action.REFUND: None},
    Status.PARTIALLY_RETURNED: {Action.RETURN: None, Action.REFUND: None},
    Status.RETURNED: {Action.REFUND: None},
    Status.REFUNDED: {},
    Status.CANCELLED: {},
}


class OrderError(RuleBroken):
    """An order rule was broken."""


def no_order(order_id: str) -> OrderError:
    return OrderError(f"no order {order_id}", Kind.NOT_FOUND)


class IllegalTransition(OrderError):
    def __init__(self, order: Order, action: Action) -> None:
        allowed = allowed_actions(order)
        super().__init__(
            f"cannot {action.value} an order that is {order.status.value}; allowed now: "
            f"{', '.join(a.value for a in allowed) or 'nothing (final state)'}",
            Kind.CONFLICT,
            current_status=order.status.value,
            allowed=[a.value for a in allowed],
        )


@dataclass(frozen=True)
class Item:
    sku: str
    category: str
    brand: str
    qty: int
    unit_price_cents: int
    net_cents: int = 0  # this line's share of the order amount, after the discount
    returned_qty: int = 0
    returned_cents: int = 0


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    items: tuple[Item, ...]
    currency: str
    channel: str
    discount_cents: int
    amount_cents: int
    placed_at: datetime
    promised_delivery_date: date | None = None
    status: Status = Status.PLACED
    paid_cents: int = 0
    returned_cents: int = 0
    refunded_cents: int = 0
    refunded_for_returns_cents: int = 0
    late: bool | None = None
    times: dict[str, datetime] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()
    version: int = 0
    # The loyalty tier benefits applied when it was placed (tier, discount_percent,
    # discount_cents, free_shipping); None when none were asked for.
    benefits: dict[str, Any] | None = None

    @property
    def gross_cents(self) -> int:
        return sum(i.qty * i.unit_price_cents for i in self.items)

    @property
    def last_change(self) -> datetime:
        return max([self.placed_at, *self.times.values()])

    @property
    def net_sales_cents(self) -> int:
        """What the shop kept: paid, less returns and refunds that were not for returns (a
        refund for a return repays what the return already took off)."""
        return net_sales(
            self.paid_cents, self.returned_cents, self.refunded_cents, self.refunded_for_returns_cents
        )

    @property
    def refundable_cents(self) -> int:
        return self.paid_cents - self.refunded_cents


@dataclass(frozen=True)
class OrderFilters:
    """Which orders a list asks for; None leaves a criterion out. Placed in [from, to)."""

    customer_id: str | None = None
    status: Status | None = None
    placed_from: datetime | None = None
    placed_to: datetime | None = None


@dataclass(frozen=True)
class Change:
    """What one transition did: the new order and the event facts it implies."""

    order: Order
    facts: list[tuple[str, dict[str, Any]]]  # (event type, data beyond order/customer ids)


MAX_AMOUNT_CENTS = 100_000_000_000


def new_order(
    *,
    order_id: str,
    customer_id: str,
    items: list[dict[str, Any]],
    currency: str,
    channel: str,
    discount_cents: int,
    placed_at: datetime,
    promised_delivery_date: date | None,
    amount_cents: int | None = None,
    by: str = "system",
    benefits: dict[str, Any] | None = None,
) -> Order:
    """Totals are computed here; a client-stated amount must agree with them."""
    if not items:
        raise OrderError("an order needs at least one item")
    skus = [i["sku"] for i in items]
    if len(set(skus)) != len(skus):
        raise OrderError("each sku may appear once; put the quantity on one line", field="items")
    gross = gross_cents(items)
    if discount_cents > gross:
        raise OrderError(
            f"discount_cents {discount_cents} exceeds the items' total {gross}", field="discount_cents"
        )
    amount = gross - discount_cents
    if amount > MAX_AMOUNT_CENTS:
        raise OrderError(f"order total {amount} exceeds the limit {MAX_AMOUNT_CENTS}", field="items")
    if amount_cents is not None and amount_cents != amount:
        raise OrderError(
            f"amount_cents {amount_cents} does not match items minus discount ({gross} - "
            f"{discount_cents} = {amount})",
            field="amount_cents",
        )
    nets = allocate(amount, [i["qty"] * i["unit_price_cents"] for i in items])
    lines = tuple(
        Item(i["sku"], i["category"], i["brand"], i["qty"], i["unit_price_cents"], net)
        for i, net in zip(items, nets, strict=True)
    )
    return Order(
        order_id,
        customer_id,
        lines,
        currency,
        channel,
        discount_cents,
        amount,
        placed_at,
        promised_delivery_date,
        history=({"action": "place", "at": placed_at, "to": "placed", "by": by},),
        benefits=benefits,
    )


def gross_cents(items: list[dict[str, Any]]) -> int:
    return sum(i["qty"] * i["unit_price_cents"] for i in items)


def tier_benefits(
    tier: str, discount_percent: float, free_shipping: bool, subtotal_cents: int
) -> dict[str, Any]:
    """A loyalty tier's benefits on an order: its percent off what is left to pay after the
    other discounts (rounded down, in the customer's favour never beyond the total), and
    whether shipping is free."""
    return {
        "tier": tier,
        "discount_percent": discount_percent,
        "discount_cents": min(int(subtotal_cents * discount_percent // 100), subtotal_cents),
        "free_shipping": free_shipping,
    }


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to `weights`, in integers that add up exactly
    (largest remainder). Used to spread a discount over the lines."""
    weight_sum = sum(weights)
    if weight_sum == 0:
        shares = [0] * len(weights)
        if weights:
            shares[0] = total
        return shares
    raw = [total * w for w in weights]
    shares = [r // weight_sum for r in raw]
    leftover = total - sum(shares)
    by_remainder = sorted(range(len(weights)), key=lambda k: (-(raw[k] % weight_sum), k))
    for k in by_remainder[:leftover]:
        shares[k] += 1
    return shares


def allowed_actions(order: Order) -> list[Action]:
    actions = list(TRANSITIONS[order.status])
    if Action.REFUND in actions and order.refundable_cents <= 0:
        actions.remove(Action.REFUND)
    if Action.RETURN in actions and all(i.returned_qty >= i.qty for i in order.items):
        actions.remove(Action.RETURN)
    return actions


def _check(order: Order, action: Action, at: datetime) -> None:
    if action not in allowed_actions(order):
        raise IllegalTransition(order, action)
    if at < order.last_change:
        raise OrderError(
            f"time {at.isoformat()} is before the order's last change ({order.last_change.isoformat()})",
            field="at",
        )


def _moved(order: Order, action: Action, at: datetime, to: Status, by: str, **changes: Any) -> Order:
    times = {**order.times, action.value: at}
    entry = {"action": action.value, "at": at, "from": order.status.value, "to": to.value, "by": by}
    return replace(order, status=to, times=times, history=(*order.history, entry), **changes)


def pay(order: Order, at: datetime, by: str = "system", stated_amount_cents: int | None = None) -> Change:
    """Payment captured. An amount the payer states must be the order amount."""
    _check(order, Action.PAY, at)
    if stated_amount_cents is not None and stated_amount_cents != order.amount_cents:
        raise OrderError(
            f"amount_cents {stated_amount_cents} does not match the order amount {order.amount_cents}",
            field="amount_cents",
        )
    paid = _moved(order, Action.PAY, at, Status.PAID, by, paid_cents=order.amount_cents)
    return Change(
        paid,
        [("crm.order.paid", {"amount_cents": order.amount_cents, "currency": order.currency, "paid_at": at})],
    )


def ship(
    order: Order,
    at: datetime,
    by: str = "system",
    carrier: str | None = None,
    tracking_number: str | None = None,
) -> Change:
    _check(order, Action.SHIP, at)
    shipped = _moved(order, Action.SHIP, at, Status.SHIPPED, by)
    return Change(
        shipped,
        [("crm.order.shipped", {"shipped_at": at, "carrier": carrier, "tracking_number": tracking_number})],
    )


def deliver(order: Order, at: datetime, by: str = "system") -> Change:
    _check(order, Action.DELIVER, at)
    late = order.promised_delivery_date is not None and at.date() > order.promised_delivery_date
    delivered = _moved(order, Action.DELIVER, at, Status.DELIVERED, by, late=late)
    return Change(
        delivered,
        [
            (
                "crm.order.delivered",
                {"delivered_at": at, "late": late, "promised_delivery_date": order.promised_delivery_date},
            )
        ],
    )


def cancel(order: Order, at: datetime, reason: str, refund_id: str, by: str = "system") -> Change:
    """Before shipping only. A paid order is refunded in full at the same moment."""
    _check(order, Action.CANCEL, at)
    was_paid = order.status is Status.PAID
    cancelled = _moved(
        order,
        Action.CANCEL,
        at,
        Status.CANCELLED,
        by,
        refunded_cents=order.paid_cents if was_paid else order.refunded_cents,
    )
    facts: list[tuple[str, dict[str, Any]]] = [
        ("crm.order.cancelled", {"cancelled_at": at, "reason": reason, "was_paid": was_paid})
    ]
    if was_paid:
        facts.append(
            (
                "crm.order.refunded",
                {
                    "refund_id": refund_id,
                    "amount_cents": order.paid_cents,
                    "currency": order.currency,
                    "reason": "cancellation",
                    "return_id": None,
                    "refunded_at": at,
                },
            )
        )
    return Change(cancelled, facts)


def return_items(
    order: Order,
    at: datetime,
    return_id: str,
    reason: str,
    lines: list[dict[str, Any]] | None,
    by: str = "system",
) -> Change:
    """Whole (lines None: everything not yet returned) or partial, by sku and quantity. Each
    line's amount is its share of what was paid, so returning everything returns exactly
    the order amount."""
    _check(order, Action.RETURN, at)
    by_sku = {i.sku: i for i in order.items}
    wanted: dict[str, int] = {}
    if lines is None:
        wanted = {i.sku: i.qty - i.returned_qty for i in order.items if i.qty > i.returned_qty}
    else:
        for line in lines:
            sku, qty = line["sku"], line["qty"]
            if sku not in by_sku:
                raise OrderError(f"sku {sku!r} is not in this order", field="items")
            wanted[sku] = wanted.get(sku, 0) + qty
        for sku, qty in wanted.items():
            left = by_sku[sku].qty - by_sku[sku].returned_qty
            if qty > left:
                raise OrderError(f"cannot return {qty} of {sku!r}: {left} left to return", field="items")
    returned_lines = []
    new_items = []
    total = 0
    for item in order.items:
        qty = wanted.get(item.sku, 0)
        if not qty:
            new_items.append(item)
            continue
        done = item.returned_qty + qty
        # Cumulative floor: the last unit returned carries the rounding, so all units add up to net.
        amount = item.net_cents * done // item.qty - item.returned_cents
        new_items.append(replace(item, returned_qty=done, returned_cents=item.returned_cents + amount))
        returned_lines.append({"sku": item.sku, "qty": qty, "amount_cents": amount})
        total += amount
    full = all(i.returned_qty >= i.qty for i in new_items)
    to = Status.RETURNED if full else Status.PARTIALLY_RETURNED
    returned = _moved(
        order, Action.RETURN, at, to, by, items=tuple(new_items), returned_cents=order.returned_cents + total
    )
    return Change(
        returned,
        [
            (
                "crm.order.returned",
                {
                    "return_id": return_id,
                    "items": returned_lines,
                    "amount_cents": total,
                    "currency": order.currency,
                    "reason": reason,
                    "full": full,
                    "returned_at": at,
                },
            )
        ],
    )


def refund(
    order: Order, at: datetime, refund_id: str, amount_cents: int | None, by: str = "system"
) -> Change:
    """Pay money back. By default what returns have not yet been refunded for (reason
    'return'); with nothing returned and unrefunded, a stated amount is a goodwill refund."""
    _check(order, Action.REFUND, at)
    owed_for_returns = order.returned_cents - order.refunded_for_returns_cents
    if amount_cents is None:
        if owed_for_returns <= 0:
            raise OrderError(
                "nothing returned is waiting for a refund; state amount_cents for a goodwill refund",
                field="amount_cents",
            )
        amount_cents = owed_for_returns
    if amount_cents <= 0:
        raise OrderError("amount_cents must be positive", field="amount_cents")
    if amount_cents > order.refundable_cents:
        raise OrderError(
            f"cannot refund {amount_cents}: only {order.refundable_cents} was paid and not yet refunded",
            Kind.CONFLICT,
            refundable_cents=order.refundable_cents,
        )
    for_returns = min(amount_cents, max(owed_for_returns, 0))
    refunded_total = order.refunded_cents + amount_cents
    to = Status.REFUNDED if refunded_total >= order.paid_cents else order.status
    refunded = _moved(
        order,
        Action.REFUND,
        at,
        to,
        by,
        refunded_cents=refunded_total,
        refunded_for_returns_cents=order.refunded_for_returns_cents + for_returns,
    )
    # Two reasons, two events: a refund for returned goods repays what crm.order.returned
    # already took off net spend; a goodwill refund takes money off by itself.
    facts = []
    for reason, amount, suffix in (
        ("return", for_returns, ""),
        ("goodwill", amount_cents - for_returns, "-g"),
    ):
        if amount > 0:
            facts.append(
                (
                    "crm.order.refunded",
                    {
                        "refund_id": refund_id + (suffix if for_returns else ""),
                        "amount_cents": amount,
                        "currency": order.currency,
                        "reason": reason,
                        "return_id": None,
                        "refunded_at": at,
                    },
                )
            )
    return Change(refunded, facts)


def rebuild_history(
    order: Order, times: dict[Action, datetime | None], return_reason: str
) -> tuple[Order, list[tuple[str, dict[str, Any]]]]:
    """An order's past life from its historical times (`times`: when each of pay, ship,
    deliver, return, cancel happened, None when it did not), through the same rules as live.
    Returns the final order and every event fact from its placing on."""
    facts = placed_facts(order)
    # Ties are broken by the lifecycle's own order.
    lifecycle = (Action.PAY, Action.SHIP, Action.DELIVER, Action.RETURN, Action.CANCEL)
    steps = [
        (t, rank, action) for rank, action in enumerate(lifecycle) if (t := times.get(action)) is not None
    ]
    for at, _, action in sorted(steps):
        if action is Action.PAY:
            change = pay(order, at, "import")
        elif action is Action.SHIP:
            change = ship(order, at, "import")
        elif action is Action.DELIVER:
            change = deliver(order, at, "import")
        elif action is Action.CANCEL:
            change = cancel(order, at, "historical cancellation", f"rf-{order.order_id}", "import")
        else:
            change = return_items(order, at, f"r-{order.order_id}", return_reason, None, "import")
            facts.extend(change.facts)
            order = change.order
            # A historical return was refunded when it came back.
            change = refund(order, at, f"rf-{order.order_id}", None, "import")
        facts.extend(change.facts)
        order = change.order
    return order, facts


def placed_facts(order: Order) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "crm.order.placed",
            {
                "items": [
                    {
                        "sku": i.sku,
                        "category": i.category,
                        "brand": i.brand,
                        "qty": i.qty,
                        "unit_price_cents": i.unit_price_cents,
                    }
                    for i in order.items
                ],
                "amount_cents": order.amount_cents,
                "discount_cents": order.discount_cents,
                "currency": order.currency,
                "channel": order.channel,
                "promised_delivery_date": order.promised_delivery_date,
                "placed_at": order.placed_at,
            },
        )
    ]


def net_sales(paid: int, returned: int, refunded: int, refunded_for_returns: int) -> int:
    return paid - returned - (refunded - refunded_for_returns)


@dataclass(frozen=True)
class SalesChange:
    """What one order's change adds to its month of payment's sales (kept pre-aggregated, so
    reading sales by month never reads every order)."""

    month: str  # YYYY-MM of the payment
    currency: str
    net_sales_cents: int
    orders: int


def sales_change(before: Order | None, after: Order) -> SalesChange | None:
    """The change to monthly sales when `before` (None: a new order) becomes `after`."""
    paid_at = after.times.get(Action.PAY.value)
    if after.paid_cents <= 0 or paid_at is None:
        return None
    was_paid = before is not None and before.paid_cents > 0 and Action.PAY.value in before.times
    cents = after.net_sales_cents - (before.net_sales_cents if was_paid else 0)
    orders = 0 if was_paid else 1
    if not cents and not orders:
        return None
    return SalesChange(paid_at.strftime("%Y-%m"), after.currency, cents, orders)


def sales_totals(changes: Iterable[SalesChange | None]) -> list[SalesChange]:
    """Changes summed by month and currency."""
    totals: dict[tuple[str, str], list[int]] = {}
    for change in changes:
        if change is not None:
            row = totals.setdefault((change.month, change.currency), [0, 0])
            row[0] += change.net_sales_cents
            row[1] += change.orders
    return [
        SalesChange(month, currency, cents, n) for (month, currency), (cents, n) in sorted(totals.items())
    ]


def monthly_sales(paid: Iterable[tuple[str, datetime, int]]) -> list[dict[str, Any]]:
    """(currency, paid at, net sales) of paid orders -> net sales by currency and month of
    payment, oldest first."""
    totals: dict[tuple[str, str], list[int]] = {}
    for currency, paid_at, cents in paid:
        row = totals.setdefault((paid_at.strftime("%Y-%m"), currency), [0, 0])
        row[0] += cents
        row[1] += 1
    return [
        {"month": month, "currency": currency, "net_sales_cents": cents, "orders": count}
        for (month, currency), (cents, count) in sorted(totals.items())
    ]
