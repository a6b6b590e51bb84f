from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from app.alerts.schemas import AlertOut


class CategoryTally(BaseModel):
    purchases: int
    last_bought_on: date
    first_bought_on: date | None = Field(description="None for tallies kept before 0.2")


class WeekTally(BaseModel):
    week_starting: date
    visits: int
    net_amount: Decimal


class Pattern(BaseModel):
    first_visit_on: date | None
    last_visit_on: date | None
    visit_days: int
    purchases: int
    refunds: int
    purchase_amount: Decimal
    refund_amount: Decimal
    first_visit_amount: Decimal = Field(description="Purchases on the first visit day")
    home_store: str | None
    segment: str | None = Field(description="From the events' attributes.segment")
    home_staff: str | None = Field(description="The staff member who served them most")
    stores: dict[str, int] = Field(description="Purchases per store")
    categories: dict[str, CategoryTally]
    weekly: list[WeekTally] = Field(description="Weeks with activity, the last 53 weeks")


class SpendModelInfo(BaseModel):
    name: Literal["gamma_gamma"] = "gamma_gamma"
    customers: int | None
    p: float
    q: float
    gamma: float


class ModelInfo(BaseModel):
    name: Literal["pareto_nbd"] = "pareto_nbd"
    source: Literal["prior", "fit"] = Field(
        description="'prior' until enough customers exist to fit the service's own model"
    )
    fitted_at: str | None
    customers: int | None
    r: float = Field(description="Purchase rate ~ Gamma(r, alpha), per day")
    alpha: float
    s: float = Field(description="Drop-out rate ~ Gamma(s, beta), per day")
    beta: float
    spend: SpendModelInfo | None = Field(
        description="None until enough repeat customers: each customer's own mean spend is used"
    )


class ScoresOut(BaseModel):
    as_of: date
    horizon_days: int
    p_alive: float
    p_no_purchase_within: float = Field(description="The defection score")
    expected_purchases: float
    expected_gap_days: float | None
    days_since_last_visit: int
    expected_spend_per_visit: float = Field(description="Gamma-Gamma, or the customer's mean")
    value_at_risk: float = Field(
        description="Expected spend per visit times the expected visits over the policy's "
        "value horizon, discounted"
    )


class CustomerOut(BaseModel):
    customer_id: str
    pattern: Pattern
    scores: ScoresOut | None = Field(description="None before the customer's first visit")
    model: ModelInfo
    next_check_at: datetime | None = Field(
        description="When the rules look at this customer again if no event comes"
    )
    alerts: list[AlertOut] = Field(description="The customer's alerts, newest first (50 at most)")
    pending_events: int = Field(
        description="Events stored but not yet folded into this pattern by the scorer "
        "(usually 0: the scorer follows ingest within a second)"
    )
    pattern_updated_at: datetime | None = Field(
        description="When the scorer last folded an event into this pattern (None: not yet)"
    )
