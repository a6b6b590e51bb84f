"""The defection policy: what this business calls defection, as validated data.

Every field has a default that works out of the box; the README explains each one. A policy
is replaced whole (PUT), never patched, so a stored version always reads the same.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.kit.params import NoNul
from app.policy.playbooks import DEFAULT_PLAYBOOKS, Playbooks

Name = Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]
Rule = Literal["inactivity", "frequency_drop", "spend_drop", "category_lapse"]
RULES: tuple[Rule, ...] = get_args(Rule)
Severity = Literal["low", "medium", "high"]


class _Strict(BaseModel):
    # strict: `false` is not a number nor "1" a boolean here (JSON types as documented).
    # allow_inf_nan: JSON bodies are read by a parser that takes Infinity and NaN, which the
    # stored policy (JSON) could not hold: it would come back as null and fail every read.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# The largest amount a threshold may name: as much as the money columns hold, 10^14.
MAX_AMOUNT = 1e14


class _Rule(_Strict):
    enabled: bool = True
    share: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="This rule's share of the false-alarm budget, relative to the other "
        "enabled rules' shares: a larger share makes it more sensitive",
    )


class Inactivity(_Rule):
    """Fires when the customer's silence is too long to be chance given their own rhythm:
    P(no visit for this long | their visit rate, its uncertainty and their regularity) falls
    to the rule's part of the false-alarm budget."""

    share: float = Field(
        default=2.5,
        gt=0,
        le=100,
        description="Share of the false-alarm budget (2.5 of 7.5 by default: a stop loses "
        "the whole customer)",
    )
    min_days: int = Field(
        default=14, ge=1, le=3650, description="Never fire before this many silent days"
    )


class FrequencyDrop(_Rule):
    """Fires when the customer still comes, but their visit rate fell: the visits of the
    last 4 to 26 complete weeks against the whole history before, a test of two
    Poisson rates scaled by the dispersion of the customer's own gaps, corrected for the
    windows tried."""

    share: float = Field(
        default=3.0,
        gt=0,
        le=100,
        description="Share of the false-alarm budget (3 of 7.5 by default: a slower rhythm "
        "is the hardest change to see, and the test needs the most room)",
    )
    max_ratio: float = Field(
        default=0.7,
        gt=0,
        lt=1,
        description="Never fire for a smaller fall than this ratio of recent to earlier "
        "visits per week, however sure (0.7: a customer who now comes half as often is "
        "caught despite noise; a 10 % dip is not worth a call)",
    )


class SpendDrop(_Rule):
    """Fires when the customer still comes but spends less per visit: the log of spend per
    visit in the last 4, 8, 13, 17, 21 or 26 complete weeks against the weeks kept before, with the
    customer's own variability, corrected for the windows tried."""

    max_ratio: float = Field(
        default=0.7,
        gt=0,
        lt=1,
        description="Never fire for a smaller fall than this ratio of recent to earlier "
        "spend per visit (geometric means)",
    )
    min_recent_visits: int = Field(default=3, ge=1, le=100)
    min_baseline_visits: int = Field(default=6, ge=2, le=1000)


class CategoryLapse(_Rule):
    """Fires when a customer who keeps visiting stopped buying a category they bought
    often: P(this many visits in a row without it | the share of their visits that
    included it, and its uncertainty), corrected for the number of habits tested."""

    min_purchases: int = Field(
        default=4, ge=2, le=1000, description="Purchases in the category to count it as habit"
    )
    min_days: int = Field(
        default=14, ge=1, le=3650, description="Never fire before this many days without it"
    )
    min_visits_since: int = Field(
        default=2, ge=1, le=100, description="Never fire before this many visits without it"
    )


class Rules(_Strict):
    inactivity: Inactivity = Field(default_factory=Inactivity)
    frequency_drop: FrequencyDrop = Field(default_factory=FrequencyDrop)
    spend_drop: SpendDrop = Field(default_factory=SpendDrop)
    category_lapse: CategoryLapse = Field(default_factory=CategoryLapse)

    def significance(self, budget: FalseAlarms) -> dict[Rule, float]:
        """Each enabled rule's false-alarm probability at any one moment: its share of the
        budget."""
        enabled = {name: getattr(self, name) for name in RULES if getattr(self, name).enabled}
        total = sum(rule.share for rule in enabled.values())
        return {
            name: budget.per_100_customers / 100 * rule.share / total
            for name, rule in enabled.items()
        }


class FalseAlarms(_Strict):
    """How many alerts the business accepts for loyal customers whose pattern did not change.

    Each rule is a test of "this customer's own pattern changed" whose false-alarm
    probability at any moment is its share of this budget (corrected within the rule for
    the several windows or categories it tries), so at any moment on average at most
    `per_100_customers` of 100 unchanged loyal customers have an open alert, as far as
    their visits follow the tests' models. Holidays and other breaks from a customer's
    rhythm that are not defections add to it: the synthetic chain's measured figure is in
    the README.
    """

    per_100_customers: float = Field(
        default=5.0,
        gt=0,
        le=50,
        description="Open alerts per 100 unchanged loyal customers at any moment, at most",
    )


