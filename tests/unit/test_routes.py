"""The route table (services/common/routes.py) is the one list of who may call what: every
route every app serves is in it, with the role its router asks for."""

from __future__ import annotations

import importlib

import pytest

from services.common.routes import ROUTE_ROLES, required_role, routes_of
from services.common.settings import Settings


@pytest.mark.parametrize("service", sorted(ROUTE_ROLES.keys() - {"scoring"}))
def test_every_route_is_in_the_table_with_the_role_its_router_asks_for(service):
    app = importlib.import_module(f"services.{service}.main").create_app(Settings())
    served = {name: required_role(route) for name, route in routes_of(app)}
    assert served == ROUTE_ROLES[service]
