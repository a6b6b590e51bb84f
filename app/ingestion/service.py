"""Ingestion: validate, deduplicate and durably store purchase events.

One code path serves the single-event endpoint, the batch endpoint and (later) imports, so
that every entry point applies the same rules: `parse_*` turns a body into candidates and
`store_events` decides, inside the caller's transaction, what each candidate became.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection

from app.ingestion import repository
from app.ingestion.repository import EventRow
from app.ingestion.schemas import (
    DEFAULT_LIMITS,
    EventLimits,
    ItemStatus,
    PurchaseEventIn,
    explain,
)
from app.kit.db import Money
from app.kit.errors import json_pointer

EVENT_ADAPTER: TypeAdapter[PurchaseEventIn] = TypeAdapter(PurchaseEventIn)
# Validating the whole body in one call avoids building Python dicts first; it is the fast
# path for the common case where every event is valid.
_EVENT_LIST_ADAPTER: TypeAdapter[dict[str, list[PurchaseEventIn]]] = TypeAdapter(
    dict[str, list[PurchaseEventIn]]
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(slots=True, eq=False)
class Candidate:
    """One submitted event: parsed or not, and, once stored, what became of it.

    `pointer` locates the event in its request body ("" for a single-event body), so that
    errors name the field exactly even when events from several requests are stored together.
    """

    index: int
    event_id: str | None
    pointer: str
    event: PurchaseEventIn | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    status: ItemStatus | None = None
    origin: int = 0  # which request it came from, when several are stored together

    def reject(self, name: str, code: str, message: str) -> None:
        pointer = f"{self.pointer}/{name}" if name else self.pointer
        self.errors.append({"pointer": pointer, "code": code, "message": message})


class BatchEnvelopeError(Exception):
    """The batch body is not `{"events": [...]}` at all (as opposed to a bad event in it)."""

    def __init__(self, code: str, message: str, pointer: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.pointer = pointer


def validation_errors(error: ValidationError, pointer: str = "") -> list[dict[str, str]]:
    return [
        {"pointer": pointer + json_pointer(*e["loc"]), "code": e["type"], "message": explain(e)}
        for e in error.errors(include_url=False)
    ]


def parse_single(body: bytes, limits: EventLimits = DEFAULT_LIMITS) -> Candidate:
    """Raises ValidationError: a single event is all or nothing."""
    event = EVENT_ADAPTER.validate_json(body, context=limits.context())
    return Candidate(0, event.event_id, "", event)


def parse_batch(
    body: bytes, max_events: int, limits: EventLimits = DEFAULT_LIMITS
) -> list[Candidate]:
    """Split a batch body into candidates; raises BatchEnvelopeError for a bad envelope."""
    try:
        parsed = _EVENT_LIST_ADAPTER.validate_json(body, context=limits.context())
    except ValidationError:
        return _parse_batch_slowly(body, max_events, limits)
    if set(parsed) != {"events"}:
        return _parse_batch_slowly(body, max_events, limits)
    events = parsed["events"]
    _check_count(len(events), max_events)
    return [Candidate(i, e.event_id, f"/events/{i}", e) for i, e in enumerate(events)]


def _check_count(count: int, max_events: int) -> None:
    if count == 0:
        raise BatchEnvelopeError("empty_batch", "events must hold at least one event", "/events")
    if count > max_events:
        raise BatchEnvelopeError(
            "too_many_events", f"a batch holds at most {max_events} events, got {count}", "/events"
        )


def _parse_batch_slowly(body: bytes, max_events: int, limits: EventLimits) -> list[Candidate]:
    """Validate event by event, so that one bad event does not sink the others."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BatchEnvelopeError("malformed_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise BatchEnvelopeError(
            "validation_error", "the body must be an object with an 'events' array", "/events"
        )
    unknown = sorted(set(document) - {"events"})
    if unknown:
        raise BatchEnvelopeError(
            "validation_error", f"unknown top-level field {unknown[0]!r}", json_pointer(unknown[0])
        )
    _check_count(len(document["events"]), max_events)
    return [_candidate(i, raw, limits) for i, raw in enumerate(document["events"])]


def _candidate(index: int, raw: Any, limits: EventLimits) -> Candidate:
    pointer = f"/events/{index}"
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    try:
        event = EVENT_ADAPTER.validate_python(raw, context=limits.context())
    except ValidationError as exc:
        safe_id = event_id if isinstance(event_id, str) and len(event_id) <= 128 else None
        return Candidate(index, safe_id, pointer, errors=validation_errors(exc, pointer))
    return Candidate(index, event.event_id, pointer, event)


