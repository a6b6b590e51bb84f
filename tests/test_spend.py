"""Gamma-Gamma against the published CDNOW estimates (Fader & Hardie 2013)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime

import numpy as np
import pytest

from app.scoring.spend import (
    GammaGammaParams,
    expected_spend_per_visit,
    fit_gamma_gamma,
)
from tests.conftest import CDNOW_SAMPLE


def _repeat_spend() -> tuple[np.ndarray, np.ndarray]:
    """x and zbar per customer, up to 1997-09-30: purchases on one day are one visit."""
    by_day: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for line in CDNOW_SAMPLE.read_text().splitlines():
        customer, _, day, _, dollars = line.split()
        when = datetime.strptime(day, "%Y%m%d").date()
        if when <= date(1997, 9, 30):
            by_day[customer][when] += float(dollars)
    x, zbar = [], []
    for days in by_day.values():
        repeat = [days[d] for d in sorted(days)[1:]]
        x.append(len(repeat))
        zbar.append(sum(repeat) / len(repeat) if repeat else 0.0)
    return np.array(x, dtype=float), np.array(zbar)


def test_fit_reproduces_the_published_cdnow_estimates() -> None:
    fit = fit_gamma_gamma(*_repeat_spend())
    assert fit.converged
    assert fit.customers == 946
    assert fit.params.p == pytest.approx(6.25, rel=0.01)
    assert fit.params.q == pytest.approx(3.74, rel=0.01)
    assert fit.params.gamma == pytest.approx(15.44, rel=0.01)


def test_expected_spend_shrinks_toward_the_population_mean() -> None:
    params = GammaGammaParams(p=6.25, q=3.74, gamma=15.44)
    population = params.p * params.gamma / (params.q - 1)
    newcomer, one_big, many_big = expected_spend_per_visit(params, [0, 1, 20], [0, 100, 100])
    assert newcomer == pytest.approx(population)
    assert population < one_big < many_big < 100


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="no repeat customers"):
        fit_gamma_gamma([0, 0], [0, 0])
    with pytest.raises(ValueError, match="infinite"):
        expected_spend_per_visit(GammaGammaParams(1, 1, 1), [1], [10])
