"""GET /v1/customers/{customer_id}: the pattern, the scores, the model behind them, alerts."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import Connection
from starlette.convertors import PathConvertor, register_url_convertor

from app.alerts import repository as alerts
from app.alerts.schemas import AlertOut
from app.customers import repository
from app.customers.schemas import (
    CategoryTally,
    CustomerOut,
    ModelInfo,
    Pattern,
    ScoresOut,
    SpendModelInfo,
    WeekTally,
)
from app.customers.state import CustomerState, week_start
from app.kit.auth import ReadKey
from app.kit.db import Money, TransactionRunner
from app.kit.errors import NotFound, problem_responses
from app.kit.params import Identifier, IsoDate
from app.policy import service as policies
from app.scoring import service as scoring

router = APIRouter(prefix="/v1/customers", tags=["customers"], responses=problem_responses(404))


class _IdWithSlashes(PathConvertor):
    """Starlette decodes %2F before routing, so an id holding `/` (a%2Fb) arrives as several
    segments: this takes them all, as `:path` does, but not none (/v1/customers/ is no id)."""

    regex = ".+"


register_url_convertor("id_with_slashes", _IdWithSlashes())


@router.get(
    "/{customer_id:id_with_slashes}",
    summary="A customer's pattern, defection scores and alerts",
)
async def get_customer(
    request: Request,
    _: ReadKey,
    customer_id: Annotated[Identifier, Path()],
    as_of: Annotated[
        IsoDate | None, Query(description="Score as of this day (default: today, UTC)")
    ] = None,
    horizon_days: Annotated[
        int | None,
        Query(ge=1, le=730, description="Horizon of the defection score (default: the policy's)"),
    ] = None,
) -> CustomerOut:
    found = await read_customer(
        request, customer_id, as_of or request.app.state.clock().date(), horizon_days
    )
    if found is None:
        raise NotFound(f"No purchases are stored for customer {customer_id!r}.")
    return found


async def read_customer(
    request: Request, customer_id: str, day: date, horizon_days: int | None = None
) -> CustomerOut | None:
    """The customer as the API shows them (the page shows the same); None when unknown."""
    transactions: TransactionRunner = request.app.state.transactions

    def load(connection: Connection) -> tuple[Any, ...]:
        # Pending first: a scorer committing between the two reads then leaves the pattern
        # found, never "no pattern and nothing pending" (each read sees the latest commit).
        pending = repository.pending_events(connection, customer_id)
        state = repository.get_state(connection, customer_id)
        if state is None and not pending:
            return (None,)
        return (
            state or CustomerState(customer_id),  # stored, not folded yet: an empty pattern
            pending,
            repository.updated_at(connection, customer_id) if state is not None else None,
            scoring.current_model(connection),
            policies.current(connection).body,
            alerts.for_customer(connection, customer_id),
        )

    loaded = await transactions.read(load)
    if loaded[0] is None:
        return None
    state, pending, updated_at, model, policy, history = loaded
    horizon = horizon_days or policy.horizon_days
    scores = scoring.score(
        state,
        model.params,
        day,
        horizon,
        spend=model.spend,
        value=scoring.ValueSettings(policy.value.horizon_days, policy.value.annual_discount_rate),
    )
    return CustomerOut(
        customer_id=customer_id,
        pattern=_pattern(state),
        scores=None
        if scores is None
        else ScoresOut(as_of=day, horizon_days=horizon, **_fields(scores)),
        model=_model(model),
        next_check_at=state.next_check_at,
        alerts=[AlertOut.model_validate(alert.snapshot()) for alert in history],
        pending_events=pending,
        pattern_updated_at=updated_at,
    )


def _model(model: scoring.PopulationModel) -> ModelInfo:
    spend = model.spend
    return ModelInfo(
        source=model.source,
        fitted_at=model.fitted_at,
        customers=model.customers,
        r=model.params.r,
        alpha=model.params.alpha,
        s=model.params.s,
        beta=model.params.beta,
        spend=None
        if spend is None
        else SpendModelInfo(
            customers=model.spend_customers, p=spend.p, q=spend.q, gamma=spend.gamma
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
        first_visit_amount=Decimal(state.first_visit_amount) / scale,
        home_store=state.home_store,
        segment=state.segment,
        home_staff=state.home_staff,
        stores=state.stores,
        categories={
            name: CategoryTally(
                purchases=int(tally[0]),
                last_bought_on=date.fromisoformat(str(tally[1])),
                first_bought_on=date.fromisoformat(str(tally[2])) if len(tally) > 2 else None,
            )
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
