"""Population model fits and per-customer scores, from the customers' patterns."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
from sqlalchemy import Connection, insert, select

from app.customers.state import CustomerState
from app.kit.db import Money, TransactionRunner, utcnow
from app.models import Customer, ModelFit
from app.scoring import btyd

# Fewer customers than this with a first visit cannot pin down four parameters.
MIN_CUSTOMERS_TO_FIT = 200
# Used until the first fit: BG/NBD's published CDNOW estimates (Fader, Hardie & Lee 2005),
# converted from weeks to days. A retailer's own fit replaces them as soon as it can.
PRIOR = btyd.BgNbdParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)


@dataclass(frozen=True, slots=True)
class PopulationModel:
    params: btyd.BgNbdParams
    source: Literal["prior", "fit"]
    fitted_at: str | None = None
    customers: int | None = None
    log_likelihood: float | None = None


@dataclass(frozen=True, slots=True)
class Scores:
    p_alive: float
    p_no_purchase_within: float
    expected_purchases: float
    expected_gap_days: float | None
    days_since_last_visit: int
    value_at_risk: float


async def refit(transactions: TransactionRunner, as_of: date) -> ModelFit | None:
    """Fit BG/NBD on every customer with a visit; None when there are too few to fit.

    The histories are read, the model is fitted in a worker thread (seconds for large
    populations), and only the result is written: ingestion never waits for a fit.
    """
    histories = await transactions.read(lambda connection: _histories(connection, as_of))
    if len(histories) < MIN_CUSTOMERS_TO_FIT:
        return None
    x = np.array([visits - 1 for _, _, visits in histories], dtype=np.float64)
    t_x = np.array([(last - first).days for first, last, _ in histories], dtype=np.float64)
    T = np.array([(as_of - first).days for first, _, _ in histories], dtype=np.float64)
    fit = await asyncio.to_thread(btyd.fit_bg_nbd, x, t_x, T, initial=PRIOR)
    values = {
        "model": "bg_nbd",
        "r": fit.params.r,
        "alpha": fit.params.alpha,
        "a": fit.params.a,
        "b": fit.params.b,
        "log_likelihood": fit.log_likelihood,
        "customers": fit.customers,
        "converged": fit.converged,
        "as_of": as_of,
        "fitted_at": utcnow(),
    }
    await transactions.run(lambda connection: connection.execute(insert(ModelFit), values))
    return ModelFit(**values)


def _histories(connection: Connection, as_of: date) -> list[tuple[date, date, int]]:
    """(first visit, last visit up to as_of, visit days) of customers seen by as_of."""
    query = select(Customer.first_visit_on, Customer.last_visit_on, Customer.visit_days).where(
        Customer.first_visit_on.is_not(None), Customer.first_visit_on <= as_of
    )
    return [
        (first, min(last, as_of), visits)
        for first, last, visits in connection.execute(query)
        if first is not None and last is not None
    ]


def current_model(connection: Connection) -> PopulationModel:
    latest = connection.execute(
        select(ModelFit).order_by(ModelFit.fitted_at.desc(), ModelFit.id.desc()).limit(1)
    ).first()
    if latest is None:
        return PopulationModel(PRIOR, "prior")
    fit = latest[0] if isinstance(latest[0], ModelFit) else latest
    return PopulationModel(
        btyd.BgNbdParams(fit.r, fit.alpha, fit.a, fit.b),
        "fit",
        fitted_at=fit.fitted_at.isoformat(),
        customers=fit.customers,
        log_likelihood=fit.log_likelihood,
    )


def score(
    state: CustomerState, params: btyd.BgNbdParams, as_of: date, horizon_days: int
) -> Scores | None:
    """The customer's scores as of a day; None before their first visit."""
    first, last = state.first_visit_on, state.last_visit_on
    if first is None or last is None or as_of < first:
        return None
    last = min(last, as_of)  # visits after as_of are unknown as of then
    x, t_x, T = [max(state.visit_days - 1, 0)], [(last - first).days], [(as_of - first).days]
    expected = float(btyd.expected_purchases(params, x, t_x, T, horizon_days)[0])
    visits = max(state.visit_days, 1)
    net_per_visit = (state.purchase_amount - state.refund_amount) / Money.SCALE / visits
    return Scores(
        p_alive=float(btyd.p_alive(params, x, t_x, T)[0]),
        p_no_purchase_within=float(btyd.p_no_purchase_within(params, x, t_x, T, horizon_days)[0]),
        expected_purchases=expected,
        # Mean of the purchase rate's posterior given alive: Gamma(r + x, alpha + T).
        expected_gap_days=float((params.alpha + T[0]) / (params.r + x[0])),
        days_since_last_visit=(as_of - last).days,
        # Interim value at risk: the customer's average net spend per visit times the visits
        # expected over the horizon (a Gamma-Gamma spend model will refine the first factor).
        value_at_risk=round(max(net_per_visit, 0.0) * expected, 2),
    )
