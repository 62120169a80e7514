"""The console's pure rules: who may do what, locale formats, chart geometry, SLA countdowns,
and that every text the pages use has its Chinese."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.console import domain, messages
from services.console.models import ComplaintMoveForm, RedeemForm, SearchForm, field_errors
from services.scoring.reasons import reason

TEMPLATES = Path(__file__).resolve().parents[2] / "services" / "console" / "templates"


def test_a_viewer_reads_an_agent_acts_and_only_an_admin_exports():
    assert domain.may("viewer", "view") and not domain.may("viewer", "open_complaint")
    assert domain.may("agent", "act_on_warning") and domain.may("agent", "move_complaint")
    assert not domain.may("agent", "export_csv") and domain.may("admin", "export_csv")
    assert not domain.may("admin", "no such permission") and not domain.may("intruder", "view")
    assert domain.allowed("viewer") == {"view"}


def test_the_language_is_the_persons_choice_then_the_browsers():
    assert domain.language_of("zh-CN") == "zh-CN"
    assert domain.language_of(None, "zh-TW,zh;q=0.9,en;q=0.5") == "zh-CN"
    assert domain.language_of("fr", "de-DE,en-GB;q=0.8") == "en"
    assert domain.language_of(None, None) == "en"


def test_money_in_minor_units_numbers_and_dates_follow_the_locale():
    en, zh = domain.Formats("en", "Asia/Shanghai"), domain.Formats("zh-CN", "Asia/Shanghai")
    assert en.money(1234567) == "CN¥12,345.67"
    assert zh.money(1234567) == "¥12,345.67"
    assert en.money(500, "JPY") == "¥500"  # no minor unit: 500 yen, not 5
    assert en.money(None) == "–"
    assert en.number(1234567) == "1,234,567" and en.number(0.5, 2) == "0.50"
    assert en.percent(0.256) == "25.6%"
    moment = "2026-11-22T16:30:00Z"  # 00:30 the next day in Shanghai
    assert en.date(moment) == "Nov 23, 2026"
    assert zh.date(moment) == "2026年11月23日"
    assert "00:30" in zh.datetime(moment)
    assert en.month_name_of("03") == "Mar" and zh.month_name_of(3) == "3月"


def test_a_churn_reason_reads_as_the_scorers_sentence_in_the_pages_language():
    overdue = reason(
        "overdue", 74, 42.0, "days since last purchase", days_since_last_purchase=74, usual_gap_days=21
    )
    en, zh = domain.Formats("en"), domain.Formats("zh-CN")
    assert en.reason(overdue) == "last bought 74 days ago; usually buys every 21 days"
    assert zh.reason(overdue) == "上次购买在 74 天前；通常每 21 天购买一次"
    # a warning kept from before the scorer wrote sentences still says which rule fired
    assert zh.reason({"code": "overdue", "value": 74}) == "overdue"


def test_an_sla_countdown_runs_turns_due_soon_then_breached_and_stops_when_paused_or_done():
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert domain.countdown("2026-11-22T15:00:00Z", now) == domain.Countdown(
        "running", 3 * 3600, "2026-11-22T15:00:00Z"
    )
    assert domain.countdown("2026-11-22T12:30:00Z", now).state == "due_soon"
    late = domain.countdown("2026-11-22T11:00:00Z", now)
    assert (late.state, late.seconds) == ("breached", -3600)
    assert domain.countdown("2026-11-22T11:00:00Z", now, paused=True).state == "paused"
    assert domain.countdown("2026-11-22T11:00:00Z", now, active=False).state == "done"
    assert domain.countdown(None, now).state == "done"
    assert [domain.span(s) for s in (59, 3 * 3600 + 5 * 60, 2 * 86400 + 3600, -90)] == [
        "0m 59s",
        "3h 05m",
        "2d 01h",
        "-1m 30s",
    ]


def test_bars_fill_the_chart_with_the_largest_value_at_the_top():
    drawn = domain.bars([("a", 10), ("b", 5), ("c", 0)], width=300, height=100)
    assert [b.height for b in drawn] == [100, 50, 0]
    assert [b.y for b in drawn] == [0, 50, 100]
    assert drawn[0].x == pytest.approx(10) and drawn[1].x == pytest.approx(110)
    assert domain.bars([], 10, 10) == []
    rows = domain.horizontal_bars([("x", 4), ("y", 2)], width=200, row=20)
    assert [r.width for r in rows] == [200, 100] and rows[1].y > rows[0].y


def test_the_pareto_curve_accumulates_customer_and_revenue_shares_from_the_origin():
    points = domain.pareto([("A", 0.2, 0.7), ("B", 0.3, 0.2), ("C", 0.5, 0.1)])
    assert points == [("", 0.0, 0.0), ("A", 0.2, 0.7), ("B", 0.5, 0.9), ("C", 1.0, 1.0)]
    assert domain.polyline([(0, 0), (1, 1)], 100, 50, (0, 1), (0, 1)) == "0.0,50.0 100.0,0.0"


def test_the_rfm_grid_names_each_cell_by_its_segment_rule():
    rules = ((1, 2, 1, 2, "Hibernating"), (5, 5, 4, 5, "Champions"))
    cells = {(c.r, c.f): c.segment for c in domain.rfm_cells(rules)}
    assert len(cells) == 25
    assert cells[(1, 1)] == cells[(2, 2)] == "Hibernating"
    assert cells[(5, 5)] == "Champions" and cells[(3, 3)] == ""
    assert domain.shade(0, 10) == 0.12 and domain.shade(10, 10) == 0.9


def test_axis_ticks_are_round_and_reach_the_top():
    assert domain.ticks(100) == [0, 25, 50, 75, 100]
    assert domain.ticks(0) == [0.0]


def test_bad_input_is_named_by_field():
    with pytest.raises(ValidationError) as caught:
        RedeemForm.model_validate({"points": "lots", "reason": ""})
    assert field_errors(caught.value) == {"points": "enter a number", "reason": "required"}
    with pytest.raises(ValidationError) as caught:
        SearchForm.model_validate({"min_risk": "2"})
    assert field_errors(caught.value) == {"min_risk": "out of range"}
    assert SearchForm.model_validate({"segment": "", "sort": "risk"}).params() == {"sort": "risk"}


def test_a_complaint_move_sends_what_its_transition_asks_for():
    assert ComplaintMoveForm(action="assign", text="ann").body() == {"assignee": "ann"}
    assert ComplaintMoveForm(action="resolve", text="refunded").body() == {"resolution": "refunded"}
    assert ComplaintMoveForm(action="close").body() is None
    assert ComplaintMoveForm(action="escalate").body() == {}
    assert ComplaintMoveForm(action="assign").needs_text


def test_every_text_the_pages_use_has_its_chinese():
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*"([^"]+)"\s*[,)]""", template.read_text()))
        used |= set(re.findall(r"""\bt\(\s*'([^']+)'\s*[,)]""", template.read_text()))
    missing = sorted(text for text in used if text not in messages.ZH_CN)
    assert not missing, missing
    zh = messages.translator("zh-CN")
    assert zh("{n} open", n=3) == "3 件处理中"
    assert messages.translator("en")("role_agent") == "agent"
