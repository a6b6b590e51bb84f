"""Customer patterns: folded from stored events by the scorer, and rebuilt in full."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Connection

from app.customers import repository
from app.customers.state import CustomerState, EventFacts
from app.kit.db import Money, utcnow


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event just stored (or replayed by a rebuild), as the pattern needs it."""

    customer_id: str
    kind: str
    day: date
    amount: int  # 1/10,000 of the currency unit
    store_id: str
    categories: frozenset[str]
    segment: str | None = None
    staff_id: str | None = None


def fold(connection: Connection, events: Sequence[StoredEvent]) -> list[CustomerState]:
    """Fold events into their customers' patterns: the states, locked and updated in memory
    (the caller scores them and saves them with `save`, in the same transaction).

    Callers pass each stored event exactly once (the scorer's queue sees to it); the work is
    one look-up and one write per customer, whatever the history.
    """
    if not events:
        return []
    new_visits = repository.record_visit_days(connection, _visits(events))
    by_customer = _facts(events, new_visits)
    locked = repository.lock_states(connection, list(by_customer))
    return [locked[c].apply(facts) for c, facts in by_customer.items()]


def save(connection: Connection, states: Sequence[CustomerState]) -> None:
    repository.save_states(connection, states)


def rebuild(connection: Connection) -> int:
    """Recompute every customer's pattern from the stored events; returns the customer count.

    Every customer is left due, so the sweeper re-evaluates them all under the current
    policy. Holds every event's facts in memory: fine for millions of events, not billions.
    """
    repository.clear(connection)
    events = [stored_event(row) for row in repository.all_events(connection)]
    visits = set(_visits(events))
    repository.record_visit_days(connection, visits)
    states = states_from(events)
    repository.lock_states(connection, [state.customer_id for state in states])
    now = utcnow()
    for state in states:
        state.next_check_at = now
    repository.save_states(connection, states)
    return len(states)


def states_from(events: Sequence[StoredEvent]) -> list[CustomerState]:
    """Every customer's pattern, built from their events alone (nothing is read or written)."""
    by_customer = _facts(events, set(_visits(events)))
    return [CustomerState(c).apply(facts) for c, facts in by_customer.items()]


def states_as_of(connection: Connection, as_of: date) -> list[CustomerState]:
    """The patterns as they were at the end of `as_of`, from the stored events up to it."""
    events = [stored_event(row) for row in repository.all_events(connection)]
    return states_from([event for event in events if event.day <= as_of])


def _visits(events: Iterable[StoredEvent]) -> Iterator[tuple[str, date]]:
    return ((e.customer_id, e.day) for e in events if e.kind == "purchase")


def _facts(
    events: Iterable[StoredEvent], new_visits: set[tuple[str, date]]
) -> dict[str, list[EventFacts]]:
    """Each customer's facts; the first purchase of a newly recorded visit day is the visit."""
    by_customer: dict[str, list[EventFacts]] = defaultdict(list)
    seen: set[tuple[str, date]] = set()
    for event in events:
        visit = (event.customer_id, event.day)
        new_visit = event.kind == "purchase" and visit in new_visits and visit not in seen
        if new_visit:
            seen.add(visit)
        by_customer[event.customer_id].append(
            EventFacts(
                event.kind,
                event.day,
                event.amount,
                event.store_id,
                event.categories,
                new_visit,
                event.segment,
                event.staff_id,
            )
        )
    return by_customer


def stored_event(row: Any) -> StoredEvent:
    """A purchase_events row (through the ORM's types, or raw from the driver) as the fold
    needs it."""
    items = row.items if not isinstance(row.items, str) else orjson.loads(row.items)
    attributes = row.attributes
    if isinstance(attributes, str):
        attributes = orjson.loads(attributes)
    amount = row.amount
    return StoredEvent(
        customer_id=row.customer_id,
        kind=row.kind,
        day=date.fromisoformat(row.occurred_on)
        if isinstance(row.occurred_on, str)  # SQLite, raw
        else row.occurred_on,
        amount=int(amount * Money.SCALE) if isinstance(amount, Decimal) else int(amount),
        store_id=row.store_id,
        categories=categories_of(items),
        segment=segment_of(attributes),
        staff_id=row.staff_id,
    )


def categories_of(items: Iterable[dict[str, Any]] | None) -> frozenset[str]:
    return frozenset(item["category"] for item in items or ())


def segment_of(attributes: dict[str, Any] | None) -> str | None:
    """The customer's segment, when the POS sends one as `attributes.segment`."""
    segment = (attributes or {}).get("segment")
    return segment[:128] if isinstance(segment, str) and segment else None
