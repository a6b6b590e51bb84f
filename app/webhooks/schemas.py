"""Webhook endpoints, deliveries and attempts as the API reads and writes them."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError

from app.kit.params import Identifier, IsoAwareDatetime, NoNul
from app.policy.schemas import Rule, Severity

EventType = Literal[
    "alert.opened",
    "alert.updated",
    "alert.acknowledged",
    "alert.snoozed",
    "alert.escalated",
    "alert.assigned",
    "alert.noted",
    "alert.resolved",
    "customer.recovered",
    "endpoint.disabled",
    "model.degraded",
]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
DeliveryStatus = Literal["pending", "sending", "succeeded", "failed"]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048, strip_whitespace=True)]
Description = Annotated[str, StringConstraints(max_length=500), NoNul]
StoreId = Identifier  # as the ingest takes it: an id with a control character matches nothing


def _iso_duration(value: Any) -> Any:
    """Pydantic would read a bare number as seconds; the document says an ISO 8601 string."""
    if not isinstance(value, str | timedelta):
        raise PydanticCustomError("duration_type", "must be an ISO 8601 duration, e.g. PT12H")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filters(_Strict):
    """Only alerts that pass every filter that is set are delivered."""

    store_ids: list[StoreId] | None = Field(
        default=None, max_length=1000, description="The customer's home store is one of these"
    )
    rules: list[Rule] | None = Field(default=None, description="The alert's rule is one of these")
    min_severity: Severity | None = None
    min_value_at_risk: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=4)
    arms: list[Literal["contact", "control"]] | None = Field(
        default=None,
        min_length=1,
        max_length=2,
        description="The outreach experiment's arms to deliver (default: contact only, so that "
        "a CRM never calls a control case; a case opened without a holdout counts as contact)",
    )


class EndpointIn(_Strict):
    url: Url = Field(description="http(s) URL; private and loopback targets are refused")
    description: Description = ""
    event_types: list[EventType] = Field(
        default=list(EVENT_TYPES), min_length=1, description="What to deliver (default: all)"
    )
    filters: Filters = Field(default_factory=Filters)
    enabled: bool = Field(default=True, strict=True)
    rate_limit: float | None = Field(
        default=None,
        gt=0,
        le=10_000,
        strict=True,
        description="At most this many deliveries per second",
    )
    ordered: bool = Field(
        default=False,
        strict=True,
        description="FIFO: deliver one message at a time, in the order they happened; a "
        "message being retried holds back the ones after it",
    )


# PATCH fields that may be left out but not set to null (rate_limit: null removes the limit).
_NOT_NULL = ("url", "description", "event_types", "filters", "enabled", "ordered")


def _not_nullable(schema: dict[str, Any]) -> None:
    """Document what the validator enforces: these fields' schemas without their null."""
    for name in _NOT_NULL:
        field = schema["properties"][name]
        options = [o for o in field.pop("anyOf", []) if o != {"type": "null"}]
        if len(options) == 1:
            field.update(options[0])
        elif options:
            field["anyOf"] = options


class EndpointPatch(_Strict):
    """Only the fields given change; `enabled: true` also clears the failure streak."""

    model_config = ConfigDict(json_schema_extra=lambda schema, _: _not_nullable(schema))

    url: Url | None = None
    description: Description | None = None
    event_types: list[EventType] | None = Field(default=None, min_length=1)
    filters: Filters | None = None
    enabled: bool | None = Field(default=None, strict=True)
    rate_limit: float | None = Field(default=None, gt=0, le=10_000, strict=True)
    ordered: bool | None = Field(default=None, strict=True)

    @field_validator(*_NOT_NULL)
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


class EndpointOut(BaseModel):
    id: int
    url: str
    description: str
    event_types: list[EventType]
    filters: Filters
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    rate_limit: float | None
    ordered: bool
    failing_since: datetime | None = Field(description="Every attempt has failed since then")
    consecutive_failures: int
    paused_until: datetime | None = Field(description="Circuit breaker: no sends until then")
    previous_secret_expires_at: datetime | None = Field(
        description="Until then the previous secret also signs (after a rotation)"
    )
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="The signing secret (`whsec_...`): shown only now")


class EndpointList(BaseModel):
    items: list[EndpointOut]


class RotateIn(_Strict):
    grace_period: Annotated[timedelta, BeforeValidator(_iso_duration)] | None = Field(
        default=None,
        description="How long the old secret keeps signing too (default 24 h, at most 7 d)",
    )


class SecretOut(BaseModel):
    secret: str
    previous_secret_expires_at: datetime | None


class DeliveryOut(BaseModel):
    id: int
    endpoint_id: int
    message_id: str = Field(description="The `webhook-id` header: the same on every attempt")
    event_type: EventType
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    last_status_code: int | None
    last_error: str | None


class AttemptOut(BaseModel):
    id: int
    delivery_id: int
    attempted_at: datetime
    duration_ms: float
    status_code: int | None
    response_body: str | None = Field(description="The start of the receiver's answer")
    error: str | None
    succeeded: bool


class DeliveryDetail(DeliveryOut):
    payload: dict[str, Any] = Field(description="The body sent")
    attempt_log: list[AttemptOut]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: int | None = Field(description="Pass as `before` for the next (older) page")


class AttemptPage(BaseModel):
    items: list[AttemptOut]
    next_cursor: int | None = Field(description="Pass as `before` for the next (older) page")


class RecoverIn(_Strict):
    since: IsoAwareDatetime = Field(description="Failed deliveries created at or after this")
    until: IsoAwareDatetime | None = Field(default=None, description="...and before this")


class Requeued(BaseModel):
    requeued: int
