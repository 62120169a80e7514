"""Customer-base models, fitted by maximum likelihood: BG/NBD (Fader, Hardie & Lee 2005) for
the purchase and dropout process, Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV") for
spend per purchase. Pure numpy/scipy; vectorised over customers.

Inputs per customer, in one time unit (the scorer uses weeks): x repeat purchases, t_x the
time of the last purchase since the first, T the time since the first purchase; m the mean
value of the repeat purchases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1

ArrayLike = np.ndarray | float


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float

    def p_alive(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> np.ndarray:
        """P(still active at T). 1 for customers with no repeat purchase: under BG/NBD they can
        only drop out right after a purchase."""
        x, t_x, T = np.asarray(x, float), np.asarray(t_x, float), np.asarray(T, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (self.a / (self.b + x - 1)) * ((self.alpha + T) / (self.alpha + t_x)) ** (self.r + x)
        return np.where(x > 0, 1.0 / (1.0 + np.where(x > 0, ratio, 0.0)), 1.0)

    def expected_purchases(self, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> np.ndarray:
        """E[purchases in (T, T + t]] given the customer's history."""
        x, t_x, T = np.asarray(x, float), np.asarray(t_x, float), np.asarray(T, float)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        head = (a + b + x - 1) / (a - 1)
        z = t / (alpha + T + t)
        body = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z)
        with np.errstate(divide="ignore", invalid="ignore"):
            tail = np.where(x > 0, (a / (b + x - 1)) * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0)
        return head * body / (1 + tail)

    def p_no_purchase(self, t: float, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> np.ndarray:
        """P(no purchase in (T, T + t]): gone already, or alive and silent. Given alive, the
        purchase rate's posterior is Gamma(r + x, alpha + T), and a silent customer cannot
        drop out (dropout follows purchases), so P(silent | alive) is a Gamma-Poisson zero."""
        x, T = np.asarray(x, float), np.asarray(T, float)
        alive = self.p_alive(x, t_x, T)
        silent = ((self.alpha + T) / (self.alpha + T + t)) ** (self.r + x)
        return 1 - alive + alive * silent

    def log_likelihood(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        return _bgnbd_ll(np.array([self.r, self.alpha, self.a, self.b]), x, t_x, T)


def _bgnbd_ll(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    r, alpha, a, b = params
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x), -np.inf
        )
    return a1 + a2 + np.logaddexp(a3, a4)


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, start: BgNbd | None = None) -> BgNbd:
    """Maximum likelihood over log-parameters (keeps them positive), from a previous fit when
    given so a periodic refit converges in a few steps."""
    x, t_x, T = np.asarray(x, float), np.asarray(t_x, float), np.asarray(T, float)
    if len(x) == 0:
        raise ValueError("no customers to fit")
    initial = (
        np.log([start.r, start.alpha, start.a, start.b])
        if start
        else np.log([0.5, max(T.mean(), 1.0), 1.0, 1.0])
    )

    def negative(log_params: np.ndarray) -> float:
        value = -_bgnbd_ll(np.exp(log_params), x, t_x, T).sum()
        return float(value) if np.isfinite(value) else 1e300

    found = minimize(
        negative,
        initial,
        method="Nelder-Mead",
        options={"xatol": 1e-7, "fatol": 1e-7, "maxiter": 20_000, "maxfev": 40_000},
    )
    found = minimize(negative, found.x, method="L-BFGS-B")  # polish
    return BgNbd(*_fitted(found.x, negative))


def _fitted(log_params: np.ndarray, negative: Any) -> list[float]:
    """The parameters found, or ValueError when the search ended nowhere: a likelihood that
    was never finite (every step scored 1e300) or parameters that over- or underflowed (a
    degenerate population, e.g. every customer alike, drives them to 0 or infinity)."""
    params = np.exp(log_params)
    if not (np.all(np.isfinite(params)) and np.all(params > 0) and negative(log_params) < 1e300):
        raise ValueError(f"the fit did not converge (parameters {params.tolist()})")
    return [float(v) for v in params]


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    v: float

    def expected_spend(self, x: ArrayLike, m: ArrayLike) -> np.ndarray:
        """E[spend per purchase] given x purchases averaging m: a weighted mean of the
        population mean and the customer's own."""
        x, m = np.asarray(x, float), np.asarray(m, float)
        population = np.float64(self.p * self.v) / (self.q - 1)  # inf, not an exception, at q = 1
        weight = self.p * x / (self.p * x + self.q - 1)
        return (1 - weight) * population + weight * np.where(x > 0, m, 0.0)


def _gg_ll(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    p, q, v = params
    px = p * x
    return (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + v)
    )


def fit_gamma_gamma(x: np.ndarray, m: np.ndarray, start: GammaGamma | None = None) -> GammaGamma:
    """Fitted on customers with at least one repeat purchase and a positive mean spend."""
    x, m = np.asarray(x, float), np.asarray(m, float)
    keep = (x > 0) & (m > 0)
    x, m = x[keep], m[keep]
    if len(x) < 2:
        raise ValueError("too few repeat buyers to fit spend")
    initial = np.log([start.p, start.q, start.v]) if start else np.log([1.0, 1.0, max(m.mean(), 1.0)])

    def negative(log_params: np.ndarray) -> float:
        value = -_gg_ll(np.exp(log_params), x, m).sum()
        return float(value) if np.isfinite(value) else 1e300

    found = minimize(
        negative,
        initial,
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20_000, "maxfev": 40_000},
    )
    found = minimize(negative, found.x, method="L-BFGS-B")
    fitted = GammaGamma(*_fitted(found.x, negative))
    if not fitted.q > 1:  # the population's mean spend p v / (q - 1) is then not finite
        raise ValueError(f"spend fit without a finite mean (q {fitted.q:.3g})")
    return fitted


def clv(
    bg: BgNbd,
    gg: GammaGamma,
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    m: ArrayLike,
    *,
    months: int = 12,
    weeks_per_month: float = 365.25 / 12 / 7,
    monthly_discount: float = 0.01,
) -> np.ndarray:
    """Discounted value of the next `months`: expected purchases in each month times the
    expected spend per purchase (time unit: weeks)."""
    spend = gg.expected_spend(x, m)
    month = np.arange(1, months + 1)[:, None]  # one row per month: all months in one evaluation
    upto = bg.expected_purchases(month * weeks_per_month, x, t_x, T)
    in_month = np.diff(upto, axis=0, prepend=0.0)
    return (in_month * spend / (1 + monthly_discount) ** month).sum(axis=0)
