"""The statistical tests behind the rules: small closed forms, no I/O, no scipy.

Each function gives the probability, under "this customer's own pattern did not change", of
something at least as extreme as what is seen now. The rules compare it with their part of
the policy's false-alarm budget. They run on every event and every sweep, so they are
written with `math` alone: scipy's distributions cost some 50 us a call, more than a whole
evaluation here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

# Prior on a customer's visit rate, Gamma(shape 0.5, rate 0): Jeffreys' prior, so that the
# posterior after x gaps over t days is Gamma(x + 0.5, t) and says nothing the visits do not.
RATE_PRIOR_SHAPE = 0.5
# The most regular a customer's gaps are taken to be (gamma shape 4: a coefficient of
# variation of 0.5), however regular their latest gaps look.
MAX_REGULARITY = 4
# The weight, in gaps, of the Poisson process the gap statistics are pulled towards.
PRIOR_GAPS = 2.0
# The least dispersion of visit counts used (gamma shape 4): no customer is clockwork.
MIN_DISPERSION = 0.25


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def silence_survival(gaps: int, span_days: float, silent_days: float, regularity: int) -> float:
    """P(no visit for `silent_days`) for a customer with `gaps` gaps between visits over
    `span_days`: gaps gamma-distributed with integer shape `regularity` (1: a Poisson
    process; larger: more regular) around a mean 1/rate, the rate unknown with posterior
    Gamma(gaps + 0.5, span_days).

    Integrating the gamma survival sum_{j<k} e^(-k rate s) (k rate s)^j / j! over that
    posterior gives a negative binomial CDF: P(N <= k - 1), N ~ NB(gaps + 0.5,
    span / (span + k s)). The posterior is that of a Poisson count, wider than a regular
    customer's: the uncertainty errs towards fewer alarms."""
    if silent_days <= 0:
        return 1.0
    return _Survival(gaps, span_days, regularity)(silent_days)


class _Survival:
    """silence_survival for one customer at any silence: the terms that do not depend on
    the silence worked out once (the next-check search asks for a dozen silences)."""

    def __init__(self, gaps: int, span_days: float, regularity: int) -> None:
        self.shape = gaps + RATE_PRIOR_SHAPE
        self.span = max(span_days, 1.0)
        self.regularity = regularity
        base = math.lgamma(self.shape)
        self.terms = [
            math.lgamma(self.shape + j) - base - math.lgamma(j + 1) for j in range(regularity)
        ]

    def __call__(self, silent_days: float) -> float:
        if silent_days <= 0:
            return 1.0
        stretched = self.regularity * silent_days
        whole = self.span + stretched
        log_q = self.shape * math.log(self.span / whole)
        log_rest = math.log(stretched / whole)
        total = sum(math.exp(term + log_q + j * log_rest) for j, term in enumerate(self.terms))
        return min(total, 1.0)


def first_silence_at(
    gaps: int, span_days: float, regularity: int, alpha: float, *, within_days: int = 3650
) -> int | None:
    """The fewest silent days whose survival is at most `alpha` (None: not within
    `within_days`). The survival falls as the silence grows, so a bisection finds it."""
    survival = _Survival(gaps, span_days, regularity)
    # For a Poisson customer the answer has a closed form; a more regular one's tail is
    # lighter, so the same silence is enough for them, and bounds the search.
    stretch = -math.log(alpha) / survival.shape
    high = within_days
    if stretch < math.log(within_days + 1):  # else beyond the range (and no overflow)
        poisson = math.ceil(survival.span * math.expm1(stretch) - 1e-9)
        high = min(max(poisson, 1), within_days)
    if survival(high) > alpha:  # not lighter this far out: search the whole range
        high = within_days
        if survival(high) > alpha:
            return None
    low = 0  # survival(low) > alpha >= survival(high)
    while high - low > 1:
        middle = (low + high) // 2
        if survival(middle) <= alpha:
            high = middle
        else:
            low = middle
    return high


def gap_spread(gaps: Sequence[int], prior_gaps: float = PRIOR_GAPS) -> float:
    """The squared coefficient of variation of a customer's gaps between visits (1 for a
    Poisson process, 1/k for gamma gaps of shape k), pulled towards 1 with the weight of
    `prior_gaps` gaps, so that a few gaps cannot make a customer look like clockwork. For a
    renewal process it is also the variance over mean of visit counts over long periods:
    the dispersion of the frequency test."""
    return spread_of_sums(len(gaps), sum(gaps), sum(gap * gap for gap in gaps), prior_gaps)


def spread_of_sums(
    count: int, total: float, squares: float, prior_gaps: float = PRIOR_GAPS
) -> float:
    """gap_spread from the gaps' count, sum and sum of squares."""
    if count < 2 or total <= 0:
        return 1.0
    mean = total / count
    variance = max(squares - count * mean * mean, 0.0) / (count - 1)
    return (variance / mean**2 * (count - 1) + prior_gaps) / (count - 1 + prior_gaps)


