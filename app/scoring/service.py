"""Population model fits and per-customer scores, from the customers' patterns.

The purchase model is Pareto/NBD (`pareto.py`): on the CDNOW benchmark its P(no purchase
within 90 days) ranks defectors better than BG/NBD's and than recency (bench/README.md).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, insert, select

from app.customers.state import CustomerState
from app.kit.db import Money, TransactionRunner, utcnow
from app.kit.periodic import Job
from app.kit.settings import Settings
from app.models import Customer, ModelFit
from app.scoring import pareto
from app.scoring import spend as spend_model
from app.scoring.btyd import FloatArray
from app.scoring.pareto import ParetoNbdParams
from app.scoring.spend import GammaGammaParams

# Fewer customers than this with a first visit cannot pin down four parameters.
MIN_CUSTOMERS_TO_FIT = 200
# Repeat customers with spend needed to fit Gamma-Gamma's three parameters.
MIN_CUSTOMERS_TO_FIT_SPEND = 100
MIN_P_ALIVE = 0.05
# Used until the first fit: Pareto/NBD's published CDNOW estimates (r=0.55, alpha=10.58,
# s=0.61, beta=11.67 in weeks), in days. A retailer's own fit replaces them as soon as it can.
PRIOR = ParetoNbdParams(r=0.55, alpha=10.58 * 7, s=0.61, beta=11.67 * 7)


@dataclass(frozen=True, slots=True)
class PopulationModel:
    params: ParetoNbdParams
    source: Literal["prior", "fit"]
    fitted_at: str | None = None
    customers: int | None = None
    log_likelihood: float | None = None
    fit_id: int = 0  # 0 for the prior
    # None until enough repeat customers with spend: each customer's own mean is used then.
    spend: GammaGammaParams | None = None
    spend_customers: int | None = None


@dataclass(frozen=True, slots=True)
class ValueSettings:
    """How value at risk is computed: expected purchases over `horizon_days`, discounted."""

    horizon_days: int = 365
    annual_discount_rate: float = 0.10


@dataclass(frozen=True, slots=True)
class Scores:
    p_alive: float
    p_no_purchase_within: float
    expected_purchases: float
    expected_gap_days: float | None
    days_since_last_visit: int
    expected_spend_per_visit: float
    value_at_risk: float
    # The value if they stay a customer: value at risk given alive (the expected value is
    # P(alive) times it), P(alive) floored at MIN_P_ALIVE so that it stays the customer's
    # own value and does not grow without bound for one long gone.
    value_if_retained: float = 0.0


async def refit(transactions: TransactionRunner, as_of: date) -> ModelFit | None:
    """Fit Pareto/NBD on every customer with a visit (and Gamma-Gamma on the repeat
    customers' spend); None when there are too few to fit.

    The histories are read, the models are fitted in a worker thread (seconds for large
    populations), and only the result is written: ingestion never waits for a fit.
    """
    histories = await transactions.read(lambda connection: _histories(connection, as_of))
    if len(histories) < MIN_CUSTOMERS_TO_FIT:
        return None
    x = np.array([h.visits - 1 for h in histories], dtype=np.float64)
    t_x = np.array([(h.last - h.first).days for h in histories], dtype=np.float64)
    T = np.array([(as_of - h.first).days for h in histories], dtype=np.float64)
    fit = await asyncio.to_thread(pareto.fit_pareto_nbd, x, t_x, T, initial=PRIOR)
    values: dict[str, object] = {
        "model": "pareto_nbd",
        "r": fit.params.r,
        "alpha": fit.params.alpha,
        "s": fit.params.s,
        "beta": fit.params.beta,
        "log_likelihood": fit.log_likelihood,
        "customers": fit.customers,
        "converged": fit.converged,
        "as_of": as_of,
        "fitted_at": utcnow(),
    }
    # Spend is fitted only on customers whose whole history is before as_of (their sums are
    # not split by day), which for a live refit is every customer.
    zbar = np.array([h.mean_repeat_spend for h in histories], dtype=np.float64)
    usable = (x > 0) & (zbar > 0) & np.array([h.complete for h in histories])
    if int(usable.sum()) >= MIN_CUSTOMERS_TO_FIT_SPEND:
        spend = await asyncio.to_thread(spend_model.fit_gamma_gamma, x[usable], zbar[usable])
        if spend.params.q > 1:  # otherwise the mean spend is unbounded: keep per-customer means
            values |= {
                "spend_p": spend.params.p,
                "spend_q": spend.params.q,
                "spend_gamma": spend.params.gamma,
                "spend_customers": spend.customers,
            }
    await transactions.run(lambda connection: connection.execute(insert(ModelFit), values))
    return ModelFit(**values)


@dataclass(frozen=True, slots=True)
class _History:
    first: date
    last: date
    visits: int
    mean_repeat_spend: float
    complete: bool  # no visit after as_of


def _histories(connection: Connection, as_of: date) -> list[_History]:
    """The customers seen by as_of, their visits capped at as_of."""
    query = select(
        Customer.first_visit_on,
        Customer.last_visit_on,
        Customer.visit_days,
        Customer.purchase_amount,
        Customer.first_visit_amount,
        Customer.refund_amount,
    ).where(Customer.first_visit_on.is_not(None), Customer.first_visit_on <= as_of)
    return [
        _History(
            first,
            min(last, as_of),
            visits,
            _mean_repeat_spend(
                int(bought * Money.SCALE),
                int(first_day * Money.SCALE),
                int(refunded * Money.SCALE),
                visits,
            ),
            last <= as_of,
        )
        for first, last, visits, bought, first_day, refunded in connection.execute(query)
        if first is not None and last is not None
    ]


def _mean_repeat_spend(bought: int, first_day: int, refunded: int, visits: int) -> float:
    """Net spend per repeat visit, in currency units (refunds count against repeat spend)."""
    if visits < 2:
        return 0.0
    return max(bought - first_day - refunded, 0) / Money.SCALE / (visits - 1)


def current_model(connection: Connection) -> PopulationModel:
    # On a Connection the select gives a row of columns (named like the model's attributes).
    latest = connection.execute(select(ModelFit).order_by(ModelFit.id.desc()).limit(1)).first()
    return PRIOR_MODEL if latest is None else _model(latest)


def _model(fit: Any) -> PopulationModel:
    spend = None
    if fit.spend_p is not None and fit.spend_q is not None and fit.spend_gamma is not None:
        spend = GammaGammaParams(fit.spend_p, fit.spend_q, fit.spend_gamma)
    return PopulationModel(
        ParetoNbdParams(fit.r, fit.alpha, fit.s, fit.beta),
        "fit",
        fitted_at=fit.fitted_at.isoformat(),
        customers=fit.customers,
        log_likelihood=fit.log_likelihood,
        fit_id=fit.id,
        spend=spend,
        spend_customers=fit.spend_customers,
    )


PRIOR_MODEL = PopulationModel(PRIOR, "prior")


def score(
    state: CustomerState,
    params: ParetoNbdParams,
    as_of: date,
    horizon_days: int,
    *,
    spend: GammaGammaParams | None = None,
    value: ValueSettings = ValueSettings(),
) -> Scores | None:
    """One customer's scores as of a day; None before their first visit."""
    return score_many([state], params, as_of, horizon_days, spend=spend, value=value)[0]


def score_many(
    states: Sequence[CustomerState],
    params: ParetoNbdParams,
    as_of: date,
    horizon_days: int,
    *,
    spend: GammaGammaParams | None = None,
    value: ValueSettings = ValueSettings(),
) -> list[Scores | None]:
    """Every customer's scores as of a day, in one vectorised pass (None before a first visit).

    Value at risk is the expected future value: expected spend per visit (Gamma-Gamma, or
    the customer's own mean before a spend fit exists) times the expected visits over
    `value.horizon_days`, each month's visits discounted at `value.annual_discount_rate`.
    """
    scored = [i for i, s in enumerate(states) if _seen(s, as_of)]
    results: list[Scores | None] = [None] * len(states)
    if not scored:
        return results
    view = _Arrays.of([states[i] for i in scored], as_of)
    p_alive = pareto.p_alive(params, view.x, view.t_x, view.T)
    quiet = pareto.p_no_purchase_within(params, view.x, view.t_x, view.T, horizon_days)
    expected = pareto.expected_purchases(params, view.x, view.t_x, view.T, horizon_days)
    per_visit = (
        view.mean_net_spend
        if spend is None
        else spend_model.expected_spend_per_visit(spend, view.x, view.mean_repeat_spend)
    )
    future = _discounted_purchases(params, view, value) * per_visit
    # Mean of the purchase rate's posterior given alive, Gamma(r + x, alpha + T), inverted.
    gap = (params.alpha + view.T) / (params.r + view.x)
    for k, i in enumerate(scored):
        results[i] = Scores(
            p_alive=float(p_alive[k]),
            p_no_purchase_within=float(quiet[k]),
            expected_purchases=float(expected[k]),
            expected_gap_days=float(gap[k]),
            days_since_last_visit=int(view.T[k] - view.t_x[k]),
            expected_spend_per_visit=round(float(per_visit[k]), 2),
            value_at_risk=round(float(future[k]), 2),
            value_if_retained=round(float(future[k]) / max(float(p_alive[k]), MIN_P_ALIVE), 2),
        )
    return results


def _seen(state: CustomerState, as_of: date) -> bool:
    return state.first_visit_on is not None and state.first_visit_on <= as_of


@dataclass(frozen=True, slots=True)
class _Arrays:
    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    mean_net_spend: FloatArray
    mean_repeat_spend: FloatArray

    @classmethod
    def of(cls, states: Sequence[CustomerState], as_of: date) -> _Arrays:
        rows = []
        for state in states:
            assert state.first_visit_on is not None
            assert state.last_visit_on is not None
            last = min(state.last_visit_on, as_of)  # visits after as_of are unknown then
            visits = max(state.visit_days, 1)
            net = state.purchase_amount - state.refund_amount
            rows.append(
                (
                    visits - 1,
                    (last - state.first_visit_on).days,
                    (as_of - state.first_visit_on).days,
                    max(net, 0) / Money.SCALE / visits,
                    _mean_repeat_spend(
                        state.purchase_amount,
                        state.first_visit_amount,
                        state.refund_amount,
                        visits,
                    ),
                )
            )
        columns = np.array(rows, dtype=np.float64).T
        return cls(*columns)


def _discounted_purchases(
    params: ParetoNbdParams, view: _Arrays, value: ValueSettings
) -> FloatArray:
    """Expected purchases over the value horizon, month by month, each month discounted."""
    steps = np.linspace(0.0, value.horizon_days, max(value.horizon_days // 30, 1) + 1)
    total = np.zeros_like(view.x)
    previous = np.zeros_like(view.x)
    for start, end in itertools.pairwise(steps):
        cumulative = pareto.expected_purchases(params, view.x, view.t_x, view.T, end)
        discount = (1.0 + value.annual_discount_rate) ** (-((start + end) / 2) / 365.0)
        total += (cumulative - previous) * discount
        previous = cumulative
    return total


def periodic_jobs(settings: Settings, transactions: TransactionRunner) -> list[Job]:
    """Scoring's loops: the population model is refitted on every customer."""
    return [
        Job(
            settings.refit_interval,
            "refit-population-model",
            lambda: refit(transactions, utcnow().date()),
        )
    ]
