"""The reports' API shapes: every report is JSON, or its main table as CSV (`format=csv`)."""

from __future__ import annotations

import csv
import io
from typing import Any, Literal

from fastapi.responses import ORJSONResponse, Response

from . import domain

Format = Literal["json", "csv"]


def rendered(report: str, body: dict[str, Any], format: Format) -> Response:
    if format == "json":
        return ORJSONResponse(body)
    columns, rows = domain.table(report, body)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{report}.csv"',
            "X-Report-As-Of": body["freshness"]["as_of"],
        },
    )
