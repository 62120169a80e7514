"""The console's rules, pure: which role may see and do what, how numbers, money and times are
shown in the person's language, the geometry of the server-drawn charts, SLA countdowns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal, format_percent, get_currency_precision

from services.common.auth import ROLES

# --- who may do what ---------------------------------------------------------------------------
# Roles are the API keys' roles: a viewer (marketing, managers reading) sees everything the pages
# show; an agent (service agents, complaint handlers) also acts; an admin (managers) also exports
# personal data in bulk. The services check the same key again on every call.
PERMISSIONS: dict[str, str] = {
    "view": "viewer",
    "export_csv": "admin",
    "open_complaint": "agent",
    "record_interaction": "agent",
    "redeem_points": "agent",
    "act_on_warning": "agent",
    "assign_warning": "agent",
    "close_warning": "agent",
    "move_complaint": "agent",
    # the staff directory: anyone signed in sees the teams; an admin sees and issues keys
    "manage_staff": "admin",
}


def may(role: str, permission: str) -> bool:
    """Whether `role` holds at least the role `permission` needs; unknown names are refused."""
    needed = PERMISSIONS.get(permission)
    if needed is None or role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)


def allowed(role: str) -> frozenset[str]:
    return frozenset(p for p in PERMISSIONS if may(role, p))


# --- languages and formats ---------------------------------------------------------------------

LANGUAGES = {"en": "English", "zh-CN": "中文"}
DEFAULT_LANGUAGE = "en"


def language_of(choice: str | None, accept_language: str | None = None) -> str:
    """The person's explicit choice, else the first supported language the browser asks for."""
    if choice in LANGUAGES:
        return choice
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LANGUAGE


@dataclass(frozen=True)
class Formats:
    """Numbers, money, dates and times for one language, in one time zone (Babel's CLDR data)."""

    language: str
    timezone: str = "UTC"
    currency: str = "CNY"  # the shop's currency: profiles hold amounts in its minor units

    @property
    def locale(self) -> Locale:
        return Locale.parse(self.language.replace("-", "_"))

    def number(self, value: float | int | None, digits: int = 0) -> str:
        if value is None:
            return "–"
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, format=pattern, locale=self.locale)

    def percent(self, share: float | None, digits: int = 1) -> str:
        if share is None:
            return "–"
        return format_percent(
            share, format="#,##0" + ("." + "0" * digits if digits else "") + "%", locale=self.locale
        )

    def money(self, minor_units: int | None, currency: str | None = None) -> str:
        """Minor units (cents, fen) as the currency, e.g. 12900 CNY -> CN¥129.00 / ¥129.00."""
        if minor_units is None:
            return "–"
        currency = currency or self.currency
        precision = get_currency_precision(currency)
        amount = Decimal(int(minor_units)).scaleb(-precision)
        return format_currency(amount, currency, locale=self.locale)

    def _moment(self, value: str | datetime | None) -> datetime | None:
        if value is None or value == "":
            return None
        moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
        return moment.astimezone(ZoneInfo(self.timezone))

    def datetime(self, value: str | datetime | None) -> str:
        moment = self._moment(value)
        return "–" if moment is None else format_datetime(moment, "short", locale=self.locale)

    def date(self, value: str | datetime | None) -> str:
        moment = self._moment(value)
        return "–" if moment is None else format_date(moment, "medium", locale=self.locale)

    def month_name_of(self, month: str | int) -> str:
        """ "03" or 3 -> Mar / 3月."""
        return self.locale.months["format"]["abbreviated"][int(month)]

    def two_digits(self, value: float | None) -> str:
        return self.number(value, 2)

    def reason(self, reason: dict[str, Any]) -> str:
        """A churn reason as the scorer wrote it for people, in this language; its code for a
        reason kept from before the scorer wrote sentences."""
        sentence = reason.get("text_zh" if self.language == "zh-CN" else "text_en")
        return sentence or str(reason.get("code", "–"))


# --- SLA countdowns ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Countdown:
    state: str  # running | due_soon | breached | paused | done
    seconds: int  # left (negative once overdue)
    due: str | None


DUE_SOON_SECONDS = 3600


