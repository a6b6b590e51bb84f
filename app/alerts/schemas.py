from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.policy.schemas import Rule, Severity


class AlertOut(BaseModel):
    id: int
    customer_id: str
    rule: Rule
    status: Literal["open", "resolved"]
    severity: Severity = Field(description="From the value at risk and the policy's levels")
    score: float = Field(description="How far the rule is crossed, from 0 to 1")
    value_at_risk: Decimal = Field(description="Discounted expected future value")
    store_id: str | None = Field(description="The customer's home store when evaluated")
    evidence: dict[str, Any] = Field(description="The numbers behind the rule's verdict")
    policy_version: int
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    resolution: str | None = Field(
        description="customer_returned, condition_cleared or policy_changed when resolved "
        "automatically"
    )
