"""BG/NBD against the published CDNOW numbers (Fader, Hardie & Lee 2005)."""

from __future__ import annotations

import numpy as np
import pytest

from app.scoring import btyd


def test_fit_reproduces_the_published_cdnow_estimates(
    calibration: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    fit = btyd.fit_bg_nbd(*calibration)
    assert fit.converged
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert getattr(fit.params, name) == pytest.approx(value, rel=0.01), name
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=1.0)  # FHL 2005, section 5


PUBLISHED = btyd.BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)


def test_p_alive_is_one_without_repeat_purchases_and_falls_with_silence() -> None:
    assert btyd.p_alive(PUBLISHED, [0], [0], [30])[0] == 1.0
    recent, silent = btyd.p_alive(PUBLISHED, [4, 4], [30, 5], [32, 32])
    assert 0 < silent < recent < 1


def test_p_no_purchase_within_is_a_probability_that_grows_with_silence() -> None:
    scores = btyd.p_no_purchase_within(PUBLISHED, [4, 4, 0], [30, 5, 0], [32, 32, 32], 39)
    assert np.all((scores > 0) & (scores < 1))
    assert scores[0] < scores[1]
    # A longer horizon leaves more room for a purchase.
    short, long = (btyd.p_no_purchase_within(PUBLISHED, [4], [30], [32], h)[0] for h in (4, 52))
    assert long < short


def test_p_no_purchase_matches_a_monte_carlo_of_the_model() -> None:
    """Simulate the BG/NBD story for one customer history and count quiet horizons."""
    rng = np.random.default_rng(7)
    x, t_x, T, horizon = 2, 20.0, 30.0, 10.0
    kept = quiet = 0
    while kept < 4000:
        rate = rng.gamma(PUBLISHED.r, 1 / PUBLISHED.alpha)
        drop = rng.beta(PUBLISHED.a, PUBLISHED.b)
        times, alive, t = [], True, 0.0
        while alive:
            t += rng.exponential(1 / rate)
            if t > T + horizon:
                break
            times.append(t)
            alive = rng.random() >= drop
        in_window = [s for s in times if s <= T]
        # Keep simulations whose first purchase is at 0 and which match (x, t_x) closely.
        if len(in_window) != x or abs(in_window[-1] - t_x) > 1.0:
            continue
        kept += 1
        quiet += not any(T < s <= T + horizon for s in times)
    simulated = quiet / kept
    # The simulation conditions on purchases at arbitrary times up to t_x; the closed form
    # conditions on exact values, so allow for sampling error and the matching window.
    expected = btyd.p_no_purchase_within(PUBLISHED, [x], [t_x], [T], horizon)[0]
    assert simulated == pytest.approx(expected, abs=0.05)


def test_expected_purchases_matches_the_published_example() -> None:
    # FHL 2005 / Hardie's note: x=2, t_x=30.43, T=38.86 weeks, 39 weeks ahead -> 1.226.
    value = btyd.expected_purchases(PUBLISHED, [2], [30.43], [38.86], 39)[0]
    assert value == pytest.approx(1.226, abs=0.01)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="t_x"):
        btyd.p_alive(PUBLISHED, [1], [5], [3])
    with pytest.raises(ValueError, match="horizon"):
        btyd.p_no_purchase_within(PUBLISHED, [1], [1], [3], 0)
    with pytest.raises(ValueError, match="no customers"):
        btyd.fit_bg_nbd([], [], [])
