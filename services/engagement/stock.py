"""The campaigns engagement ships with, in Chinese and English: the two the churn-warning
workflow's actions send (`coupon`, `email`; created at start, enrolled only by an agent's
action) and the birthday greeting, win-back and points reminder the demo switches on. Plain data."""

from __future__ import annotations

from typing import Any

_STYLE = (
    "font-family:-apple-system,'PingFang SC','Microsoft YaHei','Noto Sans CJK SC',sans-serif;"
    "max-width:560px;margin:0 auto;padding:24px;color:#222"
)
_FOOT = (
    '{% if unsubscribe_url %}<p style="font-size:12px;color:#888;margin-top:32px">{foot} '
    '<a href="{{ unsubscribe_url }}" style="color:#888">{link}</a></p>{% endif %}'
)


def _html(body: str, foot: str, link: str) -> str:
    return f'<div style="{_STYLE}">{body}{_FOOT.replace("{foot}", foot).replace("{link}", link)}</div>'


_OFFER_EN = (
    '<p style="font-size:18px;border:2px dashed #c33;padding:12px;text-align:center">'
    "<b>{{ offer.code }}</b><br>{% if offer.kind == 'amount' %}¥{{ offer.value // 100 }} off"
    "{% else %}{{ offer.value }}% off{% endif %}{% if offer.min_spend_cents %} orders from "
    "¥{{ offer.min_spend_cents // 100 }}{% endif %}, until {{ offer.expires_at[:10] }}</p>"
)
_OFFER_ZH = (
    '<p style="font-size:18px;border:2px dashed #c33;padding:12px;text-align:center">'
    "<b>{{ offer.code }}</b><br>{% if offer.kind == 'amount' %}立减{{ offer.value // 100 }}元"
    "{% else %}{{ 100 - offer.value }}折优惠{% endif %}{% if offer.min_spend_cents %}，满"
    "{{ offer.min_spend_cents // 100 }}元可用{% endif %}，{{ offer.expires_at[:10] }}前有效</p>"
)
_FOOT_EN = ("You get this because you agreed to hear from us.", "Unsubscribe")
_FOOT_ZH = ("您收到此邮件，是因为您同意接收我们的消息。", "退订")

BIRTHDAY = {
    "en": {
        "subject": "Happy birthday, {{ customer.name or 'friend' }}!",
        "text": "Dear {{ customer.name or 'friend' }},\n\nAll of us at the shop wish you a very happy "
        "birthday.\n{% if unsubscribe_url %}\nUnsubscribe: {{ unsubscribe_url }}{% endif %}\n",
        "html": _html(
            "<h1 style=\"color:#c33\">Happy birthday, {{ customer.name or 'friend' }}!</h1>"
            "<p>All of us at the shop wish you a wonderful day and a happy year ahead.</p>",
            *_FOOT_EN,
        ),
    },
    "zh-CN": {
        "subject": "{{ customer.name or '亲爱的顾客' }}，生日快乐！",
        "text": "{{ customer.name or '亲爱的顾客' }}：\n\n全店同仁祝您生日快乐，万事如意！\n"
        "{% if unsubscribe_url %}\n退订：{{ unsubscribe_url }}{% endif %}\n",
        "html": _html(
            "<h1 style=\"color:#c33\">{{ customer.name or '亲爱的顾客' }}，生日快乐！</h1>"
            "<p>全店同仁祝您生日快乐，新的一岁万事如意。</p>",
            *_FOOT_ZH,
        ),
    },
}

WIN_BACK = {
    "en": {
        "subject": "We miss you, {{ customer.name or 'friend' }}: a coupon for your next order",
        "text": "Dear {{ customer.name or 'friend' }},\n\nit has been a while. Here is a coupon for your "
        "next order: {{ offer.code }} (until {{ offer.expires_at[:10] }}).\n"
        "{% if unsubscribe_url %}\nUnsubscribe: {{ unsubscribe_url }}{% endif %}\n",
        "html": _html(
            "<h1>We miss you, {{ customer.name or 'friend' }}</h1><p>It has been a while. "
            "Here is a coupon for your next order:</p>" + _OFFER_EN,
            *_FOOT_EN,
        ),
    },
    "zh-CN": {
        "subject": "{{ customer.name or '亲爱的顾客' }}，好久不见：送您一张优惠券",
        "text": "{{ customer.name or '亲爱的顾客' }}：\n\n好久不见！送您一张下单可用的优惠券："
        "{{ offer.code }}（{{ offer.expires_at[:10] }}前有效）。\n"
        "{% if unsubscribe_url %}\n退订：{{ unsubscribe_url }}{% endif %}\n",
        "html": _html(
            "<h1>{{ customer.name or '亲爱的顾客' }}，好久不见</h1><p>送您一张下单可用的优惠券：</p>"
            + _OFFER_ZH,
            *_FOOT_ZH,
        ),
    },
}

