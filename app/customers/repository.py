"""Every query the customers domain makes (synchronous: in scorer and sweep transactions)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any, cast

import orjson
from sqlalchemy import Connection, Table, delete, or_, select, text, update

from app.customers.state import CustomerState
from app.kit.db import utcnow
from app.models import Customer, CustomerVisitDay, PurchaseEvent

_customers = cast(Table, Customer.__table__)
_visit_days = cast(Table, CustomerVisitDay.__table__)
_events = cast(Table, PurchaseEvent.__table__)
_SQLITE_MAX_VARIABLES = 900


def record_visit_days(
    connection: Connection, visits: Iterable[tuple[str, date]]
) -> set[tuple[str, date]]:
    """Record (customer, day) visits; return those that were not recorded before."""
    wanted = sorted(set(visits))
    if not wanted:
        return set()
    if connection.dialect.name == "postgresql":
        customers, days = zip(*wanted, strict=True)
        result = connection.exec_driver_sql(
            "INSERT INTO customer_visit_days (customer_id, day) "
            "SELECT * FROM unnest($1::text[], $2::date[]) "
            "ON CONFLICT DO NOTHING RETURNING customer_id, day",
            (list(customers), list(days)),
        )
        return {(row[0], row[1]) for row in result}
    # SQLite: the write lock is ours (BEGIN IMMEDIATE), so look up, then insert the rest.
    known: set[tuple[str, date]] = set()
    for start in range(0, len(wanted), _SQLITE_MAX_VARIABLES // 2):
        chunk = wanted[start : start + _SQLITE_MAX_VARIABLES // 2]
        pairs = ", ".join("(?, ?)" for _ in chunk)
        # A join against the VALUES list, not `(customer_id, day) IN (VALUES ...)`: SQLite
        # plans the row-value IN as a scan of the whole table (38 ms at 200,000 rows), the
        # join as one primary-key probe per pair (tests/test_query_plans.py).
        result = connection.exec_driver_sql(
            f"WITH v(c, d) AS (VALUES {pairs}) "  # noqa: S608 - placeholders only
            "SELECT t.customer_id, t.day FROM v "
            "JOIN customer_visit_days t ON t.customer_id = v.c AND t.day = v.d",
            tuple(value for customer, day in chunk for value in (customer, day.isoformat())),
        )
        known.update((row[0], date.fromisoformat(row[1])) for row in result)
    new = [pair for pair in wanted if pair not in known]
    if new:
        connection.exec_driver_sql(
            "INSERT INTO customer_visit_days (customer_id, day) VALUES (?, ?)",
            [(customer, day.isoformat()) for customer, day in new],
        )
    return set(new)


_STATE_COLUMNS = (
    "customer_id", "first_visit_on", "last_visit_on", "visit_days", "purchases", "refunds",
    "purchase_amount", "refund_amount", "first_visit_amount", "weekly", "categories", "stores",
    "home_store", "segment", "segment_on", "next_check_at", "staff", "home_staff", "recent_days",
    "updated_at",
)  # fmt: skip
_PG_STATE_TYPES = (
    "text", "date", "date", "int4", "int4", "int4", "int8", "int8", "int8", "text", "text",
    "text", "text", "text", "date", "timestamptz", "text", "text", "text", "timestamptz",
)  # fmt: skip
# The sweeper never evaluates a pattern that has events still to fold (the scorer will
# evaluate it once they are): a probe of the scorer's queue by customer.
_FOLDED = "NOT EXISTS (SELECT 1 FROM scorer_queue q WHERE q.customer_id = customers.customer_id)"
_SELECT_STATES = f"SELECT {', '.join(_STATE_COLUMNS[:-1])} FROM customers "  # noqa: S608
# Like the event insert, these run once per group commit with rows ready for the driver:
# SQLAlchemy's per-value processing of three JSON columns cost more than the events did.
_PG_CREATE = (
    "INSERT INTO customers (customer_id, visit_days, purchases, refunds, purchase_amount, "
    "refund_amount, first_visit_amount, weekly, categories, stores, staff, recent_days, "
    "updated_at) SELECT c, 0, 0, 0, 0, 0, 0, '{}', '{}', '{}', '{}', '[]', $2 "
    "FROM unnest($1::text[]) AS u(c) "
    "ORDER BY c ON CONFLICT DO NOTHING"
)
_PG_UPDATE = (
    "UPDATE customers SET "  # noqa: S608 - constant column names
    + ", ".join(
        f"{name} = u.{name}::jsonb"
        if name in ("weekly", "categories", "stores", "staff", "recent_days")
        else f"{name} = u.{name}"
        for name in _STATE_COLUMNS[1:]
    )
    + " FROM unnest("
    + ", ".join(f"${i + 1}::{kind}[]" for i, kind in enumerate(_PG_STATE_TYPES))
    + f") AS u({', '.join(_STATE_COLUMNS)}) WHERE customers.customer_id = u.customer_id"
)
_SQLITE_UPSERT = (
    f"INSERT INTO customers ({', '.join(_STATE_COLUMNS)}) "  # noqa: S608 - constant names
    f"VALUES ({', '.join('?' * len(_STATE_COLUMNS))}) ON CONFLICT (customer_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _STATE_COLUMNS[1:])
)


def lock_states(connection: Connection, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
    """Load the customers' states (new ones empty), locked until the transaction ends.

    On PostgreSQL the rows are created and locked in customer_id order, so two transactions
    touching the same customers cannot deadlock; SQLite's writer holds the whole database.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    if connection.dialect.name == "postgresql":
        states = _lock_existing(connection, ids)
        missing = [customer_id for customer_id in ids if customer_id not in states]
        if missing:  # new customers: create them (a concurrent creator wins), then lock
            connection.exec_driver_sql(_PG_CREATE, (missing, utcnow()))
            states.update(_lock_existing(connection, missing))
    else:
        states = {}
        for start in range(0, len(ids), _SQLITE_MAX_VARIABLES):
            chunk = ids[start : start + _SQLITE_MAX_VARIABLES]
            result = connection.exec_driver_sql(
                _SELECT_STATES + f"WHERE customer_id IN ({', '.join('?' * len(chunk))})",
                tuple(chunk),
            )
            states.update((row[0], _state(row)) for row in result)
    for customer_id in ids:  # new customers: empty patterns
        if customer_id not in states:
            states[customer_id] = CustomerState(customer_id)
    return states


