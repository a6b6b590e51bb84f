"""The statistics of the outreach experiment: pure functions, no I/O.

The report compares contact and control cases, each a randomised draw (`alerts.holdout`):

- the return rate's difference with Newcombe's hybrid score interval (method 10 of Newcombe
  1998): a Wilson score interval for each rate, combined. Unlike the Wald interval it keeps
  its coverage for small arms and rates near 0 or 1, which a control group of a tenth of a
  month's cases is (bench/outreach.py measures its coverage);
- the mean net spend's difference with Welch's t interval (unequal variances);
- the number of cases needed to see a given rise in the return rate: the usual normal
  approximation for two proportions with unequal arms (two-sided alpha, power).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from scipy import stats

CONFIDENCE = 0.95
POWER = 0.8
MAX_CASES = 10**9  # beyond this, "never": no chain follows that many cases
_Z = NormalDist().inv_cdf(1 - (1 - CONFIDENCE) / 2)


def wilson(successes: int, n: int, z: float = _Z) -> tuple[float, float]:
    """Wilson's score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Difference:
    estimate: float
    low: float
    high: float


def rate_difference(
    returned_1: int, n_1: int, returned_0: int, n_0: int, z: float = _Z
) -> Difference | None:
    """p1 - p0 with Newcombe's hybrid score interval; None when an arm is empty."""
    if n_1 == 0 or n_0 == 0:
        return None
    p1, p0 = returned_1 / n_1, returned_0 / n_0
    low1, high1 = wilson(returned_1, n_1, z)
    low0, high0 = wilson(returned_0, n_0, z)
    estimate = p1 - p0
    return Difference(
        estimate,
        estimate - math.sqrt((p1 - low1) ** 2 + (high0 - p0) ** 2),
        estimate + math.sqrt((high1 - p1) ** 2 + (p0 - low0) ** 2),
    )


def mean_difference(values_1: list[float], values_0: list[float]) -> Difference | None:
    """mean1 - mean0 with Welch's t interval; None when an arm has fewer than 2 cases."""
    n1, n0 = len(values_1), len(values_0)
    if n1 < 2 or n0 < 2:
        return None
    m1, m0 = sum(values_1) / n1, sum(values_0) / n0
    v1 = sum((v - m1) ** 2 for v in values_1) / (n1 - 1) / n1
    v0 = sum((v - m0) ** 2 for v in values_0) / (n0 - 1) / n0
    estimate = m1 - m0
    if v1 + v0 == 0:
        return Difference(estimate, estimate, estimate)
    freedom = (v1 + v0) ** 2 / (v1**2 / (n1 - 1) + v0**2 / (n0 - 1))
    half = float(stats.t.ppf(1 - (1 - CONFIDENCE) / 2, freedom)) * math.sqrt(v1 + v0)
    return Difference(estimate, estimate - half, estimate + half)


def cases_needed(control_rate: float, effect: float, holdout: float) -> int | None:
    """Cases (both arms) to see a rise of `effect` in the return rate over `control_rate`
    with the report's confidence and 80 % power, when `holdout` of them are controls."""
    if not 0 < holdout < 1 or effect <= 0:
        return None
    p0 = min(max(control_rate, 0.0), 1.0)
    p1 = min(p0 + effect, 1.0)
    delta = p1 - p0
    if delta <= 0:
        return None
    share_1, share_0 = 1 - holdout, holdout
    pooled = share_1 * p1 + share_0 * p0
    z_beta = NormalDist().inv_cdf(POWER)
    spread_null = math.sqrt(pooled * (1 - pooled) * (1 / share_1 + 1 / share_0))
    spread_alt = math.sqrt(p1 * (1 - p1) / share_1 + p0 * (1 - p0) / share_0)
    needed = ((_Z * spread_null + z_beta * spread_alt) / delta) ** 2
    # The policy bounds holdout (>= 0.01) and effect (>= 0.005): at most about 8 million.
    return math.ceil(needed) if math.isfinite(needed) and needed < MAX_CASES else None
