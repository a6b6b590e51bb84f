"""BG/NBD ("buy till you die") for non-contractual customers: fit, then score.

Fader, Hardie & Lee (2005), "Counting your customers the easy way". Per customer the model
needs only `x` (repeat purchase days), `t_x` (time of the last purchase after the first) and
`T` (age: time from the first purchase to now), all in the same unit (days here, though any
unit works as long as it is used throughout).

Raw P(alive) is 1 for every customer with no repeat purchase, so the defection score is
`p_no_purchase_within(horizon)`: the probability that the customer makes no purchase in the
next `horizon`, which is high both for the ones who left and for the ones who are merely slow.

Written here with numpy/scipy rather than taken from `lifetimes` (archived, pinned to old
pandas) or `pymc-marketing` (pulls in PyMC and a compiler toolchain): the model is four
closed-form expressions and one small optimisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    """Purchase rate ~ Gamma(r, alpha); drop-out probability after each purchase ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class BgNbdFit:
    params: BgNbdParams
    log_likelihood: float
    customers: int
    converged: bool


def _arrays(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> tuple[FloatArray, ...]:
    xs, txs, Ts = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    if np.any(xs < 0) or np.any(txs < 0) or np.any(txs > Ts):
        raise ValueError("need x >= 0 and 0 <= t_x <= T")
    return xs, txs, Ts


def log_likelihood(params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
    """Each customer's log-likelihood (FHL 2005, equation 6)."""
    xs, txs, Ts = _arrays(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    common = gammaln(r + xs) - gammaln(r) + r * np.log(alpha)
    still_alive = betaln(a, b + xs) - betaln(a, b) - (r + xs) * np.log(alpha + Ts)
    repeat = xs > 0
    # Only customers with repeat purchases can have dropped out after the last one.
    dropped = np.full_like(xs, -np.inf)
    dropped[repeat] = (
        betaln(a + 1, b + xs[repeat] - 1)
        - betaln(a, b)
        - (r + xs[repeat]) * np.log(alpha + txs[repeat])
    )
    result: FloatArray = common + np.logaddexp(still_alive, dropped)
    return result


def fit_bg_nbd(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike, *, initial: BgNbdParams | None = None
) -> BgNbdFit:
    """Maximum-likelihood parameters for these customers (optimised on the log scale)."""
    xs, txs, Ts = _arrays(x, t_x, T)
    if xs.size == 0:
        raise ValueError("no customers to fit")
    start = initial or BgNbdParams(1.0, float(np.mean(Ts)) or 1.0, 1.0, 1.0)

    def negative_mean_ll(log_params: FloatArray) -> float:
        params = BgNbdParams(*np.exp(log_params))
        return -float(np.mean(log_likelihood(params, xs, txs, Ts)))

    result = minimize(
        negative_mean_ll,
        np.log([start.r, start.alpha, start.a, start.b]),
        method="Nelder-Mead",
        options={"xatol": 1e-7, "fatol": 1e-10, "maxiter": 20_000, "maxfev": 40_000},
    )
    params = BgNbdParams(*(float(v) for v in np.exp(result.x)))
    return BgNbdFit(
        params=params,
        log_likelihood=-float(result.fun) * xs.size,
        customers=int(xs.size),
        converged=bool(result.success),
    )


def p_alive(params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
    """Probability that the customer has not dropped out by T (FHL 2005, equation 13)."""
    xs, txs, Ts = _arrays(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    odds_dead = np.zeros_like(xs)
    repeat = xs > 0
    odds_dead[repeat] = (a / (b + xs[repeat] - 1)) * np.exp(
        (r + xs[repeat]) * (np.log(alpha + Ts[repeat]) - np.log(alpha + txs[repeat]))
    )
    result: FloatArray = 1.0 / (1.0 + odds_dead)
    return result


def p_no_purchase_within(
    params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, horizon: float
) -> FloatArray:
    """Probability of no purchase in (T, T + horizon]: the defection score.

    A customer alive at T with rate lambda makes no purchase in the horizon with probability
    exp(-lambda * horizon); BG/NBD drop-out happens only right after a purchase, so none can
    happen in a horizon without purchases. Given alive, lambda ~ Gamma(r + x, alpha + T).
    """
    xs, txs, Ts = _arrays(x, t_x, T)
    if horizon <= 0:
        raise ValueError("horizon must be positive")
    quiet_if_alive = np.exp(
        (params.r + xs) * (np.log(params.alpha + Ts) - np.log(params.alpha + Ts + horizon))
    )
    result: FloatArray = 1.0 - p_alive(params, xs, txs, Ts) * (1.0 - quiet_if_alive)
    return result


def expected_purchases(
    params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, horizon: float
) -> FloatArray:
    """Expected number of purchases in (T, T + horizon] (FHL 2005, equation 10)."""
    xs, txs, Ts = _arrays(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = horizon / (alpha + Ts + horizon)
    ratio = np.exp((r + xs) * (np.log(alpha + Ts) - np.log(alpha + Ts + horizon)))
    head = (a + b + xs - 1) / (a - 1)
    result: FloatArray = (
        head
        * (1 - ratio * hyp2f1(r + xs, b + xs, a + b + xs - 1, z))
        * p_alive(params, xs, txs, Ts)
    )
    return result
