"""The defection policy: what this business calls defection, as validated data.

Every field has a default that works out of the box; the README explains each one. A policy
is replaced whole (PUT), never patched, so a stored version always reads the same.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.kit.params import NoNul

Name = Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]
Rule = Literal["inactivity", "frequency_drop", "spend_drop", "category_lapse"]
RULES: tuple[Rule, ...] = get_args(Rule)
Severity = Literal["low", "medium", "high"]


class _Strict(BaseModel):
    # strict: `false` is not a number nor "1" a boolean here (JSON types as documented).
    model_config = ConfigDict(extra="forbid", strict=True)


class Inactivity(_Strict):
    """Fires when the customer is silent for too long, by either measure that is set."""

    enabled: bool = True
    score_threshold: float | None = Field(
        default=0.8,
        gt=0,
        lt=1,
        description="Fire when P(no purchase within horizon_days) reaches this; null: unused",
    )
    gap_multiple: float | None = Field(
        default=3.0,
        gt=1,
        le=100,
        description="Fire when days since the last visit reach this many times the "
        "customer's own mean gap between visits; null: unused",
    )
    min_days: int = Field(
        default=14, ge=1, le=3650, description="Never fire before this many silent days"
    )

    @model_validator(mode="after")
    def _one_measure(self) -> Self:
        if self.enabled and self.score_threshold is None and self.gap_multiple is None:
            raise ValueError("an enabled inactivity rule needs score_threshold or gap_multiple")
        return self


class _Windows(_Strict):
    recent_weeks: int = Field(
        default=8, ge=1, le=26, description="Complete weeks before the current one"
    )
    baseline_weeks: int = Field(
        default=26, ge=4, le=51, description="Complete weeks before the recent window"
    )
    max_ratio: float = Field(
        default=0.5, gt=0, lt=1, description="Fire when recent / baseline is at most this"
    )

    @model_validator(mode="after")
    def _within_a_year(self) -> Self:
        if self.recent_weeks + self.baseline_weeks > 52:
            raise ValueError("recent_weeks + baseline_weeks must be at most 52 (a year kept)")
        return self


class FrequencyDrop(_Windows):
    """Fires when visits per week fell far below the customer's own baseline, and the fall is
    unlikely to be chance (a test of two Poisson rates, scaled by the customer's own
    week-to-week dispersion), so customers who visit rarely cannot raise an alert on one
    missed visit."""

    enabled: bool = True
    max_ratio: float = Field(
        default=0.6,
        gt=0,
        lt=1,
        description="Fire when recent / baseline visits per week is at most this (0.6: a "
        "customer who now comes half as often is caught despite noise in the baseline)",
    )
    max_p_value: float = Field(
        default=0.01, gt=0, lt=0.5, description="Significance the fall must reach"
    )


class SpendDrop(_Windows):
    """Fires when the customer still comes but spends far less per visit than before."""

    enabled: bool = True
    min_recent_visits: int = Field(default=3, ge=1, le=100)
    min_baseline_visits: int = Field(default=6, ge=1, le=1000)


class CategoryLapse(_Strict):
    """Fires when a customer who keeps visiting stopped buying a category they bought often."""

    enabled: bool = True
    min_purchases: int = Field(
        default=4, ge=2, le=1000, description="Purchases in the category to count it as habit"
    )
    gap_multiple: float = Field(
        default=3.0, gt=1, le=100, description="Silence in the category, in its usual gaps"
    )
    min_days: int = Field(default=28, ge=1, le=3650)
    min_visits_since: int = Field(
        default=2, ge=1, le=100, description="Visits since the category was last bought"
    )


class Rules(_Strict):
    inactivity: Inactivity = Field(default_factory=Inactivity)
    frequency_drop: FrequencyDrop = Field(default_factory=FrequencyDrop)
    spend_drop: SpendDrop = Field(default_factory=SpendDrop)
    category_lapse: CategoryLapse = Field(default_factory=CategoryLapse)


class Loyalty(_Strict):
    """Who counts as a loyal customer: only they can defect."""

    min_visits: int = Field(default=4, ge=1, le=10_000, description="Visit days so far")
    min_tenure_days: int = Field(
        default=60, ge=0, le=3650, description="Days since the first visit"
    )


class Exclusions(_Strict):
    stores: list[Name] = Field(default_factory=list, max_length=10_000)
    segments: list[Name] = Field(
        default_factory=list, max_length=1000, description="Matched with attributes.segment"
    )
    customers: list[Name] = Field(default_factory=list, max_length=10_000)


class SeverityLevels(_Strict):
    """Severity is the value at stake: the order in which to call customers back."""

    medium_value_at_risk: float = Field(default=100, ge=0)
    high_value_at_risk: float = Field(default=500, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.medium_value_at_risk > self.high_value_at_risk:
            raise ValueError("medium_value_at_risk must not exceed high_value_at_risk")
        return self


class ValueModel(_Strict):
    horizon_days: int = Field(default=365, ge=30, le=3650, description="Future value window")
    annual_discount_rate: float = Field(default=0.10, ge=0, le=1)


class PolicyBody(_Strict):
    """The definition of defection. Omitted fields take their defaults."""

    horizon_days: int = Field(
        default=90, ge=7, le=730, description="Horizon of the defection score P(no purchase)"
    )
    loyalty: Loyalty = Field(default_factory=Loyalty)
    min_value_at_risk: float = Field(
        default=0, ge=0, description="Customers worth less than this raise no alert"
    )
    exclusions: Exclusions = Field(default_factory=Exclusions)
    rules: Rules = Field(default_factory=Rules)
    severity: SeverityLevels = Field(default_factory=SeverityLevels)
    value: ValueModel = Field(default_factory=ValueModel)


class PolicyOut(PolicyBody):
    version: int = Field(description="0 for the built-in defaults, then 1, 2, ...")
    source: Literal["default", "api", "file"]
    created_by: str | None = None
    created_at: datetime | None = None
