"""Every route of every service and the least role it needs: the one declaration of who may
call what. The routers state their role with `auth.require(role)`; the tests check every
route against this table (tests/unit/test_routes.py reads the apps, and
tests/integration/test_access.py asks a running platform: no key 401, a lower role 403), so a
route the table does not name, or names with another role, fails them.

None: open without a key (health, readiness, metrics and the API documents)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI

# What the shared HTTP shell (services/common/http.py) and FastAPI serve on every service.
SHELL: dict[str, str | None] = {
    "GET /healthz": None,
    "GET /readyz": None,
    "GET /metrics": None,
    "GET /openapi.json": None,
    "GET /docs": None,
    "GET /docs/oauth2-redirect": None,
    "GET /redoc": None,
}

ROUTE_ROLES: dict[str, dict[str, str | None]] = {
    "orders": {
        **SHELL,
        "POST /orders": "agent",
        "POST /orders/{order_id}/pay": "agent",
        "POST /orders/{order_id}/ship": "agent",
        "POST /orders/{order_id}/deliver": "agent",
        "POST /orders/{order_id}/cancel": "agent",
        "POST /orders/{order_id}/return": "agent",
        "POST /orders/{order_id}/refund": "agent",
        "GET /orders/{order_id}": "viewer",
        "GET /orders": "viewer",
        "GET /sales/monthly": "viewer",
        "POST /orders/import": "admin",
    },
    "complaints": {
        **SHELL,
        "POST /complaints": "agent",
        "POST /complaints/{complaint_id}/assign": "agent",
        "POST /complaints/{complaint_id}/await-customer": "agent",
        "POST /complaints/{complaint_id}/resolve": "agent",
        "POST /complaints/{complaint_id}/close": "agent",
        "POST /complaints/{complaint_id}/reopen": "agent",
        "POST /complaints/{complaint_id}/escalate": "agent",
        "GET /complaints/stats": "viewer",
        "GET /complaints/{complaint_id}": "viewer",
        "GET /complaints": "viewer",
        "POST /cases": "agent",
        "POST /cases/{complaint_id}/assign": "agent",
        "POST /cases/{complaint_id}/await-customer": "agent",
        "POST /cases/{complaint_id}/resolve": "agent",
        "POST /cases/{complaint_id}/close": "agent",
        "POST /cases/{complaint_id}/reopen": "agent",
        "POST /cases/{complaint_id}/escalate": "agent",
        "POST /cases/{case_id}/decision": "agent",
        "POST /cases/{case_id}/remedy": "agent",
        "POST /cases/{case_id}/approve": "supervisor",
        "POST /cases/{case_id}/compensate": "agent",
        "POST /cases/{case_id}/confirm": "agent",
        "GET /cases/catalogue": "viewer",
        "GET /cases/{complaint_id}": "viewer",
        "GET /cases": "viewer",
        "POST /surveys": "agent",
        "GET /surveys/stats": "viewer",
        "GET /surveys": "viewer",
    },
    "loyalty": {
        **SHELL,
        "GET /tiers": "viewer",
        "GET /accounts/{customer_id}": "viewer",
        "GET /accounts/{customer_id}/ledger": "viewer",
        "POST /accounts/{customer_id}/redemptions": "agent",
        "POST /accounts/{customer_id}/adjustments": "admin",
    },
    "profiles": {
        **SHELL,
        "POST /customers": "agent",
        "PATCH /customers/{customer_id}": "agent",
        "PUT /customers/{customer_id}/consent": "agent",
        "GET /customers/{customer_id}/consent": "viewer",
        # format=csv, a bulk export of personal data, needs auth.BULK_EXPORT_ROLE
        "GET /customers": "viewer",
        "GET /customers/{customer_id}": "viewer",
        "GET /customers/{customer_id}/360": "viewer",
        "GET /customers/{customer_id}/export": "admin",
        "DELETE /customers/{customer_id}": "admin",
        "POST /interactions": "agent",
        "GET /segments": "viewer",
        "GET /analytics/seasonality": "viewer",
        "GET /churn-warnings": "viewer",
        "GET /churn-warnings/{warning_id}": "viewer",
        "POST /churn-warnings/{warning_id}/assign": "agent",
        "POST /churn-warnings/{warning_id}/actions": "agent",
        "POST /churn-warnings/{warning_id}/outcome": "agent",
    },
    "engagement": {
        **SHELL,
        "POST /campaigns": "agent",
        "GET /campaigns": "viewer",
        "GET /campaigns/{campaign_id}/report": "viewer",
        "GET /campaigns/{campaign_id}/messages": "agent",
        "POST /campaigns/{campaign_id}/preview": "agent",
        "POST /campaigns/{campaign_id}/pause": "agent",
        "POST /campaigns/{campaign_id}/resume": "agent",
        "POST /audiences": "agent",
        "GET /audiences/{audience_id}": "viewer",
        "GET /contacts/{customer_id}": "agent",
        "POST /churn-actions": "agent",
        "GET /coupons/{code}": "agent",
        "POST /coupons/{code}/reservations": "agent",
        "POST /coupons/{code}/release": "agent",
        "POST /notifications": "agent",
        "GET /mailbox": "viewer",
        # What customers reach from a message: signed links, no key (services/engagement/api.py).
        "GET /t/o/{message_id}.gif": None,
        "GET /t/c/{message_id}": None,
        "GET /unsubscribe": None,
        "POST /unsubscribe": None,
        # The SMS and push provider's delivery receipts: signed with the webhook's HMAC key.
        "POST /providers/{channel}/receipts": None,
    },
    "reports": {
        **SHELL,
        "GET /reports/composition": "viewer",
        "GET /reports/contribution": "viewer",
        "GET /reports/retention": "viewer",
        "GET /reports/rfm": "viewer",
        "GET /reports/segment-moves": "viewer",
        "GET /reports/churn": "viewer",
        "GET /reports/products": "viewer",
        "GET /reports/products/next": "viewer",
        "GET /reports/satisfaction": "viewer",
        "GET /reports/seasonality": "viewer",
        "POST /reports/refresh": "admin",
    },
    "staff": {
        **SHELL,
        "POST /users": "admin",
        "GET /users": "viewer",
        "GET /users/{user_id}": "viewer",
        "PATCH /users/{user_id}": "admin",
        "POST /teams": "admin",
        "GET /teams": "viewer",
        "GET /teams/{team_id}": "viewer",
        "PATCH /teams/{team_id}": "admin",
        "POST /users/{user_id}/keys": "admin",
        "GET /users/{user_id}/keys": "admin",
        "DELETE /keys/{key_id}": "admin",
        # Every service asks here about a key it does not know; only a key's holder knows its
        # hash (services/common/auth.py).
        "GET /auth/keys/{key_hash}": None,
    },
    "desk": {
        **SHELL,
        "POST /customers/{customer_id}/notes": "agent",
        "GET /customers/{customer_id}/notes": "viewer",
        "PATCH /notes/{note_id}": "agent",
        "POST /tasks": "agent",
        "GET /tasks": "viewer",
        "GET /tasks/{task_id}": "viewer",
        "POST /tasks/{task_id}/complete": "agent",
        "GET /customers/{customer_id}/timeline": "viewer",
        "GET /reports/service": "analyst",  # how each agent performs
    },
    # faust's web server: the scorer's views (services/scoring/api.py, which reads its roles
    # here) and the one built-in page left on, faust's status index.
    "scoring": {
        "GET /healthz": None,
        "GET /readyz": None,
        "GET /metrics": None,
        "GET /": None,
        "GET /population": "viewer",
        "POST /population/refresh": "admin",
    },
}


def web_routes_of(app: Any) -> list[str]:
    """ "METHOD /path" for every route a faust app's web server serves (the scorer): its views
    and the built-in blueprints left on."""
    from faust.web import View

    names = []
    for path, view in app.web.views.items():
        for method in ("get", "post", "put", "patch", "delete"):
            if getattr(type(view), method) is not getattr(View, method):
                names.append(f"{method.upper()} {path}")
    for prefix, _ in app.web.blueprints._enabled:  # faust's own pages: each a GET at its prefix
        names.append(f"GET {prefix}/")
    return names


def routes_of(app: FastAPI) -> Iterator[tuple[str, Any]]:
    """("METHOD /path", route) for every route a FastAPI app serves, through included routers."""

    def walk(routes: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for route in routes:
            if hasattr(route, "original_router"):  # an included router, resolved lazily by FastAPI
                yield from walk(route.original_router.routes, prefix + route.include_context.prefix)
                continue
            for method in sorted(getattr(route, "methods", None) or ()):
                if method != "HEAD":
                    yield f"{method} {prefix}{route.path}", route

    return walk(app.routes, "")


def required_role(route: Any) -> str | None:
    """The role a route's `auth.require` dependency asks for; None when it asks for none."""

    def find(dependant: Any) -> str | None:
        for dependency in getattr(dependant, "dependencies", ()):
            role = getattr(dependency.call, "required_role", None) or find(dependency)
            if role:
                return role
        return None

    return find(getattr(route, "dependant", None))
