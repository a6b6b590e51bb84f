from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field


class CategoryTally(BaseModel):
    purchases: int
    last_bought_on: date


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
    home_store: str | None
    stores: dict[str, int] = Field(description="Purchases per store")
    categories: dict[str, CategoryTally]
    weekly: list[WeekTally] = Field(description="Weeks with activity, the last 53 weeks")


class ModelInfo(BaseModel):
    name: Literal["bg_nbd"] = "bg_nbd"
    source: Literal["prior", "fit"] = Field(
        description="'prior' until enough customers exist to fit the service's own model"
    )
    fitted_at: str | None
    customers: int | None
    r: float
    alpha: float
    a: float
    b: float


class ScoresOut(BaseModel):
    as_of: date
    horizon_days: int
    p_alive: float
    p_no_purchase_within: float = Field(description="The defection score")
    expected_purchases: float
    expected_gap_days: float | None
    days_since_last_visit: int
    value_at_risk: float


class CustomerOut(BaseModel):
    customer_id: str
    pattern: Pattern
    scores: ScoresOut | None = Field(description="None before the customer's first visit")
    model: ModelInfo