def read_states(connection: Connection, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
    """The stored states of these customers (not locked; the unknown ones are left out)."""
    ids = sorted(set(customer_ids))
    states: dict[str, CustomerState] = {}
    postgres = connection.dialect.name == "postgresql"
    for start in range(0, len(ids), _SQLITE_MAX_VARIABLES):
        chunk = ids[start : start + _SQLITE_MAX_VARIABLES]
        if postgres:
            result = connection.exec_driver_sql(
                _SELECT_STATES + "WHERE customer_id = ANY($1::text[])", (chunk,)
            )
        else:
            result = connection.exec_driver_sql(
                _SELECT_STATES + f"WHERE customer_id IN ({', '.join('?' * len(chunk))})",
                tuple(chunk),
            )
        states.update((row[0], _state(row)) for row in result)
    return states


def get_state(connection: Connection, customer_id: str) -> CustomerState | None:
    placeholder = "$1" if connection.dialect.name == "postgresql" else "?"
    row = connection.exec_driver_sql(
        _SELECT_STATES + f"WHERE customer_id = {placeholder}", (customer_id,)
    ).first()
    return None if row is None else _state(row)


def pending_events(connection: Connection, customer_id: str) -> int:
    """The customer's events the scorer has not folded yet."""
    placeholder = "$1" if connection.dialect.name == "postgresql" else "?"
    count = connection.exec_driver_sql(
        f"SELECT count(*) FROM scorer_queue WHERE customer_id = {placeholder}",  # noqa: S608
        (customer_id,),
    ).scalar()
    return int(count or 0)


def updated_at(connection: Connection, customer_id: str) -> datetime | None:
    """When the customer's pattern was last written (None: no pattern yet)."""
    value: datetime | None = connection.execute(
        select(_customers.c.updated_at).where(_customers.c.customer_id == customer_id)
    ).scalar()
    return value


def claim_due(connection: Connection, now: datetime, limit: int) -> list[CustomerState]:
    """Up to `limit` customers whose next check has come, most overdue first, locked.

    On PostgreSQL rows another transaction holds (an ingest, another replica's sweep) are
    skipped, not waited for; SQLite's single writer needs no claim.
    """
    if connection.dialect.name == "postgresql":
        result = connection.exec_driver_sql(
            _SELECT_STATES + "WHERE next_check_at <= $1 AND " + _FOLDED + " "
            "ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            (now, limit),
        )
    else:
        result = connection.exec_driver_sql(
            _SELECT_STATES + "WHERE next_check_at <= ? AND " + _FOLDED + " "
            "ORDER BY next_check_at LIMIT ?",
            (sqlite_timestamp(now), limit),
        )
    return [_state(row) for row in result]


def due_ids(connection: Connection, now: datetime, limit: int) -> list[str]:
    """The ids `claim_due` would take, without locking them (to go through one by one)."""
    query = (
        select(_customers.c.customer_id)
        .where(_customers.c.next_check_at <= now, text(_FOLDED))
        .order_by(_customers.c.next_check_at)
        .limit(limit)
    )
    return [row[0] for row in connection.execute(query)]


def claim_one(connection: Connection, customer_id: str, now: datetime) -> list[CustomerState]:
    """The customer, locked, if their next check has come (else nobody)."""
    if connection.dialect.name == "postgresql":
        result = connection.exec_driver_sql(
            _SELECT_STATES
            + "WHERE customer_id = $1 AND next_check_at <= $2 AND "
            + _FOLDED
            + " FOR UPDATE",
            (customer_id, now),
        )
    else:
        result = connection.exec_driver_sql(
            _SELECT_STATES + "WHERE customer_id = ? AND next_check_at <= ? AND " + _FOLDED,
            (customer_id, sqlite_timestamp(now)),
        )
    return [_state(row) for row in result]


def check_later(connection: Connection, customer_id: str, at: datetime) -> None:
    """Move the customer's next check to `at`, whenever it was due."""
    connection.execute(
        update(_customers).where(_customers.c.customer_id == customer_id).values(next_check_at=at)
    )


def check_by(connection: Connection, customer_id: str, at: datetime) -> None:
    """Make sure the customer is evaluated by `at` (say, when a snooze ends)."""
    connection.execute(
        update(_customers)
        .where(
            _customers.c.customer_id == customer_id,
            or_(_customers.c.next_check_at.is_(None), _customers.c.next_check_at > at),
        )
        .values(next_check_at=at)
    )


def save_next_checks(connection: Connection, states: Sequence[CustomerState]) -> None:
    """Store only the next check of customers that were evaluated without a new event."""
    if not states:
        return
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(
            "UPDATE customers SET next_check_at = u.at FROM unnest($1::text[], "
            "$2::timestamptz[]) AS u(id, at) WHERE customers.customer_id = u.id",
            ([s.customer_id for s in states], [s.next_check_at for s in states]),
        )
        return
    connection.exec_driver_sql(
        "UPDATE customers SET next_check_at = ? WHERE customer_id = ?",
        [(sqlite_timestamp(s.next_check_at), s.customer_id) for s in states],
    )


def _lock_existing(connection: Connection, ids: list[str]) -> dict[str, CustomerState]:
    result = connection.exec_driver_sql(
        _SELECT_STATES + "WHERE customer_id = ANY($1::text[]) ORDER BY customer_id FOR UPDATE",
        (ids,),
    )
    return {row[0]: _state(row) for row in result}


def save_states(connection: Connection, states: Iterable[CustomerState]) -> None:
    now = utcnow()
    rows = [_row(state, now) for state in states]
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(_PG_UPDATE, tuple(list(c) for c in zip(*rows, strict=True)))
        return
    connection.exec_driver_sql(_SQLITE_UPSERT, [_sqlite(row) for row in rows])


def _row(state: CustomerState, now: datetime) -> tuple[Any, ...]:
    return (
        state.customer_id,
        state.first_visit_on,
        state.last_visit_on,
        state.visit_days,
        state.purchases,
        state.refunds,
        state.purchase_amount,
        state.refund_amount,
        state.first_visit_amount,
        orjson.dumps(state.weekly).decode(),
        orjson.dumps(state.categories).decode(),
        orjson.dumps(state.stores).decode(),
        state.home_store,
        state.segment,
        state.segment_on,
        state.next_check_at,
        orjson.dumps(state.staff).decode(),
        state.home_staff,
        orjson.dumps(state.recent_days).decode(),
        now,
    )


def _sqlite(row: tuple[Any, ...]) -> tuple[Any, ...]:
    first, last, segment_on = row[1], row[2], row[14]
    return (
        row[0],
        first and first.isoformat(),
        last and last.isoformat(),
        *row[3:14],
        segment_on and segment_on.isoformat(),
        sqlite_timestamp(row[15]),
        row[16],
        row[17],
        row[18],
        sqlite_timestamp(row[19]),
    )


def sqlite_timestamp(value: datetime | None) -> str | None:
    """How SQLAlchemy's DateTime stores an aware UTC instant in SQLite (naive, in UTC)."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _state(row: Any) -> CustomerState:
    def day(value: Any) -> date | None:
        return date.fromisoformat(value) if isinstance(value, str) else value

    def instant(value: Any) -> datetime | None:
        if isinstance(value, str):  # SQLite: naive UTC text
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        return value  # type: ignore[no-any-return]

    def document(value: Any) -> Any:
        return orjson.loads(value) if isinstance(value, str | bytes) else value

    return CustomerState(
        customer_id=row[0],
        first_visit_on=day(row[1]),
        last_visit_on=day(row[2]),
        visit_days=row[3],
        purchases=row[4],
        refunds=row[5],
        purchase_amount=int(row[6]),
        refund_amount=int(row[7]),
        first_visit_amount=int(row[8]),
        weekly=document(row[9]),
        categories=document(row[10]),
        stores=document(row[11]),
        home_store=row[12],
        segment=row[13],
        segment_on=day(row[14]),
        next_check_at=instant(row[15]),
        staff=document(row[16]),
        home_staff=row[17],
        recent_days=document(row[18]) or [],
    )


def clear(connection: Connection) -> None:
    connection.execute(delete(_visit_days))
    connection.execute(delete(_customers))


def all_events(connection: Connection) -> Any:
    """Every stored event, oldest id first, streamed (for rebuilds)."""
    columns: list[Any] = [
        _events.c.customer_id,
        _events.c.kind,
        _events.c.occurred_on,
        _events.c.amount,
        _events.c.store_id,
        _events.c["items"],
        _events.c.attributes,
        _events.c.staff_id,
    ]
    return connection.execute(
        select(*columns).order_by(_events.c.id).execution_options(yield_per=5000)
    )
