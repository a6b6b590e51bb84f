"""Ingestion: validate, deduplicate and durably store purchase events.

One code path serves the single-event endpoint, the batch endpoint and (later) imports, so
that every entry point applies the same rules.
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
from sqlalchemy.ext.asyncio import AsyncSession

from app.ingestion import repository
from app.ingestion.schemas import (
    BatchResult,
    EventResult,
    ItemError,
    ItemStatus,
    PurchaseEventIn,
)
from app.kit.errors import json_pointer

EVENT_ADAPTER: TypeAdapter[PurchaseEventIn] = TypeAdapter(PurchaseEventIn)
# Validating the whole body in one call avoids building Python dicts first; it is the fast
# path for the common case where every event is valid.
_EVENT_LIST_ADAPTER: TypeAdapter[dict[str, list[PurchaseEventIn]]] = TypeAdapter(
    dict[str, list[PurchaseEventIn]]
)


@dataclass(slots=True)
class Candidate:
    """One submitted event: parsed, or the reasons it could not be."""

    index: int
    event_id: str | None
    event: PurchaseEventIn | None = None
    errors: list[ItemError] = field(default_factory=list)


class BatchEnvelopeError(Exception):
    """The batch body is not `{"events": [...]}` at all (as opposed to a bad event in it)."""

    def __init__(self, code: str, message: str, pointer: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.pointer = pointer


def _item_errors(error: ValidationError, *prefix: str | int) -> list[ItemError]:
    return [
        ItemError(pointer=json_pointer(*prefix, *e["loc"]), code=e["type"], message=e["msg"])
        for e in error.errors(include_url=False)
    ]


def parse_batch(body: bytes, max_events: int) -> list[Candidate]:
    """Split a batch body into candidates; raises BatchEnvelopeError for a bad envelope."""
    try:
        parsed = _EVENT_LIST_ADAPTER.validate_json(body)
    except ValidationError:
        return _parse_batch_slowly(body, max_events)
    if set(parsed) != {"events"}:
        return _parse_batch_slowly(body, max_events)
    events = parsed["events"]
    _check_count(len(events), max_events)
    return [Candidate(i, e.event_id, e) for i, e in enumerate(events)]


def _check_count(count: int, max_events: int) -> None:
    if count == 0:
        raise BatchEnvelopeError("empty_batch", "events must hold at least one event", "/events")
    if count > max_events:
        raise BatchEnvelopeError(
            "too_many_events", f"a batch holds at most {max_events} events, got {count}", "/events"
        )


def _parse_batch_slowly(body: bytes, max_events: int) -> list[Candidate]:
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
    return [_candidate(i, raw) for i, raw in enumerate(document["events"])]


def _candidate(index: int, raw: Any) -> Candidate:
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    try:
        event = EVENT_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        safe_id = event_id if isinstance(event_id, str) and len(event_id) <= 128 else None
        return Candidate(index, safe_id, errors=_item_errors(exc, "events", index))
    return Candidate(index, event.event_id, event)


def _decimal_text(value: Decimal) -> str:
    # normalize() drops trailing zeros so that "12.50" and 12.5 are the same content.
    return format(value.normalize(), "f")


def to_row(event: PurchaseEventIn, received_at: datetime) -> dict[str, Any]:
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
    row: dict[str, Any] = {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "store_id": event.store_id,
        "kind": event.kind.value,
        "occurred_at": event.occurred_at,
        "amount": event.amount.normalize(),
        "currency": str(event.currency),
        "refunds_event_id": event.refunds_event_id,
        "staff_id": event.staff_id,
        "items": items,
        "attributes": event.attributes,
    }
    row["content_hash"] = content_hash(row)
    row["received_at"] = received_at
    return row


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_HASHED_FIELDS = (
    "event_id",
    "customer_id",
    "store_id",
    "kind",
    "occurred_at",
    "amount",
    "currency",
    "refunds_event_id",
    "staff_id",
    "items",
    "attributes",
)


def content_hash(row: dict[str, Any]) -> bytes:
    """Digest of what the client said, independent of formatting, key order and offsets."""
    canonical = [row[name] for name in _HASHED_FIELDS]
    canonical[4] = (row["occurred_at"] - _EPOCH) // _MICROSECOND  # exact, unlike timestamp()
    canonical[5] = _decimal_text(row["amount"])
    encoded = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(encoded, digest_size=16).digest()


def _pointer(prefix: tuple[str | int, ...], index: int, name: str) -> str:
    """Pointer to a field of event `index`; a single-event body has no prefix and no index."""
    return json_pointer(*prefix, index, name) if prefix else json_pointer(name)


def _reject(candidate: Candidate, pointer: str, code: str, message: str) -> None:
    candidate.errors.append(ItemError(pointer=pointer, code=code, message=message))


async def store_events(
    session: AsyncSession,
    candidates: Sequence[Candidate],
    *,
    received_at: datetime,
    max_future_skew: timedelta,
    pointer_prefix: tuple[str | int, ...] = ("events",),
) -> BatchResult:
    """Store every valid, new candidate; report each one as accepted, duplicate or rejected.

    Does not commit: the caller's unit of work does, before it answers.
    """
    latest_allowed = received_at + max_future_skew
    rows: dict[str, dict[str, Any]] = {}
    first_index: dict[str, int] = {}
    status: dict[int, ItemStatus] = {}
    repeats: list[Candidate] = []  # identical re-sends of an event earlier in this batch
    for candidate in candidates:
        event = candidate.event
        if event is None:
            continue
        if event.occurred_at > latest_allowed:
            _reject(
                candidate,
                _pointer(pointer_prefix, candidate.index, "occurred_at"),
                "future_timestamp",
                f"occurred_at is more than {int(max_future_skew.total_seconds())} s "
                "in the future; check the till's clock",
            )
            continue
        row = to_row(event, received_at)
        earlier = rows.get(event.event_id)
        if earlier is None:
            rows[event.event_id] = row
            first_index[event.event_id] = candidate.index
        elif earlier["content_hash"] == row["content_hash"]:
            repeats.append(candidate)
        else:
            _reject(
                candidate,
                _pointer(pointer_prefix, candidate.index, "event_id"),
                "event_id_conflict",
                f"event_id {event.event_id!r} appears earlier in this batch "
                f"(index {first_index[event.event_id]}) with different content",
            )

    inserted = await repository.insert_new_events(session, list(rows.values()))
    existing = await repository.stored_hashes(session, [e for e in rows if e not in inserted])
    for candidate in candidates:
        event = candidate.event
        if event is None or candidate.errors or first_index.get(event.event_id) != candidate.index:
            continue
        if event.event_id in inserted:
            status[candidate.index] = ItemStatus.ACCEPTED
        elif existing.get(event.event_id) == rows[event.event_id]["content_hash"]:
            status[candidate.index] = ItemStatus.DUPLICATE
        else:
            _reject(
                candidate,
                _pointer(pointer_prefix, candidate.index, "event_id"),
                "event_id_conflict",
                f"event_id {event.event_id!r} was already stored with different content",
            )
    by_index = {candidate.index: candidate for candidate in candidates}
    for candidate in repeats:
        assert candidate.event is not None
        first = by_index[first_index[candidate.event.event_id]]
        if first.errors:  # the first copy conflicts with the stored event, so does this one
            pointer = _pointer(pointer_prefix, candidate.index, "event_id")
            _reject(candidate, pointer, "event_id_conflict", first.errors[0].message)
        else:
            status[candidate.index] = ItemStatus.DUPLICATE
    return _summarise(candidates, status)


def _summarise(candidates: Sequence[Candidate], status: dict[int, ItemStatus]) -> BatchResult:
    results = []
    counts = dict.fromkeys(ItemStatus, 0)
    for candidate in candidates:
        item_status = ItemStatus.REJECTED if candidate.errors else status[candidate.index]
        counts[item_status] += 1
        results.append(
            EventResult(
                index=candidate.index,
                event_id=candidate.event_id,
                status=item_status,
                errors=candidate.errors or None,
            )
        )
    return BatchResult(
        accepted=counts[ItemStatus.ACCEPTED],
        duplicates=counts[ItemStatus.DUPLICATE],
        rejected=counts[ItemStatus.REJECTED],
        results=results,
    )
