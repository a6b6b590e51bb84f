"""The purchase event as POS systems send it, and the answers they get back."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_extra_types.currency_code import ISO4217

from app.kit.params import Identifier, IsoAwareDatetime, NoNul

if TYPE_CHECKING:
    from app.kit.settings import Settings

# ISO 4217 codes that are not money: "no currency" and the testing code.
NON_MONEY_CURRENCIES = frozenset({"XXX", "XTS"})


@dataclass(frozen=True, slots=True)
class EventLimits:
    """How much one event may carry (RADAR_MAX_EVENT_ITEMS, RADAR_MAX_ATTRIBUTES_BYTES,
    RADAR_MAX_ATTRIBUTES_DEPTH), passed to validation as its context: `{"limits": ...}`.
    The OpenAPI document shows the defaults."""

    items: int = 500
    attributes_bytes: int = 4096
    attributes_depth: int = 4
    currency: str = "EUR"  # RADAR_CURRENCY: the one currency amounts are kept in

    @classmethod
    def of(cls, settings: Settings) -> EventLimits:
        return cls(
            items=settings.max_event_items,
            attributes_bytes=settings.max_attributes_bytes,
            attributes_depth=settings.max_attributes_depth,
            currency=settings.currency,
        )

    def context(self) -> dict[str, Any]:
        return {"limits": self}


DEFAULT_LIMITS = EventLimits()


def _limits(info: ValidationInfo) -> EventLimits:
    limits = (info.context or {}).get("limits")
    return limits if isinstance(limits, EventLimits) else DEFAULT_LIMITS


# An occurred_at as an RFC 3339 string only: POS clocks and time zones are the main source
# of bad data, so a bare Unix time is refused, and so is anything before 1970.
Timestamp = IsoAwareDatetime
# Zero is a purchase too (a free coffee on the card is a visit); a refund must be > 0.
Amount = Annotated[
    Decimal,
    Field(ge=0, max_digits=16, decimal_places=4, allow_inf_nan=False),
]


_DECIMAL_COMMA = re.compile(r"\s*-?\d+(?:[.\s]\d{3})*,\d+\s*")


def explain(error: ErrorDetails) -> str:
    """An event's validation error, saying how to fix the mistakes integrators make most:
    a local time without its offset, a decimal comma, a refund sent as a negative amount.
    The error's type (its `code`) stays pydantic's."""
    field = error["loc"][-1] if error["loc"] else None
    kind, given = error["type"], error.get("input")
    if field == "occurred_at" and kind == "timezone_aware":
        return (
            "has no UTC offset: add one such as +01:00 or Z "
            "(e.g. 2026-11-20T18:05:00+01:00, or 2026-11-20T17:05:00Z)"
        )
    if field == "amount" and kind == "decimal_parsing" and isinstance(given, str):
        if _DECIMAL_COMMA.fullmatch(given):
            point = given.strip().replace(" ", "").replace(".", "").replace(",", ".")
            return f'"{given}" has a decimal comma: use a point: "{point}"'
        return f'{error["msg"]}: send a decimal string with a point, e.g. "42.50"'
    if field == "amount" and kind == "greater_than_equal" and len(error["loc"]) == 1:
        return (
            "must be 0 or more: send a refund as its own event with a positive amount and "
            '"kind": "refund" (and "refunds_event_id": the event_id of the purchase it reverses)'
        )
    return error["msg"]


class EventKind(StrEnum):
    PURCHASE = "purchase"
    REFUND = "refund"


class LineItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Identifier | None = None
    category: Annotated[str, StringConstraints(min_length=1, max_length=64), NoNul]
    quantity: Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=4)] = Decimal(1)
    amount: Annotated[Decimal, Field(ge=0, max_digits=16, decimal_places=4)]


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _has_nul(value: Any) -> bool:
    """PostgreSQL's JSONB refuses \\u0000 anywhere in a document."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class PurchaseEventIn(BaseModel):
    """One purchase or refund, keyed by the client's own `event_id`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "event_id": "till-12:2026-11-20:000123",
                    "customer_id": "card-4410",
                    "store_id": "store-7",
                    "occurred_at": "2026-11-20T18:05:00+01:00",
                    "amount": "42.50",
                    "currency": "EUR",
                    "kind": "purchase",
                    "items": [{"sku": "A-1", "category": "bakery", "quantity": 2, "amount": "5"}],
                }
            ]
        },
    )

    event_id: Identifier = Field(description="The client's id for this event, unique forever")
    customer_id: Identifier = Field(description="Loyalty card or customer id")
    store_id: Identifier
    occurred_at: Timestamp = Field(description="When it happened (RFC 3339, with offset)")
    # (before amount: validating an amount needs the kind)
    kind: EventKind = EventKind.PURCHASE
    amount: Amount = Field(
        description="Total as a decimal string or number: >= 0 for a purchase, > 0 for a refund"
    )
    currency: ISO4217 = Field(
        description=f"ISO 4217 code: the service's one currency (RADAR_CURRENCY, default "
        f"{DEFAULT_LIMITS.currency})"
    )
    refunds_event_id: Identifier | None = Field(
        default=None, description="For a refund: the event_id of the purchase it reverses"
    )
    staff_id: Identifier | None = None
    items: list[LineItem] | None = Field(
        default=None,
        json_schema_extra={"maxItems": DEFAULT_LIMITS.items},
        description=f"At most {DEFAULT_LIMITS.items} (RADAR_MAX_EVENT_ITEMS)",
    )
    attributes: dict[str, Any] | None = Field(
        default=None,
        description=f"Free-form, at most {DEFAULT_LIMITS.attributes_bytes} bytes as JSON "
        f"(RADAR_MAX_ATTRIBUTES_BYTES) and {DEFAULT_LIMITS.attributes_depth} levels deep "
        "(RADAR_MAX_ATTRIBUTES_DEPTH)",
    )

    @field_validator("amount")
    @classmethod
    def _refunds_refund_something(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        if value == 0 and info.data.get("kind") is EventKind.REFUND:
            raise PydanticCustomError("greater_than", "a refund must be greater than 0")
        return value

    @field_validator("currency")
    @classmethod
    def _real_currency(cls, value: str, info: ValidationInfo) -> str:
        if value in NON_MONEY_CURRENCIES:
            raise PydanticCustomError(
                "currency_not_money", "{code} is not a currency of payment", {"code": value}
            )
        expected = _limits(info).currency
        if value != expected:
            # Amounts are summed per customer and across stores: EUR and JPY cannot be.
            raise PydanticCustomError(
                "currency_not_accepted",
                "this service keeps amounts in {expected} (RADAR_CURRENCY), not {code}; "
                "convert the amount before sending it",
                {"expected": expected, "code": value},
            )
        return value

    @field_validator("items")
    @classmethod
    def _bounded_items(
        cls, value: list[LineItem] | None, info: ValidationInfo
    ) -> list[LineItem] | None:
        limit = _limits(info).items
        if value is not None and len(value) > limit:
            raise PydanticCustomError(
                "too_long",
                "List should have at most {max_length} items, not {actual_length}",
                {"max_length": limit, "actual_length": len(value)},
            )
        return value

    @field_validator("attributes")
    @classmethod
    def _bounded_attributes(
        cls, value: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        if value is None:
            return None
        limits = _limits(info)
        if _depth(value) > limits.attributes_depth:
            raise PydanticCustomError(
                "attributes_too_deep",
                "must not be nested more than {depth} levels deep",
                {"depth": limits.attributes_depth},
            )
        if _has_nul(value):
            raise PydanticCustomError(
                "attributes_nul", "must not contain NUL characters (\\u0000) in keys or values"
            )
        try:
            size = len(orjson.dumps(value))
        except TypeError:  # an integer beyond 64 bits: not storable as JSON here
            raise PydanticCustomError(
                "attributes_not_json",
                "must hold only JSON values; integers must fit in 64 bits",
            ) from None
        if size > limits.attributes_bytes:
            raise PydanticCustomError(
                "attributes_too_large",
                "must not exceed {size} bytes as JSON",
                {"size": limits.attributes_bytes},
            )
        return value

    @field_validator("refunds_event_id")
    @classmethod
    def _refund_link_only_on_refunds(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("kind") is not EventKind.REFUND:
            raise PydanticCustomError(
                "refund_link_on_purchase", "is only allowed when kind is 'refund'"
            )
        return value


class BatchIn(BaseModel):
    """Documents the batch body; the endpoint validates each event on its own."""

    events: list[PurchaseEventIn] = Field(min_length=1, max_length=1000)


class ItemStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class ItemError(BaseModel):
    pointer: str = Field(description="RFC 6901 JSON pointer into the request body")
    code: str
    message: str


class EventResult(BaseModel):
    index: int
    event_id: str | None
    status: ItemStatus
    errors: list[ItemError] | None = None


class SingleResult(BaseModel):
    event_id: str
    status: Literal[ItemStatus.ACCEPTED, ItemStatus.DUPLICATE]


class BatchResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult] = Field(description="One per submitted event, in request order")
