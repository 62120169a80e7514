"""Order rules without I/O: totals, the state machine, returns and refunds, history."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest

from services.common.errors import Kind
from services.orders import domain
from services.orders.domain import Action, IllegalTransition, OrderError, Status
from services.orders.models import ImportLine
from services.orders.service import history

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def items(*specs):
    return [
        {"sku": f"S{k}", "category": "c", "brand": "b", "qty": q, "unit_price_cents": p}
        for k, (q, p) in enumerate(specs)
    ]


def order(*specs, discount=0, promised=None):
    return domain.new_order(
        order_id="o-1",
        customer_id="c-1",
        items=items(*specs or [(2, 1000)]),
        currency="CNY",
        channel="web",
        discount_cents=discount,
        placed_at=T0,
        promised_delivery_date=promised,
    )


def delivered(o, late_days=0):
    o = domain.pay(o, T0 + timedelta(hours=1)).order
    o = domain.ship(o, T0 + timedelta(hours=2)).order
    return domain.deliver(o, T0 + timedelta(days=1 + late_days)).order


def test_total_is_items_minus_discount_spread_exactly_over_lines():
    o = order((3, 333), (1, 1000), (7, 1), discount=101)
    assert o.gross_cents == 3 * 333 + 1000 + 7
    assert o.amount_cents == o.gross_cents - 101
    assert sum(i.net_cents for i in o.items) == o.amount_cents


def test_stated_amount_must_match_and_discount_cannot_exceed_items():
    with pytest.raises(OrderError, match="does not match"):
        domain.new_order(
            order_id="o",
            customer_id="c",
            items=items((1, 100)),
            currency="CNY",
            channel="web",
            discount_cents=0,
            placed_at=T0,
            promised_delivery_date=None,
            amount_cents=99,
        )
    with pytest.raises(OrderError, match="exceeds"):
        order((1, 100), discount=101)
    with pytest.raises(OrderError, match="sku"):
        domain.new_order(
            order_id="o",
            customer_id="c",
            items=items((1, 1)) * 2,
            currency="CNY",
            channel="web",
            discount_cents=0,
            placed_at=T0,
            promised_delivery_date=None,
        )


def test_allocate_adds_up_for_any_split():
    rng = random.Random(7)
    for _ in range(500):
        weights = [rng.randint(0, 10_000) for _ in range(rng.randint(1, 8))]
        total = rng.randint(0, 1_000_000)
        assert sum(domain.allocate(total, weights)) == total


def test_happy_path_and_its_facts():
    o = order(promised=date(2026, 11, 3))
    facts = []
    for step in (
        lambda x: domain.pay(x, T0 + timedelta(minutes=5)),
        lambda x: domain.ship(x, T0 + timedelta(hours=5), carrier="SF"),
        lambda x: domain.deliver(x, T0 + timedelta(days=1)),
    ):
        change = step(o)
        o = change.order
        facts += [t for t, _ in change.facts]
    assert o.status is Status.DELIVERED and o.late is False and o.paid_cents == 2000
    assert facts == ["crm.order.paid", "crm.order.shipped", "crm.order.delivered"]


def test_delivery_after_the_promised_date_is_late():
    o = order(promised=date(2026, 11, 1))
    assert delivered(o, late_days=3).late is True


@pytest.mark.parametrize(
    ("prepare", "action", "allowed"),
    [
        (lambda o: o, Action.SHIP, ["pay", "cancel"]),
        (lambda o: domain.pay(o, T0).order, Action.DELIVER, ["ship", "cancel"]),
        (lambda o: delivered(o), Action.CANCEL, ["return", "refund"]),
        (lambda o: domain.cancel(o, T0, "x", "rf").order, Action.PAY, []),
    ],
)
def test_illegal_transition_says_what_is_allowed(prepare, action, allowed):
    o = prepare(order())
    with pytest.raises(IllegalTransition) as caught:
        getattr(domain, {"return": "return_items"}.get(action.value, action.value))(
            o, T0 + timedelta(days=9), *(["reason", "rf"] if action is Action.CANCEL else [])
        )
    assert caught.value.kind == Kind.CONFLICT
    assert caught.value.extra["allowed"] == allowed


def test_cancelling_a_paid_order_refunds_it():
    o = domain.pay(order(), T0).order
    change = domain.cancel(o, T0 + timedelta(minutes=1), "changed mind", "rf-1")
    assert [t for t, _ in change.facts] == ["crm.order.cancelled", "crm.order.refunded"]
    assert change.facts[1][1]["amount_cents"] == 2000 and change.facts[1][1]["reason"] == "cancellation"
    assert change.order.refunded_cents == 2000


def test_cancelling_an_unpaid_order_refunds_nothing():
    change = domain.cancel(order(), T0, "x", "rf-1")
    assert [t for t, _ in change.facts] == ["crm.order.cancelled"]
    assert change.facts[0][1]["was_paid"] is False


def test_partial_returns_one_unit_at_a_time_add_up_to_what_was_paid():
    o = delivered(order((3, 333), (2, 1001), discount=17))
    total = 0
    at = T0 + timedelta(days=5)
    for sku, qty in (("S0", 1), ("S1", 1), ("S0", 1), ("S1", 1), ("S0", 1)):
        change = domain.return_items(o, at, "r", "why", [{"sku": sku, "qty": qty}])
        total += change.facts[0][1]["amount_cents"]
        o = change.order
    assert o.status is Status.RETURNED
    assert total == o.amount_cents == o.returned_cents


def test_returning_more_than_was_bought_or_an_unknown_sku_is_refused():
    o = delivered(order((1, 100)))
    with pytest.raises(OrderError, match="1 left"):
        domain.return_items(o, T0 + timedelta(days=3), "r", "x", [{"sku": "S0", "qty": 2}])
    with pytest.raises(OrderError, match="not in this order"):
        domain.return_items(o, T0 + timedelta(days=3), "r", "x", [{"sku": "NOPE", "qty": 1}])


def test_refund_after_return_then_goodwill_split_by_reason():
    o = delivered(order((2, 1000)))
    o = domain.return_items(o, T0 + timedelta(days=3), "r", "x", [{"sku": "S0", "qty": 1}]).order
    change = domain.refund(o, T0 + timedelta(days=4), "rf", 1500)
    reasons = [(d["reason"], d["amount_cents"]) for _, d in change.facts]
    assert reasons == [("return", 1000), ("goodwill", 500)]
    with pytest.raises(OrderError) as caught:
        domain.refund(change.order, T0 + timedelta(days=5), "rf2", 600)
    assert caught.value.kind == Kind.CONFLICT and caught.value.extra["refundable_cents"] == 500
    final = domain.refund(change.order, T0 + timedelta(days=5), "rf2", 500).order
    assert final.status is Status.REFUNDED


def test_a_change_cannot_be_dated_before_the_last_one():
    o = domain.pay(order(), T0 + timedelta(hours=2)).order
    with pytest.raises(OrderError, match="before"):
        domain.ship(o, T0 + timedelta(hours=1))


def test_history_line_replays_through_the_same_rules():
    line = ImportLine.model_validate(
        {
            "order_id": "h-1",
            "customer_id": "c-1",
            "items": items((2, 500)),
            "currency": "USD",
            "placed_at": "1997-01-01T12:00:00Z",
            "paid_at": "1997-01-01T12:00:00Z",
            "shipped_at": "1997-01-02T12:00:00Z",
            "delivered_at": "1997-01-04T12:00:00Z",
            "returned_at": "1997-01-10T12:00:00Z",
        }
    )
    o, facts = history(line)
    assert [t for t, _ in facts] == [
        "crm.order.placed",
        "crm.order.paid",
        "crm.order.shipped",
        "crm.order.delivered",
        "crm.order.returned",
        "crm.order.refunded",
    ]
    assert o.status is Status.REFUNDED and o.returned_cents == 1000


def test_history_line_with_impossible_order_of_events_is_refused():
    line = ImportLine.model_validate(
        {
            "order_id": "h-2",
            "customer_id": "c-1",
            "items": items((1, 500)),
            "currency": "USD",
            "placed_at": "1997-01-01T12:00:00Z",
            "shipped_at": "1997-01-02T12:00:00Z",
        }
    )
    with pytest.raises(IllegalTransition):
        history(line)


def test_a_stated_payment_must_be_the_order_amount():
    o = order((2, 1000))
    with pytest.raises(OrderError, match="does not match the order amount 2000") as caught:
        domain.pay(o, T0 + timedelta(hours=1), stated_amount_cents=1999)
    assert caught.value.kind == Kind.INVALID and caught.value.extra["field"] == "amount_cents"
    assert domain.pay(o, T0 + timedelta(hours=1), stated_amount_cents=2000).order.paid_cents == 2000


def test_history_rebuild_orders_same_moment_steps_by_the_lifecycle():
    # Paid, shipped and cancelled all at one moment: pay before ship, so the cancel comes
    # after shipping and is refused; paid and cancelled at one moment is a refunded cancel.
    same = T0 + timedelta(hours=1)
    with pytest.raises(IllegalTransition):
        domain.rebuild_history(
            order(), {Action.PAY: same, Action.SHIP: same, Action.CANCEL: same}, "historical return"
        )
    cancelled, facts = domain.rebuild_history(
        order(), {Action.CANCEL: same, Action.PAY: same, Action.SHIP: None}, "historical return"
    )
    assert cancelled.status is Status.CANCELLED and cancelled.refunded_cents == cancelled.amount_cents
    assert [t for t, _ in facts] == [
        "crm.order.placed",
        "crm.order.paid",
        "crm.order.cancelled",
        "crm.order.refunded",
    ]


def test_history_rebuild_of_a_return_refunds_it_with_the_stated_reason():
    times = {
        Action.PAY: T0 + timedelta(hours=1),
        Action.SHIP: T0 + timedelta(hours=2),
        Action.DELIVER: T0 + timedelta(days=1),
        Action.RETURN: T0 + timedelta(days=3),
    }
    o, facts = domain.rebuild_history(order((1, 700)), times, "too small")
    returned = dict(facts)["crm.order.returned"]
    refunded = dict(facts)["crm.order.refunded"]
    assert returned["reason"] == "too small" and returned["full"] is True
    assert refunded["reason"] == "return" and refunded["amount_cents"] == 700
    assert o.status is Status.REFUNDED and o.net_sales_cents == 0


def test_sales_change_counts_an_order_once_in_its_month_of_payment_and_follows_its_money():
    placed = order()
    assert domain.sales_change(None, placed) is None  # not paid: no sales
    paid = domain.pay(placed, T0 + timedelta(hours=1)).order
    first = domain.sales_change(placed, paid)
    assert first == domain.SalesChange("2026-11", paid.currency, 2000, 1)
    refunded = domain.cancel(paid, T0 + timedelta(days=40), "x", "rf-1").order
    later = domain.sales_change(paid, refunded)  # refunded in December: November's sales shrink
    assert later == domain.SalesChange("2026-11", paid.currency, -2000, 0)
    assert domain.sales_totals([first, later, None]) == [domain.SalesChange("2026-11", paid.currency, 0, 1)]
