from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.kit.params import IsoAwareDatetime, NoNul
from app.policy.schemas import Rule, Severity

Status = Literal["open", "acknowledged", "snoozed", "resolved"]
Outcome = Literal["won_back", "lost", "not_a_defection", "not_worth_retaining"]
Channel = Literal["phone", "email", "sms", "in_store", "letter", "other"]
Actor = Annotated[
    str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True), NoNul
]


class AlertOut(BaseModel):
    id: int
    customer_id: str
    rule: Rule
    status: Status
    severity: Severity = Field(description="From the value at risk and the policy's levels")
    score: float = Field(description="The size of the change, from 0 (none) to 1 (all gone)")
    value_at_risk: Decimal = Field(
        description="What this reason puts at stake: the customer's discounted value if they "
        "stay, times the share the change takes (all of it for inactivity, the lost visits' "
        "or spend's share, the lapsed category's share of purchases)"
    )
    store_id: str | None = Field(description="The customer's home store when evaluated")
    evidence: dict[str, Any] = Field(
        description="The numbers behind the rule's verdict: `summary` in plain words, the "
        "test's `p_value` and the `significance` it had to reach, and the rule's own numbers"
    )
    policy_version: int
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    resolution: str | None = Field(
        description="customer_returned, condition_cleared, policy_changed or "
        "explained_by_inactivity (the customer went silent: that alert speaks for them) when "
        "resolved automatically; the outcome when a person resolved it"
    )
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    snoozed_until: datetime | None = None
    resolved_by: str | None = None
    reason: str | None = Field(default=None, description="Why the customer left (or came back)")
    note: str | None = None
    contact_channel: str | None = None
    escalated_at: datetime | None = Field(
        default=None, description="When it was announced again for want of a resolution"
    )
    assigned_to: str | None = Field(default=None, description="Who is to call the customer")
    arm: Literal["contact", "control"] | None = Field(
        default=None,
        description="The outreach experiment's arm of the case (policy `holdout`): control "
        "cases are tracked but never to be called; null when no holdout was set",
    )
    case_id: int | None = Field(
        default=None,
        description="The alert that opened the customer's case (null on alerts older than it)",
    )
    plan_id: int | None = Field(
        default=None,
        description="The plan (GET /v1/plans/{id}) that resolving it with a reason opened or "
        "joined: the policy's playbook for that reason; null when none",
    )


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")
    has_more: bool


class CaseOut(BaseModel):
    """One customer to call: every unresolved alert of theirs, the strongest reason first."""

    customer_id: str
    store_id: str | None = Field(description="The customer's home store")
    rule: Rule = Field(description="The strongest reason: the alert with most at stake")
    summary: str | None = Field(description="The strongest reason in plain words")
    severity: Severity = Field(description="The strongest reason's")
    value_at_risk: Decimal = Field(description="The strongest reason's value at stake")
    opened_at: datetime = Field(description="When the oldest of the alerts opened")
    alerts: list[AlertOut] = Field(description="The strongest first, then the supporting ones")


class CasePage(BaseModel):
    items: list[CaseOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")
    has_more: bool


class AlertEventOut(BaseModel):
    seq: int = Field(description="Commit-ordered: follow the feed with after=<last seq>")
    type: Literal[
        "alert.opened",
        "alert.updated",
        "alert.acknowledged",
        "alert.snoozed",
        "alert.escalated",
        "alert.assigned",
        "alert.noted",
        "alert.resolved",
        "model.degraded",
    ]
    alert_id: int | None = Field(description="Null for model.degraded, which concerns no alert")
    customer_id: str | None
    occurred_at: datetime
    actor: str | None = Field(description="Who did it; null when the service did")
    alert: AlertOut | None = Field(description="The alert as it was after the change")
    model_quality: dict[str, Any] | None = Field(
        default=None,
        description="model.degraded: the week, what dropped and what to do "
        "(GET /v1/reports/model-quality)",
    )


class AlertChanges(BaseModel):
    events: list[AlertEventOut]
    next_cursor: int = Field(description="The `after` of the next poll")
    has_more: bool


class CustomerSummary(BaseModel):
    customer_id: str
    first_visit_on: date | None
    last_visit_on: date | None
    visit_days: int
    home_store: str | None
    segment: str | None
    net_spend: Decimal


class AlertDetail(BaseModel):
    alert: AlertOut
    customer: CustomerSummary | None
    history: list[AlertEventOut] = Field(description="Every change of the alert, oldest first")


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Actor | None = Field(default=None, description="Who does it (default: the API key's name)")


class AcknowledgeIn(_Action):
    pass


class SnoozeIn(_Action):
    until: IsoAwareDatetime = Field(description="When the alert comes back to the open queue")


class AssignIn(_Action):
    to: Actor | None = Field(description="Who is to call the customer (null: nobody)")


class NoteIn(_Action):
    text: Annotated[
        str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True), NoNul
    ] = Field(description="What was said or done; kept in the alert's history")


class ResolveIn(_Action):
    outcome: Outcome
    reason: Annotated[str, StringConstraints(min_length=1, max_length=64), NoNul] | None = Field(
        default=None,
        description="Required for won_back and lost: one of the configured reasons",
    )
    note: Annotated[str, StringConstraints(max_length=2000), NoNul] | None = None
    channel: Channel | None = Field(default=None, description="How the customer was contacted")
