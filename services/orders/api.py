"""HTTP entrypoints of the orders service: translate requests to use cases, nothing more."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import ORJSONResponse

from services.common.auth import Principal, require
from services.common.endpoints import (
    IdempotencyHeader,
    answer,
    body_schema,
    idempotency,
    optional_body,
    optional_key,
    required_key,
)
from services.common.fields import CustomerId, EntityId, Limit, Since, Until, only_params
from services.common.problems import Problem

from .domain import Action, OrderFilters, Status
from .models import At, CancelIn, OrderIn, PayIn, RefundIn, ReturnIn, ShipIn
from .service import OrderService

router = APIRouter(tags=["orders"])
# Transitions that move money (a cancel of a paid order refunds it): the Idempotency-Key is
# required there, so a client's retry cannot pay, return or refund twice.
MONEY_ACTIONS = frozenset({Action.PAY, Action.CANCEL, Action.RETURN, Action.REFUND})
NDJSON_TYPES = {"application/x-ndjson", "application/jsonl"}


def orders(request: Request) -> OrderService:
    return request.app.state.orders


@router.post("/orders", status_code=201, summary="Place an order")
async def place_order(
    body: OrderIn,
    request: Request,
    key: IdempotencyHeader = None,
    principal: Principal = Depends(require("agent")),
    service: OrderService = Depends(orders),
) -> ORJSONResponse:
    idem = idempotency(key, principal, "POST /orders", body)
    # The caller's key goes on to engagement when the order carries a coupon.
    return answer(await service.place(body, principal.label, idem, request.headers.get("authorization")))


def _transition(action: Action, model: type[At]):
    async def endpoint(
        order_id: EntityId,
        request: Request,
        key: str | None = Depends(required_key if action in MONEY_ACTIONS else optional_key),
        principal: Principal = Depends(require("agent")),
        service: OrderService = Depends(orders),
    ) -> ORJSONResponse:
        body = await optional_body(request, model)
        idem = idempotency(key, principal, f"POST /orders/{order_id}/{action.value}", body)
        return answer(await service.act(order_id, action, body, principal.label, idem))

    endpoint.__name__ = f"{action.value}_order"
    return endpoint


for _action, _model, _summary in (
    (Action.PAY, PayIn, "Payment captured"),
    (Action.SHIP, ShipIn, "Order left the warehouse"),
    (Action.DELIVER, At, "Order delivered (late when after the promised date)"),
    (Action.CANCEL, CancelIn, "Cancel before shipping; a paid order is refunded"),
    (Action.RETURN, ReturnIn, "Goods came back, whole order or by item"),
    (Action.REFUND, RefundIn, "Money back: for returns, or a goodwill amount"),
):
    router.add_api_route(
        f"/orders/{{order_id}}/{_action.value}",
        _transition(_action, _model),
        methods=["POST"],
        summary=_summary,
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": body_schema(_model)}},
            }
        },
    )


@router.get("/orders/{order_id}", summary="One order")
async def get_order(
    order_id: EntityId, _: Principal = Depends(require("viewer")), service: OrderService = Depends(orders)
) -> dict[str, Any]:
    return await service.order(order_id)


@router.get(
    "/orders",
    summary="Orders, newest first",
    dependencies=[Depends(only_params("customer_id", "status", "from", "to", "limit", "cursor"))],
)
async def list_orders(
    customer_id: CustomerId | None = None,
    status: Status | None = None,
    placed_from: Since = None,
    placed_to: Until = None,
    limit: Limit = 50,
    cursor: str | None = None,
    _: Principal = Depends(require("viewer")),
    service: OrderService = Depends(orders),
) -> dict[str, Any]:
    filters = OrderFilters(customer_id, status, placed_from, placed_to)
    return await service.orders(filters, limit, cursor)


@router.get(
    "/sales/monthly",
    summary="Net sales by month of payment and currency (for seasonality)",
    dependencies=[Depends(only_params("from", "to"))],
)
async def monthly_sales(
    paid_from: Since = None,
    paid_to: Until = None,
    _: Principal = Depends(require("viewer")),
    service: OrderService = Depends(orders),
) -> dict[str, Any]:
    return await service.monthly_sales(paid_from, paid_to)


@router.post(
    "/orders/import",
    summary="Load historical orders (NDJSON, one order a line)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-ndjson": {
                    "schema": {"type": "string", "description": "one ImportLine JSON object per line"}
                }
            },
        }
    },
)
async def import_orders(
    request: Request, _: Principal = Depends(require("admin")), service: OrderService = Depends(orders)
) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        raise Problem(400, "empty import: send one JSON order per line")
    return await service.import_ndjson(raw)
