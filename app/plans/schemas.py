from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.kit.params import NoNul
from app.policy.playbooks import Owner

PlanStatus = Literal["open", "done", "cancelled"]
Actor = Annotated[
    str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True), NoNul
]


class PlanOut(BaseModel):
    id: int
    customer_id: str
    reason: str = Field(description="The reason the customer gave, which chose the playbook")
    action: str = Field(description="What to do (the playbook's, when the plan opened)")
    owner: Owner
    store_id: str | None = Field(description="The store of the alert that opened it")
    alert_id: int = Field(description="The resolved alert that opened it")
    opened_by: str
    opened_at: datetime
    follow_up_on: date = Field(description="The day by which it is to be done")
    status: PlanStatus
    closed_at: datetime | None
    closed_by: str | None
    note: str | None = Field(description="Written when it was done or cancelled")
    policy_version: int = Field(description="The policy whose playbook it follows")
    customer_returned_on: date | None = Field(
        description="The customer's first visit day after the day the plan opened; null "
        "while they have not come back"
    )


class PlanPage(BaseModel):
    items: list[PlanOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")
    has_more: bool


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Actor | None = Field(default=None, description="Who does it (default: the API key's name)")
    note: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True), NoNul
        ]
        | None
    ) = Field(default=None, description="What was done, or why not")
