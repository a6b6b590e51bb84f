"""GET /v1/customers/{customer_id}: the pattern, the scores and the model behind them."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import Connection

from app.customers import repository
from app.customers.schemas import (
    CategoryTally,
    CustomerOut,
    ModelInfo,
    Pattern,
    ScoresOut,
    WeekTally,
)
from app.customers.state import CustomerState, week_start
from app.kit.auth import ReadKey
from app.kit.db import Money, TransactionRunner, utcnow
from app.kit.errors import NotFound, problem_responses
from app.scoring import service as scoring

router = APIRouter(prefix="/v1/customers", tags=["customers"], responses=problem_responses(404))


@router.get("/{customer_id}", summary="A customer's purchase pattern and defection scores")
async def get_customer(
    request: Request,
    _: ReadKey,
    customer_id: Annotated[str, Path(min_length=1, max_length=128)],
    as_of: Annotated[
        date | None, Query(description="Score as of this day (default: today, UTC)")
    ] = None,
    horizon_days: Annotated[
        int, Query(ge=1, le=730, description="Horizon of the defection score, in days")
    ] = 90,
) -> CustomerOut:
    day = as_of or utcnow().date()
    transactions: TransactionRunner = request.app.state.transactions

    def load(connection: Connection) -> tuple[CustomerState | None, scoring.PopulationModel]:
        return repository.get_state(connection, customer_id), scoring.current_model(connection)

    state, model = await transactions.read(load)
    if state is None:
        raise NotFound(f"No purchases are stored for customer {customer_id!r}.")
    scores = scoring.score(state, model.params, day, horizon_days)
    return CustomerOut(
        customer_id=customer_id,
        pattern=_pattern(state),
        scores=None
        if scores is None
        else ScoresOut(as_of=day, horizon_days=horizon_days, **_fields(scores)),
        model=ModelInfo(
            source=model.source,
            fitted_at=model.fitted_at,
            customers=model.customers,
            r=model.params.r,
            alpha=model.params.alpha,
            a=model.params.a,
            b=model.params.b,
        ),
    )


def _fields(scores: scoring.Scores) -> dict[str, float | int | None]:
    return {name: getattr(scores, name) for name in scores.__slots__}


def _pattern(state: CustomerState) -> Pattern:
    scale = Decimal(Money.SCALE)
    return Pattern(
        first_visit_on=state.first_visit_on,
        last_visit_on=state.last_visit_on,
        visit_days=state.visit_days,
        purchases=state.purchases,
        refunds=state.refunds,
        purchase_amount=Decimal(state.purchase_amount) / scale,
        refund_amount=Decimal(state.refund_amount) / scale,
        home_store=state.home_store,
        stores=state.stores,
        categories={
            name: CategoryTally(purchases=int(tally[0]), last_bought_on=str(tally[1]))
            for name, tally in sorted(state.categories.items())
        },
        weekly=[
            WeekTally(
                week_starting=week_start(int(week)),
                visits=tally[0],
                net_amount=Decimal(tally[1]) / scale,
            )
            for week, tally in sorted(state.weekly.items(), key=lambda item: int(item[0]))
        ],
    )
