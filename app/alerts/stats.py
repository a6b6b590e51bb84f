"""The statistical tests behind the rules: small closed forms, no I/O, no scipy.

Each function gives the probability, under "this customer's own pattern did not change", of
something at least as extreme as what is seen now. The rules compare it with their part of
the policy's false-alarm budget. They run on every event and every sweep, so they are
written with `math` alone: scipy's distributions cost some 50 us a call, more than a whole
evaluation here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    shape = gaps + RATE_PRIOR_SHAPE
    span = max(span_days, 1.0)
    stretched = regularity * silent_days
    log_q = math.log(span / (span + stretched))
    log_rest = math.log(stretched / (span + stretched))
    total = 0.0
    for j in range(regularity):
        total += math.exp(
            math.lgamma(shape + j)
            - math.lgamma(shape)
            - math.lgamma(j + 1)
            + shape * log_q
            + j * log_rest
        )
    return min(total, 1.0)


def first_silence_at(
    gaps: int, span_days: float, regularity: int, alpha: float, *, within_days: int = 3650
) -> int | None:
    """The fewest silent days whose survival is at most `alpha` (None: not within
    `within_days`). The survival falls as the silence grows, so a bisection finds it."""
    if silence_survival(gaps, span_days, within_days, regularity) > alpha:
        return None
    low, high = 0, within_days  # survival(low) > alpha >= survival(high)
    while high - low > 1:
        middle = (low + high) // 2
        if silence_survival(gaps, span_days, middle, regularity) <= alpha:
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
    count = len(gaps)
    mean = sum(gaps) / count if count else 0.0
    if count < 2 or mean <= 0:
        return 1.0
    variance = sum((gap - mean) ** 2 for gap in gaps) / (count - 1)
    return (variance / mean**2 * (count - 1) + prior_gaps) / (count - 1 + prior_gaps)


def regularity_of(gaps: Sequence[int]) -> int:
    """The gamma shape the gaps suggest, rounded down and at most MAX_REGULARITY:
    overstating regularity would raise false alarms, so few gaps or one long holiday keep it
    low."""
    return max(1, min(MAX_REGULARITY, math.floor(1.0 / gap_spread(gaps) + 1e-9)))


def dispersion_of(gaps: Sequence[int]) -> float:
    return max(gap_spread(gaps), MIN_DISPERSION)


def rate_fall_p_value(
    recent: int, recent_days: float, earlier: int, earlier_days: float, dispersion: float
) -> float:
    """One-sided p-value of "the visit rate did not fall": given all n visits, the recent
    period's count is Binomial(n, its share of the time) if the rate is unchanged; the
    normal form with continuity correction, the variance scaled by the customer's own
    dispersion (quasi-Poisson)."""
    n = recent + earlier
    if earlier == 0 or n == 0:
        return 1.0
    share = recent_days / (recent_days + earlier_days)
    spread = math.sqrt(dispersion * n * share * (1 - share))
    return normal_cdf((recent + 0.5 - n * share) / spread)


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
