"""BG/NBD and Gamma-Gamma fitted on the CDNOW calibration summaries shipped in the lifetimes
wheel reproduce the published parameters; the derived quantities behave as the model says."""

from __future__ import annotations

import csv
from importlib import metadata

import numpy as np
import pytest

from services.scoring.model import BgNbd, GammaGamma, clv, fit_bgnbd, fit_gamma_gamma


def dataset(name: str) -> dict[str, np.ndarray]:
    path = next(f for f in metadata.files("lifetimes") if f.name == name).locate()
    rows = list(csv.DictReader(open(path)))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0] if k != "ID"}


@pytest.fixture(scope="module")
def bg() -> BgNbd:
    d = dataset("cdnow_customers_summary.csv")
    assert len(d["frequency"]) == 2357
    return fit_bgnbd(d["frequency"], d["recency"], d["T"])


def test_bgnbd_reproduces_the_published_cdnow_parameters(bg):
    assert bg.r == pytest.approx(0.243, rel=0.01)
    assert bg.alpha == pytest.approx(4.414, rel=0.01)
    assert bg.a == pytest.approx(0.793, rel=0.01)
    assert bg.b == pytest.approx(2.426, rel=0.01)
    d = dataset("cdnow_customers_summary.csv")
    assert -bg.log_likelihood(d["frequency"], d["recency"], d["T"]).sum() == pytest.approx(9582.4, abs=0.1)


def test_gamma_gamma_reproduces_the_published_cdnow_parameters():
    d = dataset("cdnow_customers_summary_with_transactions.csv")
    gg = fit_gamma_gamma(d["x"], d["zbar"])
    assert gg.p == pytest.approx(6.25, rel=0.01)
    assert gg.q == pytest.approx(3.74, rel=0.01)
    assert gg.v == pytest.approx(15.45, rel=0.01)


def test_a_refit_from_the_previous_parameters_lands_on_the_same_answer(bg):
    d = dataset("cdnow_customers_summary.csv")
    again = fit_bgnbd(d["frequency"], d["recency"], d["T"], start=bg)
    assert again.r == pytest.approx(bg.r, rel=1e-3) and again.b == pytest.approx(bg.b, rel=1e-3)


def test_p_alive_is_one_without_repeat_purchases_and_falls_with_silence(bg):
    assert bg.p_alive(0, 0, 30) == 1.0
    recent, silent = bg.p_alive([5, 5], [30, 5], [31, 31])
    assert 0 < silent < recent <= 1


def test_expected_purchases_grow_with_the_horizon_and_with_frequency(bg):
    short, long = bg.expected_purchases(4, 3, 20, 30), bg.expected_purchases(52, 3, 20, 30)
    assert 0 < short < long
    assert bg.expected_purchases(52, 10, 29, 30) > bg.expected_purchases(52, 1, 29, 30)


def test_no_purchase_probability_complements_buying(bg):
    p = bg.p_no_purchase(13, [0, 8, 8], [0, 29, 2], [30, 30, 30])
    assert np.all((p > 0) & (p < 1))
    assert p[1] < p[2]  # the recently active frequent buyer is likelier to buy
    assert bg.p_no_purchase(0, 3, 20, 30) == pytest.approx(1.0)


def test_expected_spend_shrinks_toward_the_population_mean():
    gg = GammaGamma(6.25, 3.74, 15.45)
    population = gg.p * gg.v / (gg.q - 1)
    one, many = gg.expected_spend([1, 50], [100.0, 100.0])
    assert population < one < many < 100.0
    assert gg.expected_spend(0, 0) == pytest.approx(population)


def test_clv_is_discounted_expected_purchases_times_spend(bg):
    gg = GammaGamma(6.25, 3.74, 15.45)
    undiscounted = clv(bg, gg, 4, 25, 30, 40.0, monthly_discount=0.0)
    expected = bg.expected_purchases(12 * 365.25 / 12 / 7, 4, 25, 30) * gg.expected_spend(4, 40.0)
    assert undiscounted == pytest.approx(expected)
    assert clv(bg, gg, 4, 25, 30, 40.0) < undiscounted


def test_crm_model_fit_cdnow_prints_the_published_parameters(capsys):
    import orjson

    from services.stack.cli import main

    assert main(["model", "fit", "--cdnow"]) == 0
    fitted = orjson.loads(capsys.readouterr().out)
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "p": 6.25, "q": 3.74, "v": 15.45}
    for name, value in published.items():
        assert fitted[name] == pytest.approx(value, rel=0.01), name


# Degenerate populations: a fit either lands on finite parameters or is refused (ValueError),
# never NaN or infinity that would reach a profile.
DEGENERATE = {
    "all customers identical": (np.full(60, 3.0), np.full(60, 12.0), np.full(60, 20.0)),
    "a single customer": (np.array([2.0]), np.array([5.0]), np.array([10.0])),
    "all one-time buyers": (np.zeros(60), np.zeros(60), np.linspace(1, 30, 60)),
}


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_a_purchase_fit_on_a_degenerate_population_is_finite_or_refused(name):
    x, t_x, T = DEGENERATE[name]
    try:
        fitted = fit_bgnbd(x, t_x, T)
    except ValueError:
        return
    assert all(np.isfinite(v) and v > 0 for v in (fitted.r, fitted.alpha, fitted.a, fitted.b))


def test_a_spend_fit_without_spread_is_finite_or_refused():
    x, m = np.full(60, 3.0), np.full(60, 5_000.0)  # everyone spends exactly the same
    try:
        gg = fit_gamma_gamma(x, m)
    except ValueError:
        return
    assert gg.q > 1 and np.isfinite([gg.p, gg.q, gg.v]).all()
    assert np.isfinite(gg.expected_spend(x, m)).all()
