"""Pareto/NBD against the published CDNOW numbers, quadrature, and a simulation of the model."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import gammaln

from app.scoring import pareto

# Fader, Hardie & Lee (2005), "Counting your customers the easy way", section 5: the
# Pareto/NBD fitted to the same CDNOW sample, in weeks. alpha < beta here.
PUBLISHED = pareto.ParetoNbdParams(r=0.55, alpha=10.58, s=0.61, beta=11.67)
# The same with alpha > beta, for the other branch of the hypergeometric expressions.
SWAPPED = pareto.ParetoNbdParams(r=0.55, alpha=11.67, s=0.61, beta=10.58)


def test_fit_reproduces_the_published_cdnow_estimates(
    calibration: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    fit = pareto.fit_pareto_nbd(*calibration)
    assert fit.converged
    assert fit.customers == 2357
    for name in ("r", "alpha", "s", "beta"):
        published = getattr(PUBLISHED, name)
        assert getattr(fit.params, name) == pytest.approx(published, rel=0.01), name
    assert fit.log_likelihood == pytest.approx(-9595.0, abs=1.0)  # FHL 2005, section 5
    # The published (rounded) estimates are within a whisker of the optimum.
    at_published = float(pareto.log_likelihood(PUBLISHED, *calibration).sum())
    assert fit.log_likelihood - 0.1 < at_published <= fit.log_likelihood


def test_fit_starting_elsewhere_finds_the_same_optimum(
    calibration: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    start = pareto.ParetoNbdParams(r=2.0, alpha=50.0, s=0.2, beta=3.0)
    fit = pareto.fit_pareto_nbd(*calibration, initial=start)
    assert fit.log_likelihood == pytest.approx(-9595.0, abs=1.0)
    assert fit.params.r == pytest.approx(PUBLISHED.r, rel=0.01)


def _log_integral_by_quadrature(
    p: float, q: float, alpha: float, beta: float, t1: float, t2: float
) -> float:
    """log of the integral over (t1, t2] of (alpha + tau) ** -p * (beta + tau) ** -q, numerically.

    The integrand is scaled by its value at t1, so that large p neither underflows nor hides
    the mass next to t1 from the quadrature.
    """
    a, b = alpha + t1, beta + t1

    def scaled(u: float) -> float:
        return float(np.exp(-p * np.log1p(u / a) - q * np.log1p(u / b)))

    value, _ = quad(scaled, 0, t2 - t1, epsabs=0, epsrel=1e-12, limit=500)
    return float(np.log(value) - p * np.log(a) - q * np.log(b))


def _log_likelihood_by_quadrature(
    params: pareto.ParetoNbdParams, x: int, t_x: float, T: float
) -> float:
    """The likelihood with the death-time integral done numerically, not by 2F1."""
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    died = np.log(s) + _log_integral_by_quadrature(r + x, s + 1, alpha, beta, t_x, T)
    return float(common + np.logaddexp(alive, died))


# In weeks as published, and in days with a weekly shopper of several years: for alpha < beta
# the note's form of 2F1 grows like ((beta + t) / (alpha + t)) ** (r + x), past e ** 709 for
# x = 1500 here, and would overflow.
CASES = [(0, 0.0, 38.0), (3, 20.0, 38.0), (29, 37.5, 38.0)]
DAILY = pareto.ParetoNbdParams(r=2.0, alpha=20.0, s=0.8, beta=3000.0)
DAILY_CASES = [(0, 0.0, 700.0), (400, 650.0, 700.0), (1500, 1900.0, 2400.0)]


@pytest.mark.parametrize(
    ("params", "x", "t_x", "T"),
    [(PUBLISHED, *case) for case in CASES]
    + [(SWAPPED, *case) for case in CASES]
    + [(DAILY, *case) for case in DAILY_CASES]
    + [(pareto.ParetoNbdParams(2.0, 3000.0, 0.8, 20.0), *case) for case in DAILY_CASES],
)
def test_likelihood_matches_quadrature_on_both_branches(
    params: pareto.ParetoNbdParams, x: int, t_x: float, T: float
) -> None:
    closed_form = float(pareto.log_likelihood(params, [x], [t_x], [T])[0])
    assert np.isfinite(closed_form)
    assert closed_form == pytest.approx(_log_likelihood_by_quadrature(params, x, t_x, T), abs=1e-8)


@pytest.mark.parametrize(
    "params", [PUBLISHED, SWAPPED, DAILY], ids=["alpha<beta", "alpha>beta", "daily"]
)
def test_p_no_purchase_matches_quadrature(params: pareto.ParetoNbdParams) -> None:
    """1 - P(alive) (r + x) (alpha + T) ** (r + x) (beta + T) ** s * integral over the window."""
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    for x, t_x, T in CASES + DAILY_CASES:
        for horizon in (1.0, 30.0, 365.0):
            buy_if_alive = np.exp(
                np.log(r + x)
                + (r + x) * np.log(alpha + T)
                + s * np.log(beta + T)
                + _log_integral_by_quadrature(r + x + 1, s, alpha, beta, T, T + horizon)
            )
            alive = pareto.p_alive(params, [x], [t_x], [T])[0]
            score = pareto.p_no_purchase_within(params, [x], [t_x], [T], horizon)[0]
            assert score == pytest.approx(1 - alive * buy_if_alive, rel=1e-9, abs=1e-12)


def test_fit_of_a_population_in_which_no_one_has_bought_twice_stays_a_probability() -> None:
    """The optimum is at a boundary (no one buys); the fit must not exploit rounding there."""
    rng = np.random.default_rng(1)
    T = rng.uniform(1, 300, 100)
    fit = pareto.fit_pareto_nbd(np.zeros(100), np.zeros(100), T)
    # Each likelihood is P(no repeat purchase by T) <= 1, and the sup of their product is 1.
    assert -1e-3 < fit.log_likelihood <= 1e-6
    assert fit.params.r / fit.params.alpha < 1e-6  # mean purchase rate: next to nothing


def test_p_alive_sanity() -> None:
    # Unlike BG/NBD, a customer with no repeat purchase can be gone, more likely the older.
    young, old = pareto.p_alive(PUBLISHED, [0, 0], [0, 0], [4, 38])
    assert 0 < old < young < 1
    # For the same purchases, a longer silence means less likely alive ...
    recent, silent = pareto.p_alive(PUBLISHED, [4, 4], [30, 5], [32, 32])
    assert 0 < silent < recent < 1
    # ... and someone who bought just now is certainly alive.
    assert pareto.p_alive(PUBLISHED, [4], [32], [32])[0] == 1.0
    # For the same silence, more purchases make a long silence less likely for the living.
    few, many = pareto.p_alive(PUBLISHED, [1, 10], [20, 20], [38, 38])
    assert many < few


@pytest.mark.parametrize("params", [PUBLISHED, SWAPPED], ids=["alpha<beta", "alpha>beta"])
def test_p_no_purchase_is_the_likelihood_ratio_of_a_longer_quiet_spell(
    params: pareto.ParetoNbdParams,
) -> None:
    """P(none in (T, T+h] | x, t_x, T) = L(x, t_x, T+h) / L(x, t_x, T): an independent route."""
    x, t_x, T = np.array([0, 2, 5, 29]), np.array([0, 20, 28, 37.5]), np.array([30, 30, 30, 38])
    for horizon in (1.0, 13.0, 39.0):
        ratio = np.exp(
            pareto.log_likelihood(params, x, t_x, T + horizon)
            - pareto.log_likelihood(params, x, t_x, T)
        )
        scores = pareto.p_no_purchase_within(params, x, t_x, T, horizon)
        np.testing.assert_allclose(scores, ratio, rtol=1e-9)


def test_p_no_purchase_counts_dying_in_the_window() -> None:
    """The BG/NBD form (1 - P(alive)) + P(alive) E[exp(-lambda h) | alive] is too low here."""
    x, t_x, T, horizon = 2, 20.0, 30.0, 39.0
    alive = pareto.p_alive(PUBLISHED, [x], [t_x], [T])[0]
    r, alpha = PUBLISHED.r + x, PUBLISHED.alpha + T
    without_death = 1 - alive + alive * (alpha / (alpha + horizon)) ** r
    score = pareto.p_no_purchase_within(PUBLISHED, [x], [t_x], [T], horizon)[0]
    assert score > without_death + 0.02


def test_p_no_purchase_is_a_probability_that_grows_with_silence_and_falls_with_horizon() -> None:
    scores = pareto.p_no_purchase_within(PUBLISHED, [4, 4, 0], [30, 5, 0], [32, 32, 32], 13)
    assert np.all((scores > 0) & (scores < 1))
    assert scores[0] < scores[1]
    short, long = (pareto.p_no_purchase_within(PUBLISHED, [4], [30], [32], h)[0] for h in (4, 52))
    assert long < short


def test_expected_purchases_is_smooth_through_s_equal_to_one() -> None:
    near = [
        pareto.expected_purchases(
            pareto.ParetoNbdParams(0.55, 10.58, s, 11.67), [3], [20], [30], 39
        )
        for s in (1 - 1e-7, 1.0, 1 + 1e-7)
    ]
    assert near[0][0] == pytest.approx(near[1][0], rel=1e-6)
    assert near[2][0] == pytest.approx(near[1][0], rel=1e-6)
    assert pareto.expected_purchases(PUBLISHED, [3], [20], [30], 0)[0] == 0.0


@pytest.mark.parametrize(("x", "t_x"), [(0, 0.0), (2, 20.0), (2, 8.0), (5, 28.0)])
def test_scores_match_a_simulation_of_the_model(x: int, t_x: float) -> None:
    """Simulate the Pareto/NBD story, keep the histories that match, and count what follows.

    Each simulated customer draws a purchase rate and a drop-out rate from the population,
    then a lifetime; repeat purchases are a Poisson process until death. Given n purchases
    in (0, end], their times are uniform, so the last is end * U ** (1 / n). Histories with
    x repeat purchases and the last within half a week of t_x are kept, and the closed forms
    are averaged over the kept customers' own t_x, so only sampling error remains.
    """
    rng = np.random.default_rng(2005)
    n, T, horizon = 2_000_000, 30.0, 10.0
    rate = rng.gamma(PUBLISHED.r, 1 / PUBLISHED.alpha, n)
    drop_rate = rng.gamma(PUBLISHED.s, 1 / PUBLISHED.beta, n)
    death = rng.exponential(1 / drop_rate)
    observed = np.minimum(death, T)
    purchases = rng.poisson(rate * observed)
    kept = purchases == x
    if x > 0:
        last = observed * rng.random(n) ** (1 / x)
        kept &= np.abs(last - t_x) <= 0.5
        t_xs = last[kept]
    else:
        t_xs = np.zeros(int(kept.sum()))
    later = rng.poisson(rate[kept] * np.clip(death[kept] - T, 0, horizon))
    count = int(kept.sum())
    assert count > 2000
    xs, Ts = np.full(count, x), np.full(count, T)

    quiet = float(np.mean(later == 0))
    closed = float(np.mean(pareto.p_no_purchase_within(PUBLISHED, xs, t_xs, Ts, horizon)))
    assert abs(quiet - closed) < 4 * np.sqrt(quiet * (1 - quiet) / count)

    mean_later = float(np.mean(later))
    closed_mean = float(np.mean(pareto.expected_purchases(PUBLISHED, xs, t_xs, Ts, horizon)))
    assert abs(mean_later - closed_mean) < 4 * float(np.std(later)) / np.sqrt(count)

    alive = float(np.mean(death[kept] > T))
    closed_alive = float(np.mean(pareto.p_alive(PUBLISHED, xs, t_xs, Ts)))
    assert abs(alive - closed_alive) < 4 * np.sqrt(alive * (1 - alive) / count)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="t_x"):
        pareto.p_alive(PUBLISHED, [1], [5], [3])
    with pytest.raises(ValueError, match="horizon"):
        pareto.p_no_purchase_within(PUBLISHED, [1], [1], [3], 0)
    with pytest.raises(ValueError, match="horizon"):
        pareto.expected_purchases(PUBLISHED, [1], [1], [3], -1)
    with pytest.raises(ValueError, match="no customers"):
        pareto.fit_pareto_nbd([], [], [])


def test_a_fit_out_of_time_returns_its_best_point_unconverged(
    calibration: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Degenerate data can make the likelihood flat and slow: the fit has a time budget."""
    far = pareto.ParetoNbdParams(r=5.0, alpha=100.0, s=5.0, beta=100.0)
    started = time.monotonic()
    cut = pareto.fit_pareto_nbd(
        *calibration, initial=far, budget_seconds=0.2
    )  # the full fit takes about 1 s
    assert time.monotonic() - started < 5
    assert cut.converged is False
    full = pareto.fit_pareto_nbd(*calibration, initial=far)
    assert full.converged is True
    # The best point so far: better than the start, never better than the optimum.
    at_start = float(pareto.log_likelihood(far, *calibration).sum())
    assert at_start < cut.log_likelihood <= full.log_likelihood + 1e-6