CHECK_IN = {
    "en": {
        "subject": "How are we doing, {{ customer.name or 'friend' }}?",
        "text": "Dear {{ customer.name or 'friend' }},\n\nwe would love to hear how we can serve you "
        "better. Just reply to this message.\n{% if unsubscribe_url %}\nUnsubscribe: {{ unsubscribe_url }}{% endif %}\n",
        "html": _html(
            "<h1>How are we doing?</h1><p>Dear {{ customer.name or 'friend' }}, we would love to hear "
            "how we can serve you better. Just reply to this message.</p>",
            *_FOOT_EN,
        ),
    },
    "zh-CN": {
        "subject": "{{ customer.name or '亲爱的顾客' }}，我们做得怎么样？",
        "text": "{{ customer.name or '亲爱的顾客' }}：\n\n我们很想知道怎样能更好地为您服务，"
        "直接回复此邮件即可。\n{% if unsubscribe_url %}\n退订：{{ unsubscribe_url }}{% endif %}\n",
        "html": _html(
            "<h1>我们做得怎么样？</h1><p>{{ customer.name or '亲爱的顾客' }}，我们很想知道怎样能更好地为您服务，"
            "直接回复此邮件即可。</p>",
            *_FOOT_ZH,
        ),
    },
}

POINTS_EXPIRING = {
    "en": {
        "subject": "{{ signal.points }} of your points expire on {{ signal.expires_at[:10] }}",
        "text": "Dear {{ customer.name or 'friend' }},\n\n{{ signal.points }} of your {{ signal.balance }} "
        "points expire on {{ signal.expires_at[:10] }}. Spend them on your next order before then.\n"
        "{% if unsubscribe_url %}\nUnsubscribe: {{ unsubscribe_url }}{% endif %}\n",
        "html": _html(
            "<h1>Your points expire soon</h1><p>Dear {{ customer.name or 'friend' }}, "
            "<b>{{ signal.points }}</b> of your {{ signal.balance }} points expire on "
            "<b>{{ signal.expires_at[:10] }}</b>. Spend them on your next order before then.</p>",
            *_FOOT_EN,
        ),
    },
    "zh-CN": {
        "subject": "您有{{ signal.points }}积分将于{{ signal.expires_at[:10] }}到期",
        "text": "{{ customer.name or '亲爱的顾客' }}：\n\n您的{{ signal.balance }}积分中有{{ signal.points }}"
        "积分将于{{ signal.expires_at[:10] }}到期，请在到期前下单使用。\n"
        "{% if unsubscribe_url %}\n退订：{{ unsubscribe_url }}{% endif %}\n",
        "html": _html(
            "<h1>您的积分即将到期</h1><p>{{ customer.name or '亲爱的顾客' }}，您的{{ signal.balance }}积分中有"
            "<b>{{ signal.points }}</b>积分将于<b>{{ signal.expires_at[:10] }}</b>到期，请在到期前下单使用。</p>",
            *_FOOT_ZH,
        ),
    },
}

WIN_BACK_OFFER = {"kind": "amount", "value": 2000, "min_spend_cents": 10000, "valid_days": 14}
# What the churn-warning workflow's actions send (profiles asks engagement; see service.churn_action).
CHURN_ACTION_CAMPAIGNS: dict[str, dict[str, Any]] = {
    "coupon": {
        "campaign_id": "cmp-churn-coupon",
        "name": "Churn warning: coupon (agent's action)",
        "kind": "triggered",
        "trigger": None,
        "templates": WIN_BACK,
        "offer": WIN_BACK_OFFER,
        "control_share": 0.0,  # an agent chose this customer: nobody is held out
    },
    "email": {
        "campaign_id": "cmp-churn-email",
        "name": "Churn warning: check-in email (agent's action)",
        "kind": "triggered",
        "trigger": None,
        "templates": CHECK_IN,
        "offer": None,
        "control_share": 0.0,
    },
}
# What the demo switches on: every birthday greeted, every churn warning won back (10 % held
# out), every lot of points announced before it expires.
DEMO_CAMPAIGNS = (
    {
        "campaign_id": "cmp-birthday",
        "name": "Birthday greeting",
        "trigger": "care_due",
        "templates": BIRTHDAY,
    },
    {
        "campaign_id": "cmp-winback",
        "name": "Win-back on churn warnings",
        "trigger": "churn_warning",
        "templates": WIN_BACK,
        "offer": WIN_BACK_OFFER,
        "control_share": 0.1,
    },
    {
        "campaign_id": "cmp-points-expiring",
        "name": "Points about to expire",
        "trigger": "points_expiring",
        "templates": POINTS_EXPIRING,
        "control_share": 0.1,
    },
)
