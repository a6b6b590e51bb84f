"""Pareto/NBD ("buy till you die") for non-contractual customers: fit, then score.

The model is Schmittlein, Morrison & Colombo (1987), "Counting your customers: who are they
and what will they do next?". While alive, a customer buys as a Poisson process with rate
lambda ~ Gamma(r, alpha); their lifetime is exponential with rate mu ~ Gamma(s, beta), so
unlike BG/NBD a customer can drop out at any moment, including before a first repeat
purchase. Per customer it needs the same summary as `btyd`: `x` repeat purchases, `t_x` the
time of the last one after the first purchase, `T` the age, all in one unit.

The likelihood, P(alive), and the expected purchases follow Fader & Hardie (2005), "A note
on deriving the Pareto/NBD model and related expressions", in the form
with Gauss hypergeometric functions split into the cases alpha >= beta and alpha < beta so
that their argument stays in [0, 1). Every hypergeometric term here is one integral,

    integral over (t1, t2] of (alpha + tau) ** -p * (beta + tau) ** -q  d tau,

worked out in `_log_integral` and kept on the log scale, with the difference of its two
ends taken by `expm1`.

The probability of no purchase in (T, T + h] is derived here (it is not in the note). Given
alive at T, lambda ~ Gamma(r + x, alpha + T) and mu ~ Gamma(s, beta + T) independently, and
the rest of the lifetime is again exponential with rate mu. A living customer makes a
purchase in the window when the first purchase after T comes before both death and T + h:

    P(purchase | alive, lambda, mu) = lambda / (lambda + mu) * (1 - exp(-(lambda + mu) h))
                                    = integral over (0, h] of lambda exp(-(lambda + mu) u) du.

Averaged over the two Gammas, E[lambda exp(-lambda u)] = (r + x) (alpha + T) ** (r + x) /
(alpha + T + u) ** (r + x + 1) and E[exp(-mu u)] = ((beta + T) / (beta + T + u)) ** s, which
leaves one more integral of the same kind (p = r + x + 1, q = s, over (T, T + h]). So

    P(no purchase in (T, T + h]) = 1 - P(alive) * P(purchase in the window | alive).

A customer who is alive can still die in the window before buying: that is why this is not
(1 - P(alive)) + P(alive) * E[exp(-lambda h)], the BG/NBD form. The same probability is also
the ratio of the likelihoods of (x, t_x, T + h) and (x, t_x, T), which the tests check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from scipy.special import expit, exprel, gammaln, hyp2f1

from app.scoring.btyd import FloatArray, _arrays

# The hypergeometric terms are accurate (checked against quadrature) while alpha and beta are
# within a factor of about 10^6 of each other; far beyond, 1 - z in 2F1(...; z) falls below
# double precision. Fits stay inside that range: outside it the data are degenerate anyway
# (say, no one has bought twice yet) and the likelihood only creeps towards a boundary.
_MAX_LOG_RATIO = float(np.log(1e6))
# Every parameter stays within [e^-7, e^16] (about 1e-3 to 9e6). Data with almost no
# drop-out push s to 0 and beta to infinity along a flat valley where each evaluation of
# the hypergeometric terms is 20 to 60 times slower: unbounded, a fit of 2,000 synthetic
# customers ran for 19 minutes. At the box's edge the fit stops instead.
_LOG_BOUNDS = (-7.0, 16.0)
# Nelder-Mead on the log scale: 1e-6 is a relative precision of a millionth on every
# parameter, far below what a population of customers determines.
_NELDER_MEAD = {"xatol": 1e-6, "fatol": 1e-10, "maxiter": 10_000, "maxfev": 10_000}


@dataclass(frozen=True, slots=True)
class ParetoNbdParams:
    """Purchase rate ~ Gamma(r, alpha); drop-out rate ~ Gamma(s, beta) (shape, rate)."""

    r: float
    alpha: float
    s: float
    beta: float


@dataclass(frozen=True, slots=True)
class ParetoNbdFit:
    params: ParetoNbdParams
    log_likelihood: float
    customers: int
    converged: bool


def _log_tail(
    p: FloatArray, q: float | FloatArray, alpha: float, beta: float, t: FloatArray
) -> FloatArray:
    """log of the integral over (t, inf) of (alpha + tau) ** -p * (beta + tau) ** -q.

    With c = p + q - 1 > 0 and alpha >= beta, write beta + tau = (alpha + tau) (1 - z w) with
    w = 1 / (alpha + tau) and z = alpha - beta; substituting w gives
    (alpha + t) ** -c / c * 2F1(c, q; c + 1; (alpha - beta) / (alpha + t)), the note's form.

    For alpha < beta the note swaps the roles: (beta + t) ** -c / c * 2F1(c, p; c + 1; z) with
    z = (beta - alpha) / (beta + t). That 2F1 grows like ((beta + t) / (alpha + t)) ** p and
    overflows for frequent buyers (p = r + x in the hundreds), so it is taken through Euler's
    transformation 2F1(a, b; c; z) = (1 - z) ** (c - a - b) 2F1(c - a, c - b; c; z) instead:
    (alpha + t) ** (1 - p) * (beta + t) ** -q / c * 2F1(1, q; c + 1; z), whose series has
    positive terms bounded by z ** n. Either way the argument is in [0, 1).
    """
    c = p + q - 1
    if alpha >= beta:
        hyp = hyp2f1(c, q, c + 1, (alpha - beta) / (alpha + t))
        powers = -c * np.log(alpha + t)
    else:
        hyp = hyp2f1(1.0, q, c + 1, (beta - alpha) / (beta + t))
        powers = (1 - p) * np.log(alpha + t) - q * np.log(beta + t)
    result: FloatArray = np.log(hyp) + powers - np.log(c)
    return result


def _log_integral(
    p: FloatArray, q: float | FloatArray, alpha: float, beta: float, t1: FloatArray, t2: FloatArray
) -> FloatArray:
    """log of the integral over (t1, t2] of (alpha + tau) ** -p * (beta + tau) ** -q.

    The tail from t2 is subtracted from the tail from t1 on the log scale; an empty interval
    gives -inf.
    """
    upper, lower = _log_tail(p, q, alpha, beta, t1), _log_tail(p, q, alpha, beta, t2)
    with np.errstate(divide="ignore"):
        result: FloatArray = upper + np.log(-np.expm1(np.minimum(lower - upper, 0.0)))
    return result


def _log_terms(
    params: ParetoNbdParams, xs: FloatArray, txs: FloatArray, Ts: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """The likelihood's two terms, less their common factor: alive at T, or died in (t_x, T].

    alive: (alpha + T) ** -(r + x) * (beta + T) ** -s
    died:  s * integral over (t_x, T] of (alpha + tau) ** -(r + x) * (beta + tau) ** -(s + 1)
    """
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    alive = -(r + xs) * np.log(alpha + Ts) - s * np.log(beta + Ts)
    died = np.log(s) + _log_integral(r + xs, s + 1, alpha, beta, txs, Ts)
    return alive, died


def log_likelihood(
    params: ParetoNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> FloatArray:
    """Each customer's log-likelihood."""
    xs, txs, Ts = _arrays(x, t_x, T)
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    common = gammaln(r + xs) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    alive, died = _log_terms(params, xs, txs, Ts)
    result: FloatArray = common + np.logaddexp(alive, died)
    return result