def _decimal_text(value: Decimal) -> str:
    # normalize() drops trailing zeros so that "12.50" and 12.5 are the same content.
    return format(value.normalize(), "f")


def to_row(event: PurchaseEventIn, received_at: datetime) -> EventRow:
    """The stored form of an event, with the digest that tells duplicates from conflicts."""
    items = (
        [
            {
                "sku": item.sku,
                "category": item.category,
                "quantity": _decimal_text(item.quantity),
                "amount": _decimal_text(item.amount),
            }
            for item in event.items
        ]
        if event.items is not None
        else None
    )
    occurred_at = event.occurred_at.astimezone(UTC)
    amount = int(event.amount * Money.SCALE)  # exact: at most four decimal places
    currency = str(event.currency)
    canonical = orjson.dumps(
        [
            event.event_id,
            event.customer_id,
            event.store_id,
            event.kind.value,
            (occurred_at - _EPOCH) // _MICROSECOND,
            amount,
            currency,
            event.refunds_event_id,
            event.staff_id,
            items,
            event.attributes,
        ],
        option=orjson.OPT_SORT_KEYS,
    )
    return EventRow(
        event_id=event.event_id,
        customer_id=event.customer_id,
        store_id=event.store_id,
        kind=event.kind.value,
        occurred_at=occurred_at,
        occurred_on=event.occurred_at.date(),  # the day where it happened, by its own offset
        received_at=received_at,
        amount=amount,
        currency=currency,
        refunds_event_id=event.refunds_event_id,
        staff_id=event.staff_id,
        items=None if items is None else orjson.dumps(items).decode(),
        attributes=None if event.attributes is None else orjson.dumps(event.attributes).decode(),
        content_hash=hashlib.blake2b(canonical, digest_size=16).digest(),
    )


@dataclass(slots=True)
class StorePlan:
    """What to write: the first copy of each event_id, its row, and the identical repeats."""

    candidates: Sequence[Candidate]
    firsts: dict[str, Candidate]
    rows: dict[str, EventRow]
    repeats: list[Candidate]


def store_events(
    connection: Connection,
    candidates: Sequence[Candidate],
    *,
    received_at: datetime,
    max_future_skew: timedelta,
) -> None:
    """Store every valid, new candidate and set each one's status.

    Candidates may come from several requests (group commit); an event_id sent twice among
    them is stored once, exactly as if the requests had arrived one after the other. Does not
    commit: the caller's unit of work does, before anyone is answered.
    """
    plan = plan_store(candidates, received_at=received_at, max_future_skew=max_future_skew)
    apply_plan(connection, plan)


def plan_store(
    candidates: Sequence[Candidate], *, received_at: datetime, max_future_skew: timedelta
) -> StorePlan:
    """The CPU-bound half of storing (rows, hashes, in-batch repeats): needs no database."""
    latest_allowed = received_at + max_future_skew
    firsts: dict[str, Candidate] = {}
    rows: dict[str, EventRow] = {}
    repeats: list[Candidate] = []
    for candidate in candidates:
        event = candidate.event
        if event is None or candidate.errors:
            continue
        if event.occurred_at > latest_allowed:
            candidate.reject(
                "occurred_at",
                "future_timestamp",
                f"occurred_at is more than {int(max_future_skew.total_seconds())} s in the "
                "future; check the till's clock",
            )
            continue
        row = to_row(event, received_at)
        first = firsts.get(event.event_id)
        if first is None:
            firsts[event.event_id] = candidate
            rows[event.event_id] = row
        elif rows[event.event_id].content_hash == row.content_hash:
            repeats.append(candidate)
        else:
            same_body = first.origin == candidate.origin and candidate.pointer
            where = f"earlier in this batch (index {first.index}) " if same_body else ""
            candidate.reject(
                "event_id",
                "event_id_conflict",
                f"event_id {event.event_id!r} was sent {where}with different content",
            )
    return StorePlan(candidates, firsts, rows, repeats)


