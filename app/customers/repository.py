"""Every query the customers domain makes (synchronous: it runs inside ingest transactions)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.customers.state import CustomerState
from app.kit.db import Money, utcnow
from app.models import Customer, CustomerVisitDay, PurchaseEvent

_customers = cast(Table, Customer.__table__)
_visit_days = cast(Table, CustomerVisitDay.__table__)
_events = cast(Table, PurchaseEvent.__table__)
_SQLITE_MAX_VARIABLES = 900


def _insert(connection: Connection, table: Table) -> Any:
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    return insert(table)


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
        result = connection.exec_driver_sql(
            "SELECT customer_id, day FROM customer_visit_days "  # noqa: S608 - placeholders only
            f"WHERE (customer_id, day) IN (VALUES {pairs})",
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


def lock_states(connection: Connection, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
    """Load the customers' states, creating empty ones, locked until the transaction ends.

    Rows are created and locked in customer_id order, so that two transactions touching the
    same customers cannot deadlock.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    now = utcnow()
    connection.execute(
        _insert(connection, _customers).on_conflict_do_nothing(),
        [_row(CustomerState(customer_id), now) for customer_id in ids],
    )
    query = select(_customers).where(_customers.c.customer_id.in_(ids))
    if connection.dialect.name == "postgresql":
        query = query.order_by(_customers.c.customer_id).with_for_update()
    return {row.customer_id: _state(row) for row in connection.execute(query)}


def save_states(connection: Connection, states: Iterable[CustomerState]) -> None:
    now = utcnow()
    rows = [_row(state, now) for state in states]
    if not rows:
        return
    columns = [name for name in rows[0] if name != "customer_id"]
    connection.execute(
        update(_customers)
        .where(_customers.c.customer_id == bindparam("p_customer_id"))
        .values({name: bindparam(f"p_{name}") for name in columns}),
        [{f"p_{name}": value for name, value in row.items()} for row in rows],
    )


def _row(state: CustomerState, now: Any) -> dict[str, Any]:
    scale = Money.SCALE
    return {
        "customer_id": state.customer_id,
        "first_visit_on": state.first_visit_on,
        "last_visit_on": state.last_visit_on,
        "visit_days": state.visit_days,
        "purchases": state.purchases,
        "refunds": state.refunds,
        "purchase_amount": _decimal(state.purchase_amount, scale),
        "refund_amount": _decimal(state.refund_amount, scale),
        "weekly": state.weekly,
        "categories": state.categories,
        "stores": state.stores,
        "home_store": state.home_store,
        "updated_at": now,
    }


def _decimal(value: int, scale: int) -> Decimal:
    return Decimal(value) / scale


def _state(row: Any) -> CustomerState:
    scale = Money.SCALE
    return CustomerState(
        customer_id=row.customer_id,
        first_visit_on=row.first_visit_on,
        last_visit_on=row.last_visit_on,
        visit_days=row.visit_days,
        purchases=row.purchases,
        refunds=row.refunds,
        purchase_amount=int(row.purchase_amount * scale),
        refund_amount=int(row.refund_amount * scale),
        weekly=dict(row.weekly),
        categories=dict(row.categories),
        stores=dict(row.stores),
        home_store=row.home_store,
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
    ]
    return connection.execute(
        select(*columns).order_by(_events.c.id).execution_options(yield_per=5000)
    )