class _OutOfTime(Exception):
    pass


def fit_pareto_nbd(
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    *,
    initial: ParetoNbdParams | None = None,
    budget_seconds: float = 60.0,
) -> ParetoNbdFit:
    """Maximum-likelihood parameters for these customers (optimised on the log scale).

    A fit that has not converged within `budget_seconds` returns the best point found so
    far, marked not converged: on degenerate data the likelihood is flat and slow to
    evaluate, and a background refit must not hold a core for many minutes.
    """
    xs, txs, Ts = _arrays(x, t_x, T)
    if xs.size == 0:
        raise ValueError("no customers to fit")
    scale = float(np.mean(Ts)) or 1.0
    start = initial or ParetoNbdParams(1.0, scale, 1.0, scale)
    deadline = time.monotonic() + budget_seconds
    best: list[tuple[float, FloatArray]] = []

    def negative_mean_ll(log_params: FloatArray) -> float:
        if time.monotonic() > deadline:
            raise _OutOfTime
        if abs(log_params[1] - log_params[3]) > _MAX_LOG_RATIO:
            return np.inf
        if np.any(log_params < _LOG_BOUNDS[0]) or np.any(log_params > _LOG_BOUNDS[1]):
            return np.inf
        params = ParetoNbdParams(*(float(v) for v in np.exp(log_params)))
        # Far from the optimum the terms can overflow; such points just score as infinite.
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            value = -float(np.mean(log_likelihood(params, xs, txs, Ts)))
        if not np.isfinite(value):
            return np.inf
        if not best or value < best[0][0]:
            best[:] = [(value, np.array(log_params))]
        return value

    start_point = np.log([start.r, start.alpha, start.s, start.beta])
    try:
        result = minimize(negative_mean_ll, start_point, method="Nelder-Mead", options=_NELDER_MEAD)
        value, point, converged = float(result.fun), result.x, bool(result.success)
    except _OutOfTime:
        value, point = best[0] if best else (np.inf, start_point)
        converged = False
    params = ParetoNbdParams(*(float(v) for v in np.exp(point)))
    return ParetoNbdFit(
        params=params,
        log_likelihood=-value * xs.size,
        customers=int(xs.size),
        converged=converged,
    )


