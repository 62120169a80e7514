"""The churn reasons as people read them: every reason code's sentence in English and Chinese,
in one place, filled from the numbers the reason carries. Pure."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# code -> (English, Chinese); the placeholders are the names in the reason's `numbers`.
SENTENCES: dict[str, tuple[str, str]] = {
    "model_no_purchase_90d": (
        "the purchase model gives a {percent}% chance of no purchase in the next 90 days",
        "购买模型预测未来 90 天内不再购买的概率为 {percent}%",
    ),
    "overdue": (
        "last bought {days_since_last_purchase} days ago; usually buys every {usual_gap_days} days",
        "上次购买在 {days_since_last_purchase} 天前；通常每 {usual_gap_days} 天购买一次",
    ),
    "no_second_purchase": (
        "bought once, {days_since_last_purchase} days ago; repeat buyers here usually come back "
        "within {usual_gap_days} days",
        "仅购买过一次，在 {days_since_last_purchase} 天前；本店回头客通常在 {usual_gap_days} 天内再次购买",
    ),
    "falling_frequency": (
        "bought on {recent_days} of the last 180 days, against {earlier_days} of the 180 days before",
        "最近 180 天内有 {recent_days} 天购买，之前 180 天为 {earlier_days} 天",
    ),
    "open_complaint": (
        "{open_complaints} complaint(s) still unresolved",
        "有 {open_complaints} 个投诉尚未解决",
    ),
    "sla_breached": (
        "{breached_complaints} complaint(s) in the last 90 days missed their deadline",
        "最近 90 天内有 {breached_complaints} 个投诉超出处理时限",
    ),
    "low_csat": (
        "average satisfaction {csat_average} out of 5 (2.5 or lower is low)",
        "平均满意度 {csat_average} 分（满分 5 分，2.5 分及以下为低）",
    ),
    "detractor": (
        "last answered {recommend} out of 10 to 'would you recommend us' (6 or lower is a detractor)",
        "最近一次推荐意愿评分为 {recommend} 分（满分 10 分，6 分及以下为贬损者）",
    ),
    "late_delivery": (
        "{late_deliveries} late deliveries in the last 90 days",
        "最近 90 天内有 {late_deliveries} 次延迟送达",
    ),
    "high_returns": (
        "returned {percent}% of what they bought (30% or more is high)",
        "退货金额占购买金额的 {percent}%（30% 及以上为高）",
    ),
}


def _shown(number: Any) -> Any:
    """As a person says it: whole from 10 on ("every 38 days", not 37.8), else to one decimal
    without a trailing .0 ("every 2.5 days", "every 3 days")."""
    if isinstance(number, float):
        if abs(number) >= 10 or abs(number - round(number)) < 0.05:
            return int(round(number))
        return round(number, 1)
    return number


@lru_cache(maxsize=16_384)
def sentences(code: str, numbers: tuple[tuple[str, Any], ...]) -> tuple[str, str]:
    """(English, Chinese) for a reason's numbers. Kept: every buyer of every batch has a reason,
    and their numbers repeat (a percent, days to a tenth, a shop-wide gap)."""
    en, zh = SENTENCES[code]
    shown = {name: _shown(n) for name, n in numbers}
    return en.format(**shown), zh.format(**shown)


def reason(code: str, value: Any, threshold: float | None, detail: str, **numbers: Any) -> dict[str, Any]:
    """One reason: its code, the number that triggered it against its threshold, every number
    behind it, and the sentence an agent reads out, in English and Chinese."""
    en, zh = sentences(code, tuple(numbers.items()))
    return {
        "code": code,
        "value": value,
        "threshold": threshold,
        "detail": detail,
        "numbers": numbers,
        "text_en": en,
        "text_zh": zh,
    }