def apply_plan(connection: Connection, plan: StorePlan) -> int:
    """The database half of storing: insert what is new (queued for the scorer in the same
    statement) and decide every status. Returns how many events were inserted.

    Nothing here depends on the customers' other events: folding, scoring and alerting are
    the scorer's (app.pipeline), after the commit."""
    _check_refunds(connection, plan)
    inserted, stored = repository.insert_new_events(connection, plan.rows)
    for event_id, first in plan.firsts.items():
        if first.errors:
            continue  # refused by the refund rules, and not inserted
        if event_id in inserted:
            first.status = ItemStatus.ACCEPTED
        elif stored.get(event_id) == plan.rows[event_id].content_hash:
            first.status = ItemStatus.DUPLICATE
        else:
            first.reject(
                "event_id",
                "event_id_conflict",
                f"event_id {event_id!r} was already stored with different content",
            )
    for repeat in plan.repeats:
        first = plan.firsts[repeat.event_id or ""]
        if first.errors:  # what refused the first copy refuses this one
            error = first.errors[0]
            field_name = error["pointer"][len(first.pointer) :].lstrip("/")
            repeat.reject(field_name, error["code"], error["message"])
        else:
            repeat.status = ItemStatus.DUPLICATE
    for candidate in plan.candidates:
        if candidate.errors:
            candidate.status = ItemStatus.REJECTED
    return len(inserted)


def _check_refunds(connection: Connection, plan: StorePlan) -> None:
    """Refuse, per event, a refund of what this service does not hold as the same
    customer's purchase, or of more than is left of it. Refunds without `refunds_event_id`
    are taken as sent. The purchase must come first (in an earlier request, or anywhere in
    the same one): a refund refused because it came first is accepted when sent again."""
    refunds = sorted(
        (c for c in plan.firsts.values() if c.event and c.event.refunds_event_id),
        key=lambda c: c.event_id or "",
    )
    if not refunds:
        return
    targets = [str(c.event.refunds_event_id) for c in refunds if c.event]
    stored, refunded = repository.refund_facts(
        connection, [c.event_id or "" for c in refunds], targets
    )
    for candidate in refunds:
        if candidate.event_id in stored:
            continue  # a repeat of a stored refund: a duplicate (or a conflict), not a new one
        row = plan.rows[candidate.event_id or ""]
        target_id = str(row.refunds_event_id)
        target = stored.get(target_id) or _planned(plan, target_id)
        error = _refund_error(row, target_id, target, refunded.get(target_id, 0))
        if error is not None:
            candidate.reject(*error)
            del plan.rows[candidate.event_id or ""]
        else:
            refunded[target_id] = refunded.get(target_id, 0) + row.amount


def _planned(plan: StorePlan, event_id: str) -> repository.StoredFacts | None:
    row = plan.rows.get(event_id)
    if row is None or plan.firsts[event_id].errors:
        return None
    return repository.StoredFacts(row.customer_id, row.kind, row.amount)


def _refund_error(
    row: EventRow, target_id: str, target: repository.StoredFacts | None, refunded: int
) -> tuple[str, str, str] | None:
    if target is None:
        return (
            "refunds_event_id",
            "refund_of_unknown_event",
            f"no event {target_id!r} is stored: send the purchase before its refund",
        )
    if target.kind != "purchase":
        return ("refunds_event_id", "refund_of_refund", f"{target_id!r} is itself a refund")
    if target.customer_id != row.customer_id:
        return (
            "refunds_event_id",
            "refund_customer_mismatch",
            f"{target_id!r} is another customer's purchase",
        )
    left = target.amount - refunded
    if row.amount > left:
        return (
            "amount",
            "refund_exceeds_purchase",
            f"only {_decimal_text(Decimal(left) / Money.SCALE)} of {target_id!r} is left to refund",
        )
    return None


def summarise(candidates: Sequence[Candidate]) -> dict[str, Any]:
    """The batch answer as plain data (models per event would cost more than the insert)."""
    counts = dict.fromkeys(ItemStatus, 0)
    results: list[dict[str, Any]] = []
    for candidate in candidates:
        status = candidate.status or ItemStatus.REJECTED
        counts[status] += 1
        result: dict[str, Any] = {
            "index": candidate.index,
            "event_id": candidate.event_id,
            "status": status.value,
        }
        if candidate.errors:
            result["errors"] = candidate.errors
        results.append(result)
    return {
        "accepted": counts[ItemStatus.ACCEPTED],
        "duplicates": counts[ItemStatus.DUPLICATE],
        "rejected": counts[ItemStatus.REJECTED],
        "results": results,
    }