def countdown(due: str | None, now: datetime, *, paused: bool = False, active: bool = True) -> Countdown:
    """Time left until an SLA deadline. Paused clocks (awaiting the customer) do not run; the
    deadline is the service's own, counted in its business calendar."""
    if not active or due is None:
        return Countdown("done", 0, due)
    left = math.floor((datetime.fromisoformat(due.replace("Z", "+00:00")) - now).total_seconds())
    if paused:
        return Countdown("paused", left, due)
    if left < 0:
        return Countdown("breached", left, due)
    return Countdown("due_soon" if left <= DUE_SOON_SECONDS else "running", left, due)


def span(seconds: int) -> str:
    """A short duration that reads the same in both languages: 2d 03h, 4h 05m, 12m 09s."""
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours:02d}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    return f"{sign}{minutes}m {secs:02d}s"


# --- chart geometry (inline SVG drawn on the server) -------------------------------------------


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    x: float
    y: float
    width: float
    height: float


def bars(values: Sequence[tuple[str, float]], width: float, height: float, gap: float = 0.2) -> list[Bar]:
    """Vertical bars filling width x height; the tallest value reaches the top, zero the base."""
    if not values:
        return []
    top = max((v for _, v in values), default=0) or 1
    slot = width / len(values)
    bar_width = slot * (1 - gap)
    out = []
    for index, (label, value) in enumerate(values):
        h = max(0.0, value) / top * height
        out.append(Bar(label, value, index * slot + (slot - bar_width) / 2, height - h, bar_width, h))
    return out


def horizontal_bars(
    values: Sequence[tuple[str, float]], width: float, row: float, gap: float = 0.25
) -> list[Bar]:
    """Horizontal bars, one row each, the longest reaching `width` (a funnel, a ranking)."""
    top = max((v for _, v in values), default=0) or 1
    thickness = row * (1 - gap)
    return [
        Bar(label, value, 0.0, index * row + (row - thickness) / 2, max(0.0, value) / top * width, thickness)
        for index, (label, value) in enumerate(values)
    ]


def polyline(
    points: Sequence[tuple[float, float]],
    width: float,
    height: float,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
) -> str:
    """SVG polyline points for data points in the given ranges (y grows upwards in the data)."""
    (x0, x1), (y0, y1) = x_range, y_range
    dx, dy = (x1 - x0) or 1, (y1 - y0) or 1
    return " ".join(f"{(x - x0) / dx * width:.1f},{height - (y - y0) / dy * height:.1f}" for x, y in points)


def pareto(groups: Sequence[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """(class, customer share, revenue share) best first -> cumulative points from (0, 0), for the
    ABC Pareto curve: the share of customers that bring each share of revenue."""
    points = [("", 0.0, 0.0)]
    customers = revenue = 0.0
    for label, customer_share, revenue_share in groups:
        customers += customer_share
        revenue += revenue_share
        points.append((label, round(min(customers, 1.0), 4), round(min(revenue, 1.0), 4)))
    return points


@dataclass(frozen=True)
class Cell:
    r: int
    f: int
    segment: str


def rfm_cells(rules: Sequence[tuple[int, int, int, int, str]]) -> list[Cell]:
    """The 5 x 5 recency-by-frequency grid, each cell named by the first segment rule it meets."""
    cells = []
    for f in range(5, 0, -1):
        for r in range(1, 6):
            name = next((n for r0, r1, f0, f1, n in rules if r0 <= r <= r1 and f0 <= f <= f1), "")
            cells.append(Cell(r, f, name))
    return cells


def shade(value: float, top: float) -> float:
    """Fill opacity 0.12 to 0.9 for a heat-map cell (zero stays faint but visible)."""
    if top <= 0:
        return 0.12
    return round(0.12 + 0.78 * max(0.0, min(1.0, value / top)), 3)


def ticks(top: float, count: int = 4) -> list[float]:
    """Round axis ticks from 0 to at least `top`."""
    if top <= 0:
        return [0.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [round(step * i, 10) for i in range(count + 1) if step * i <= top * 1.0001 or i <= 1]


def value_at_risk(warnings: Sequence[dict[str, Any]]) -> int:
    return sum(int(w.get("value_at_risk_cents") or 0) for w in warnings if w.get("open"))


@dataclass(frozen=True)
class Session:
    """A signed-in person: who they are to the other services (their key and role) and the
    page's CSRF token; services/console/store.py keeps it."""

    session_id: str = field(repr=False)
    api_key: str = field(repr=False)  # never in a log line or a traceback's locals
    role: str
    label: str
    csrf: str = field(repr=False)
    language: str
    expires_at: datetime

    @property
    def authorization(self) -> str:
        return f"Bearer {self.api_key}"