def p_alive(params: ParetoNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
    """Probability that the customer is still alive at T (Fader & Hardie 2005 note)."""
    xs, txs, Ts = _arrays(x, t_x, T)
    alive, died = _log_terms(params, xs, txs, Ts)
    result: FloatArray = expit(alive - died)
    return result


def expected_purchases(
    params: ParetoNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, horizon: float
) -> FloatArray:
    """Expected number of purchases in (T, T + horizon] (Fader & Hardie 2005 note).

    P(alive) * E[lambda] * E[(1 - exp(-mu h)) / mu] over the posterior given alive, that is
    P(alive) * (r + x) / (alpha + T) * (beta + T) / (s - 1) * (1 - ((beta + T) /
    (beta + T + h)) ** (s - 1)), written with `exprel` so that s = 1 needs no special case.
    """
    xs, txs, Ts = _arrays(x, t_x, T)
    if horizon < 0:
        raise ValueError("horizon must not be negative")
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    log_growth = np.log1p(horizon / (beta + Ts))
    per_rate = (beta + Ts) * log_growth * exprel(-(s - 1) * log_growth)
    result: FloatArray = p_alive(params, xs, txs, Ts) * (r + xs) / (alpha + Ts) * per_rate
    return result


def p_no_purchase_within(
    params: ParetoNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, horizon: float
) -> FloatArray:
    """Probability of no purchase in (T, T + horizon]: the defection score.

    1 - P(alive) * P(purchase in the window | alive), where dying in the window before the
    next purchase counts as no purchase (derivation in the module docstring).
    """
    xs, txs, Ts = _arrays(x, t_x, T)
    if horizon <= 0:
        raise ValueError("horizon must be positive")
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    log_buy_if_alive = (
        np.log(r + xs)
        + (r + xs) * np.log(alpha + Ts)
        + s * np.log(beta + Ts)
        + _log_integral(r + xs + 1, s, alpha, beta, Ts, Ts + horizon)
    )
    buy_if_alive = np.minimum(np.exp(log_buy_if_alive), 1.0)
    result: FloatArray = 1.0 - p_alive(params, xs, txs, Ts) * buy_if_alive
    return result
