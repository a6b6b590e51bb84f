"""Gamma-Gamma model of spend per visit (Fader & Hardie, "The Gamma-Gamma Model of Monetary
Value", 2013): how much a customer's future visits are worth, shrunk toward the population.

Each customer's visits are worth Gamma(p, nu) on average, with nu ~ Gamma(q, gamma) across
customers. Per customer it needs `x` repeat visits and `zbar`, their mean value (the first
visit is left out, as in the reference). Assumes spend is independent of visit frequency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import gammaln

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class GammaGammaParams:
    p: float
    q: float
    gamma: float


@dataclass(frozen=True, slots=True)
class GammaGammaFit:
    params: GammaGammaParams
    log_likelihood: float
    customers: int
    converged: bool


def _repeat_customers(x: ArrayLike, zbar: ArrayLike) -> tuple[FloatArray, FloatArray]:
    xs, zs = np.asarray(x, dtype=np.float64), np.asarray(zbar, dtype=np.float64)
    keep = (xs > 0) & (zs > 0)
    return xs[keep], zs[keep]


def log_likelihood(params: GammaGammaParams, x: ArrayLike, zbar: ArrayLike) -> FloatArray:
    """Each repeat customer's log-likelihood of their mean visit value."""
    xs, zs = _repeat_customers(x, zbar)
    p, q, g = params.p, params.q, params.gamma
    result: FloatArray = (
        gammaln(p * xs + q)
        - gammaln(p * xs)
        - gammaln(q)
        + q * np.log(g)
        + (p * xs - 1) * np.log(zs)
        + p * xs * np.log(xs)
        - (p * xs + q) * np.log(g + xs * zs)
    )
    return result


def fit_gamma_gamma(x: ArrayLike, zbar: ArrayLike) -> GammaGammaFit:
    """Maximum-likelihood parameters from customers with repeat visits and positive spend."""
    xs, zs = _repeat_customers(x, zbar)
    if xs.size == 0:
        raise ValueError("no repeat customers with positive spend to fit")

    def negative_mean_ll(log_params: FloatArray) -> float:
        return -float(np.mean(log_likelihood(GammaGammaParams(*np.exp(log_params)), xs, zs)))

    result = minimize(
        negative_mean_ll,
        np.log([1.0, 1.0, float(np.mean(zs))]),
        method="Nelder-Mead",
        options={"xatol": 1e-7, "fatol": 1e-10, "maxiter": 20_000, "maxfev": 40_000},
    )
    return GammaGammaFit(
        params=GammaGammaParams(*(float(v) for v in np.exp(result.x))),
        log_likelihood=-float(result.fun) * xs.size,
        customers=int(xs.size),
        converged=bool(result.success),
    )


def expected_spend_per_visit(params: GammaGammaParams, x: ArrayLike, zbar: ArrayLike) -> FloatArray:
    """E[value of a future visit | x, zbar]; the population mean for customers with x = 0."""
    xs = np.asarray(x, dtype=np.float64)
    zs = np.where(xs > 0, np.asarray(zbar, dtype=np.float64), 0.0)
    p, q, g = params.p, params.q, params.gamma
    if q <= 1:
        raise ValueError("the mean spend is infinite when q <= 1")
    result: FloatArray = p * (g + xs * zs) / (p * xs + q - 1)
    return result
