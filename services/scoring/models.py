"""The answers of the scorer's HTTP views (api.py). Typed dicts rather than pydantic models:
the values go out as the population job computed them, without coercion."""

from __future__ import annotations

from typing import TypedDict

from .scores import Population


class PopulationAnswer(TypedDict):
    """GET /population: the parameters every score uses now."""

    fitted_at: str | None
    customers: int
    recency_bounds: tuple[float, ...]
    frequency_bounds: tuple[float, ...]
    monetary_bounds: tuple[float, ...]
    abc_a_min_cents: int
    abc_b_min_cents: int
    bgnbd: dict[str, float]
    gamma_gamma: dict[str, float]


class RefreshAnswer(TypedDict):
    """POST /population/refresh: the population fitted, and how many profiles were re-scored."""

    customers: int
    rescored: int
    fitted_at: str | None


def population_answer(p: Population) -> PopulationAnswer:
    return {
        "fitted_at": p.fitted_at.isoformat() if p.fitted_at else None,
        "customers": p.customers,
        "recency_bounds": p.recency_bounds,
        "frequency_bounds": p.frequency_bounds,
        "monetary_bounds": p.monetary_bounds,
        "abc_a_min_cents": p.abc_a_min_cents,
        "abc_b_min_cents": p.abc_b_min_cents,
        "bgnbd": vars(p.bgnbd),
        "gamma_gamma": vars(p.gamma_gamma),
    }


def refresh_answer(fitted: Population, rescored: int) -> RefreshAnswer:
    return {
        "customers": fitted.customers,
        "rescored": rescored,
        "fitted_at": fitted.fitted_at.isoformat() if fitted.fitted_at else None,
    }