def regularity_of(gaps: Sequence[int]) -> int:
    """The gamma shape the gaps suggest, rounded down and at most MAX_REGULARITY:
    overstating regularity would raise false alarms, so few gaps or one long holiday keep it
    low."""
    return max(1, min(MAX_REGULARITY, math.floor(1.0 / gap_spread(gaps) + 1e-9)))


def rate_fall_z(
    recent: int, recent_days: float, earlier: int, earlier_days: float, dispersion: float
) -> float:
    """The deviate of "the visit rate did not fall" (its one-sided p-value is
    normal_cdf(z)): given all n visits, the recent period's count is Binomial(n, its share
    of the time) if the rate is unchanged; the normal form with continuity correction, the
    variance scaled by the customer's own dispersion (quasi-Poisson)."""
    n = recent + earlier
    if earlier == 0 or n == 0:
        return 0.0
    share = recent_days / (recent_days + earlier_days)
    spread = math.sqrt(dispersion * n * share * (1 - share))
    return (recent + 0.5 - n * share) / spread


# The deviates at which the scan's tail probability is tabulated, and the simulated draws.
_SCAN_GRID = np.arange(0.0, 5.0, 0.01)
_SCAN_DRAWS = 40_000
_SCAN_MIN_COUNT = 40  # fewer draws beyond a deviate: the union bound answers instead


def scan_p_value(z: float, windows: Sequence[int], history_weeks: float) -> float:
    """P(the lowest of the windows' deviates is z or lower) if nothing changed: the
    correction for trying several recent windows, all ending now, against the history
    before each. Their deviates are those of one Brownian bridge over the history,
    standardized at the windows' shares of it: correlated (sqrt(s_a (1 - s_b) / (s_b (1 -
    s_a))) for shares s_a < s_b), so trying many costs far less than the union bound
    (Bonferroni) charges. The tail is simulated once per set of windows and history length
    (weeks, rounded; four-weekly beyond a year, and at most three years), and the union
    bound answers beyond what the simulation resolves."""
    count = len(windows)
    if count == 0:
        return 1.0
    union = min(count * normal_cdf(z), 1.0)
    if count == 1 or z >= 0:
        return union
    weeks = (
        round(history_weeks) if history_weeks <= 52 else 52 + 4 * round((history_weeks - 52) / 4)
    )
    tail = _scan_tail(tuple(windows), min(weeks, 156))
    index = int(-z / 0.01)
    if index >= len(_SCAN_GRID) or tail[index] * _SCAN_DRAWS < _SCAN_MIN_COUNT:
        return union
    return float(min(tail[index], union))


@functools.lru_cache(maxsize=512)
def _scan_tail(windows: tuple[int, ...], history_weeks: int) -> FloatArray:
    shares = np.array([min(w / history_weeks, 0.999) for w in windows])
    low, high = np.minimum.outer(shares, shares), np.maximum.outer(shares, shares)
    correlation = np.sqrt(low * (1 - high) / (high * (1 - low)))
    factor = np.linalg.cholesky(correlation + 1e-9 * np.eye(len(windows)))
    rng = np.random.default_rng([*windows, history_weeks])
    draws = rng.standard_normal((_SCAN_DRAWS, len(windows))) @ factor.T
    lowest = np.sort(draws.min(axis=1))
    # P(min <= -g) for each g of the grid
    return np.searchsorted(lowest, -_SCAN_GRID, side="right") / _SCAN_DRAWS


def t_to_z(t: float, df: float) -> float:
    """A Student t statistic as the normal deviate of the same tail probability (Wallace's
    approximation: within 0.035 of the exact deviate from 3 degrees of freedom, and in the
    tails that decide (beyond 1.5) never more extreme, so the spend test errs towards fewer
    alarms)."""
    if df <= 0:
        return 0.0
    return math.copysign((8 * df + 1) / (8 * df + 3) * math.sqrt(df * math.log1p(t * t / df)), t)


def run_without_p_value(purchases: int, trials: int, run: int) -> float:
    """P(a run of `run` visits in a row without the category), for a category bought on
    `purchases` of `trials` visits: E[(1 - p)^run] with p ~ Beta(purchases + 0.5,
    trials - purchases + 0.5), the beta-binomial chance of no purchase in `run` visits."""
    if run <= 0:
        return 1.0
    a = purchases + 0.5
    b = max(trials - purchases, 0) + 0.5
    return math.exp(
        math.lgamma(b + run) + math.lgamma(a + b) - math.lgamma(b) - math.lgamma(a + b + run)
    )