class Loyalty(_Strict):
    """Who counts as a loyal customer: only they can defect."""

    min_visits: int = Field(default=4, ge=1, le=10_000, description="Visit days so far")
    min_tenure_days: int = Field(
        default=60, ge=0, le=3650, description="Days since the first visit"
    )
    lost_after_days: int | None = Field(
        default=365,
        ge=30,
        le=3650,
        description="Customers silent for longer than this are already lost: counted in the "
        "reports, not opened as calls (a history import would otherwise open one for "
        "everyone who left years ago); null: no such age",
    )


class Exclusions(_Strict):
    stores: list[Name] = Field(default_factory=list, max_length=10_000)
    segments: list[Name] = Field(
        default_factory=list, max_length=1000, description="Matched with attributes.segment"
    )
    customers: list[Name] = Field(default_factory=list, max_length=10_000)


class SeverityLevels(_Strict):
    """Severity is the value at stake: the order in which to call customers back."""

    medium_value_at_risk: float = Field(default=100, ge=0, le=MAX_AMOUNT)
    high_value_at_risk: float = Field(default=500, ge=0, le=MAX_AMOUNT)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.medium_value_at_risk > self.high_value_at_risk:
            raise ValueError("medium_value_at_risk must not exceed high_value_at_risk")
        return self


class ValueModel(_Strict):
    horizon_days: int = Field(default=365, ge=30, le=3650, description="Future value window")
    annual_discount_rate: float = Field(default=0.10, ge=0, le=1)


Question = Annotated[str, StringConstraints(min_length=1, max_length=300), NoNul]
QuestionList = Annotated[list[Question], Field(max_length=20)]


class Questions(_Strict):
    """What to ask a customer on the call, per kind of defection: the call list shows them
    beside each case, so that every caller asks the same things and the answers are
    comparable."""

    inactivity: QuestionList = Field(
        default=[
            "We have not seen you for a while: is everything all right?",
            "Was there something about your last visit that disappointed you?",
            "Are you shopping somewhere else now? What do they do better?",
        ]
    )
    frequency_drop: QuestionList = Field(
        default=[
            "You come less often than you used to: what changed?",
            "Is there a time or a store that would suit you better?",
            "Is there something we could do that would bring you back as often as before?",
        ]
    )
    spend_drop: QuestionList = Field(
        default=[
            "You buy less with us than before: is there something you now buy elsewhere?",
            "How do our prices compare with where you buy it now?",
            "Did you miss a product or a service on your last visits?",
        ]
    )
    category_lapse: QuestionList = Field(
        default=[
            "You used to buy this from us: where do you buy it now, and why?",
            "Was there a problem with the product or its availability?",
            "What would make you buy it from us again?",
        ]
    )


class Outreach(_Strict):
    """How the effect of calling customers is measured: what happened to each case, contact
    and control alike, in the days after it opened."""

    window_days: int = Field(
        default=60,
        ge=7,
        le=365,
        description="Days after a case opens in which a return counts, and its spend is summed",
    )
    minimum_effect: float = Field(
        default=0.05,
        ge=0.005,
        le=1,
        description="The smallest rise in the return rate worth seeing (0.05: 5 points): the "
        "report says how many cases it takes to see it",
    )


class ModelQuality(_Strict):
    """When the defection score counts as degraded, judged on the latest week whose horizon
    has passed (GET /v1/reports/model-quality)."""

    max_calibration_error: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Degraded when the week's mean predicted P(no purchase) is further than "
        "this from the share of customers who really did not buy",
    )
    min_customers: int = Field(
        default=200,
        ge=1,
        le=10_000_000,
        description="Weeks with fewer loyal customers than this are not judged",
    )


class PolicyBody(_Strict):
    """The definition of defection. Omitted fields take their defaults."""

    horizon_days: int = Field(
        default=90, ge=7, le=730, description="Horizon of the defection score P(no purchase)"
    )
    loyalty: Loyalty = Field(default_factory=Loyalty)
    min_value_at_risk: float = Field(
        default=0, ge=0, le=MAX_AMOUNT, description="Customers worth less than this raise no alert"
    )
    exclusions: Exclusions = Field(default_factory=Exclusions)
    rules: Rules = Field(default_factory=Rules)
    false_alarms: FalseAlarms = Field(default_factory=FalseAlarms)
    severity: SeverityLevels = Field(default_factory=SeverityLevels)
    value: ValueModel = Field(default_factory=ValueModel)
    questions: Questions = Field(default_factory=Questions)
    holdout: float = Field(
        default=0.0,
        ge=0,
        le=0.5,
        description="Share of new cases held out as a control group: tracked like the others, "
        "never on the call list, so that the effect of calling can be measured (0: off; else "
        "from 0.01; 0.1 is a usual choice)",
    )
    outreach: Outreach = Field(default_factory=Outreach)

    @field_validator("holdout")
    @classmethod
    def _holdout_or_none(cls, share: float) -> float:
        # A control group of a few cases in ten thousand would never be large enough to
        # tell anything, and would take years to fill: 0 (none) or at least 1 %.
        if 0 < share < 0.01:
            raise ValueError("must be 0 (no control group) or from 0.01 to 0.5")
        return share

    model_quality: ModelQuality = Field(default_factory=ModelQuality)
    playbooks: Playbooks = Field(default_factory=lambda: dict(DEFAULT_PLAYBOOKS))


class PolicyOut(PolicyBody):
    version: int = Field(description="0 for the built-in defaults, then 1, 2, ...")
    source: Literal["default", "api", "file"]
    created_by: str | None = None
    created_at: datetime | None = None
