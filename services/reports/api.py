"""HTTP entrypoints of the reports service: translate the request, call the service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import ORJSONResponse, Response

from services.common.auth import Principal, require
from services.common.fields import ShortText, Since, Until, only_params

from . import domain
from .models import Format, rendered
from .service import ReportsService

router = APIRouter(prefix="/reports", tags=["reports"])
Named = Annotated[
    str | None,
    Query(
        alias="period",
        description=f"a named period instead of from and to (answered when the reports were built): "
        f"{', '.join(domain.PERIODS)}",
    ),
]
PERIOD = ("from", "to", "period", "format")
Dimensions = Annotated[
    str | None, Query(description=f"one dimension or two joined by a comma: {', '.join(domain.DIMENSIONS)}")
]


def reports(request: Request) -> ReportsService:
    return request.app.state.reports


@router.get(
    "/composition",
    summary="Customers, buyers, net sales, average CLV and churn risk by one dimension or two crossed",
    dependencies=[Depends(only_params(*PERIOD, "by"))],
)
async def composition(
    by: Dimensions = None,
    since: Since = None,
    until: Until = None,
    named: Named = None,
    format: Format = "json",
    _: Principal = Depends(require("viewer")),
    service: ReportsService = Depends(reports),
) -> Response:
    body = service.composition(domain.period(since, until, named), domain.dimensions(by))
    return rendered("composition", body, format)


@router.get(
    "/contribution",
    summary="The Pareto curve, ABC thresholds, top customers by net spend and by CLV",
    dependencies=[Depends(only_params(*PERIOD, "top"))],
)
async def contribution(
    top: Annotated[int, Query(ge=1, le=500)] = domain.TOP_DEFAULT,
    since: Since = None,
    until: Until = None,
    named: Named = None,
    format: Format = "json",
    _: Principal = Depends(require("viewer")),
    service: ReportsService = Depends(reports),
) -> Response:
    return rendered("contribution", service.contribution(domain.period(since, until, named), top), format)


@router.get(
    "/products",
    summary="Net sales by category and by brand, optionally split by a customer dimension",
    dependencies=[Depends(only_params(*PERIOD, "by"))],
)
async def products(
    by: Annotated[str | None, Query(description="a customer dimension, e.g. segment or tier")] = None,
    since: Since = None,
    until: Until = None,
    named: Named = None,
    format: Format = "json",
    _: Principal = Depends(require("viewer")),
    service: ReportsService = Depends(reports),
) -> Response:
    split = domain.dimensions(by) if by else [None]
    if len(split) != 1:
        raise domain.ReportsError("products split by one dimension", field="by")
    return rendered("products", service.products(domain.period(since, until, named), split[0]), format)


@router.get(
    "/products/next",
    summary="What customers' next order held after an order in the given category",
    dependencies=[Depends(only_params(*PERIOD, "category"))],
)
async def next_categories(
    category: ShortText,
    since: Since = None,
    until: Until = None,
    named: Named = None,
    format: Format = "json",
    _: Principal = Depends(require("viewer")),
    service: ReportsService = Depends(reports),
) -> Response:
    return rendered(
        "next_categories", service.next_categories(domain.period(since, until, named), category), format
    )


@router.get(
    "/seasonality",
    summary="Seasonal index shop-wide and per category; forecast from trend and index, with its holdout error",
    dependencies=[Depends(only_params(*PERIOD, "horizon"))],
)
async def seasonality(
    horizon: Annotated[int, Query(ge=1, le=24)] = domain.HORIZON_DEFAULT,
    since: Since = None,
    until: Until = None,
    named: Named = None,
    format: Format = "json",
    _: Principal = Depends(require("viewer")),
    service: ReportsService = Depends(reports),
) -> Response:
    return rendered("seasonality", service.seasonality(domain.period(since, until, named), horizon), format)


# Reports asked for by period alone: (path, table, use case, summary).
PERIOD_ONLY = (
    ("/retention", "retention", ReportsService.retention,
     "Monthly acquisition cohorts: share buying and net sales per customer by months since the first purchase"),
    ("/rfm", "rfm", ReportsService.rfm, "Customers and net sales in the 5 x 5 recency x frequency grid"),
    ("/segment-moves", "movement", ReportsService.movement,
     "Customers by their segment on `from` and on `to`: who moved where"),
    ("/churn", "churn", ReportsService.churn,
     "Warnings opened and closed by reason and segment, value at risk and lost, outcomes by action"),
    ("/satisfaction", "satisfaction", ReportsService.satisfaction,
     "The five dimensions, CSAT and NPS by month and by complaint category"),
)  # fmt: skip


def _period_only(table: str, use_case: Callable[[ReportsService, domain.Period], dict[str, Any]]):
    async def endpoint(
        since: Since = None,
        until: Until = None,
        named: Named = None,
        format: Format = "json",
        _: Principal = Depends(require("viewer")),
        service: ReportsService = Depends(reports),
    ) -> Response:
        return rendered(table, use_case(service, domain.period(since, until, named)), format)

    return endpoint


for _path, _table, _use_case, _summary in PERIOD_ONLY:
    router.add_api_route(
        _path,
        _period_only(_table, _use_case),
        methods=["GET"],
        summary=_summary,
        dependencies=[Depends(only_params(*PERIOD))],
    )


@router.post(
    "/refresh",
    summary="Rebuild the reports now (they rebuild on their own every CRM_REPORTS_REFRESH_SECONDS)",
)
async def refresh(
    _: Principal = Depends(require("admin")),
    service: ReportsService = Depends(reports),
) -> ORJSONResponse:
    snapshot = await service.refresh()
    return ORJSONResponse(snapshot.freshness())
