"""What the reports service consumes: registrations and their changes (crm.customers.v1),
orders with their lines, returns and refunds (crm.orders.v1), complaints' categories and
surveys (crm.complaints.v1), and segment moves (crm.signals.v1). It publishes nothing.
Erasure is followed by services/common/erasure.py. Scores the events do not carry (CLV, churn
risk, ABC class, RFM, tier) and the churn worklist's outcomes come from the profiles API
(service.py `pull`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.common.clock import parse_rfc3339
from services.common.handlers import Handlers

if TYPE_CHECKING:
    from .service import ReportsService

GROUP = "crm-reports"
CONSUMED: Handlers[ReportsService] = Handlers()


@CONSUMED.on("crm.customer.registered")
async def customer_registered(reports: ReportsService, event: dict[str, Any]) -> None:
    d = event["data"]
    await reports.store.customer(
        d["customer_id"], {**d, "registered_at": int(parse_rfc3339(d["registered_at"]).timestamp())}
    )


@CONSUMED.on("crm.customer.updated")
async def customer_updated(reports: ReportsService, event: dict[str, Any]) -> None:
    d = event["data"]
    await reports.store.customer(d["customer_id"], d["changes"])


@CONSUMED.on("crm.customer.consent_changed")
async def consent_changed(reports: ReportsService, event: dict[str, Any]) -> None:
    d = event["data"]
    await reports.store.customer(d["customer_id"], {"marketing_consent": d["marketing_consent"]})


@CONSUMED.on("crm.order.placed")
async def order_placed(reports: ReportsService, event: dict[str, Any]) -> None:
    d = event["data"]
    await reports.store.order_placed(d["order_id"], d["customer_id"], d["items"])


@CONSUMED.on("crm.order.paid")
async def order_paid(reports: ReportsService, event: dict[str, Any]) -> None:
    d = event["data"]
    await reports.store.order_paid(
        d["order_id"], d["customer_id"], d["amount_cents"], parse_rfc3339(event["time"])
    )


@CONSUMED.on("crm.order.returned")
async def order_returned(reports: ReportsService, event: dict[str, Any]) -> None:
    d = event["data"]
    items = [(i["sku"], i["amount_cents"]) for i in d["items"]]
    await reports.store.adjustment(
        d["return_id"], d["order_id"], "return", d["amount_cents"], d["reason"], items
    )


@CONSUMED.on("crm.order.refunded")
async def order_refunded(reports: ReportsService, event: dict[str, Any]) -> None:
    d = event["data"]
    await reports.store.adjustment(
        d["refund_id"], d["order_id"], "refund", d["amount_cents"], d["reason"], []
    )


@CONSUMED.on("crm.complaint.opened")
async def complaint_opened(reports: ReportsService, event: dict[str, Any]) -> None:
    d = event["data"]
    await reports.store.complaint(d["complaint_id"], d["customer_id"], d["category"])


@CONSUMED.on("crm.survey.submitted")
async def survey_submitted(reports: ReportsService, event: dict[str, Any]) -> None:
    d = event["data"]
    await reports.store.survey({**d, "submitted_at": parse_rfc3339(d["submitted_at"])})


@CONSUMED.on("crm.profile.segment_changed")
async def segment_changed(reports: ReportsService, event: dict[str, Any]) -> None:
    d = event["data"]
    await reports.store.segment_move(
        event["id"], d["customer_id"], parse_rfc3339(d["changed_at"]), d["from_segment"], d["to_segment"]
    )
