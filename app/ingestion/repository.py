"""Every query the ingestion domain makes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import BigInteger, Connection, Row, Table, delete, func, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite

from app.models import IdempotencyRecord, PurchaseEvent


class EventRow(NamedTuple):
    """A purchase_events row in column order, ready for the driver (amount in 1/10,000)."""

    event_id: str
    customer_id: str
    store_id: str
    kind: str
    occurred_at: datetime
    occurred_on: date
    received_at: datetime
    amount: int
    currency: str
    refunds_event_id: str | None
    staff_id: str | None
    items: str | None  # JSON text
    attributes: str | None  # JSON text
    content_hash: bytes


_COLUMNS = ", ".join(EventRow._fields)
# SQLAlchemy's executemany path processes every bound value in Python (about 29 us per
# event on SQLite in bench/ingest.py); the hot path hands the driver ready-made rows instead.
_SQLITE_INSERT = (
    f"INSERT INTO purchase_events ({_COLUMNS}) "  # noqa: S608 - constant column names
    f"VALUES ({', '.join('?' * len(EventRow._fields))})"
)
_PG_TYPES = (
    "text", "text", "text", "text", "timestamptz", "date", "timestamptz", "int8", "text",
    "text", "text", "text", "text", "bytea",
)  # fmt: skip
_PG_SELECT = ", ".join(
    f"c{i}::jsonb" if name in ("items", "attributes") else f"c{i}"
    for i, name in enumerate(EventRow._fields)
)
_PG_ARRAYS = ", ".join(f"${i + 1}::{kind}[]" for i, kind in enumerate(_PG_TYPES))
_PG_ALIASES = ", ".join(f"c{i}" for i in range(len(_PG_TYPES)))
# One statement for the whole batch: each column travels as one array parameter, and the
# events inserted are queued for the scorer by the same statement.
_PG_INSERT = (
    f"WITH stored AS (INSERT INTO purchase_events ({_COLUMNS}) "  # noqa: S608 - constant names
    f"SELECT {_PG_SELECT} FROM unnest({_PG_ARRAYS}) AS u({_PG_ALIASES}) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING id, customer_id, event_id), "
    "queued AS (INSERT INTO scorer_queue (event_pk, customer_id) "
    "SELECT id, customer_id FROM stored) "
    "SELECT event_id FROM stored"
)
# SQLite: ids are taken in insert order under the write lock, so the events inserted by
# this transaction are exactly those above the largest id before it.
_SQLITE_QUEUE = (
    "INSERT INTO scorer_queue (event_pk, customer_id) "
    "SELECT id, customer_id FROM purchase_events WHERE id > ?"
)
_SQLITE_MAX_VARIABLES = 900


def _sqlite_time(value: datetime) -> str:
    # The text form SQLAlchemy's SQLite DateTime type writes and reads back.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _sqlite_row(row: EventRow) -> tuple[Any, ...]:
    return row._replace(
        occurred_at=_sqlite_time(row.occurred_at),  # type: ignore[arg-type]
        occurred_on=row.occurred_on.isoformat(),  # type: ignore[arg-type]
        received_at=_sqlite_time(row.received_at),  # type: ignore[arg-type]
    )


def insert_new_events(
    connection: Connection, rows: Mapping[str, EventRow]
) -> tuple[set[str], dict[str, bytes]]:
    """Insert the rows whose event_id is not stored yet, each queued for the scorer.

    Returns the event_ids inserted and, for the others, the stored content hashes.
    """
    if not rows:
        return set(), {}
    if connection.dialect.name == "sqlite":
        # Write transactions on SQLite start with BEGIN IMMEDIATE: no one else can insert
        # between this look-up and the insert, so a plain INSERT of the rest is exact.
        stored = stored_hashes(connection, list(rows))
        new = [row for event_id, row in rows.items() if event_id not in stored]
        if new:
            last = connection.exec_driver_sql("SELECT max(id) FROM purchase_events").scalar()
            connection.exec_driver_sql(_SQLITE_INSERT, [_sqlite_row(row) for row in new])
            connection.exec_driver_sql(_SQLITE_QUEUE, (last or 0,))
        return {row.event_id for row in new}, stored
    # PostgreSQL: insert first, look up only what was not inserted (usually nothing). A
    # concurrent transaction inserting the same event makes ON CONFLICT wait for its commit.
    # In event_id order: two transactions inserting overlapping events in opposite orders
    # would each wait for the other's uncommitted row (a deadlock, one of them aborted).
    columns = list(zip(*(rows[event_id] for event_id in sorted(rows)), strict=True))
    result = connection.exec_driver_sql(_PG_INSERT, tuple(columns))
    inserted = set(result.scalars())
    if inserted:  # idle scorers of every replica wake at the commit
        connection.exec_driver_sql("SELECT pg_notify('radar_scorer', '')")
    return inserted, stored_hashes(connection, [e for e in rows if e not in inserted])


def stored_hashes(connection: Connection, event_ids: Sequence[str]) -> dict[str, bytes]:
    if not event_ids:
        return {}
    if connection.dialect.name == "postgresql":
        result = connection.exec_driver_sql(
            "SELECT event_id, content_hash FROM purchase_events WHERE event_id = ANY($1::text[])",
            (list(event_ids),),
        )
        return _hashes(result)
    found: dict[str, bytes] = {}
    for chunk in _chunks(event_ids, _SQLITE_MAX_VARIABLES):
        result = connection.exec_driver_sql(
            "SELECT event_id, content_hash FROM purchase_events "  # noqa: S608 - placeholders only
            f"WHERE event_id IN ({', '.join('?' * len(chunk))})",
            tuple(chunk),
        )
        found.update(_hashes(result))
    return found


def _hashes(result: Any) -> dict[str, bytes]:
    # asyncpg returns bytea as bytes, sqlite3 as bytes too; memoryview is normalised anyway.
    return {event_id: bytes(digest) for event_id, digest in result}


def _chunks(values: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


_records = cast(Table, IdempotencyRecord.__table__)


def claim_idempotency_key(
    connection: Connection, api_key_id: int, key: str, fingerprint: bytes, now: datetime
) -> int | None:
    """Reserve the key for this request; None when another request already holds it."""
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(_records)
        .values(
            api_key_id=api_key_id,
            key=key,
            request_fingerprint=fingerprint,
            status_code=0,
            response_body=b"",
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(_records.c.id)
    )
    claimed: int | None = connection.scalar(statement)
    return claimed


def get_idempotency_record(connection: Connection, api_key_id: int, key: str) -> Row[Any] | None:
    return connection.execute(
        select(_records).where(_records.c.api_key_id == api_key_id, _records.c.key == key)
    ).first()


def delete_idempotency_record(connection: Connection, record_id: int) -> None:
    connection.execute(delete(_records).where(_records.c.id == record_id))


def save_idempotent_response(
    connection: Connection, record_id: int, status_code: int, body: bytes
) -> None:
    connection.execute(
        update(_records)
        .where(_records.c.id == record_id)
        .values(status_code=status_code, response_body=body)
    )


def purge_idempotency_records(connection: Connection, older_than: datetime, limit: int) -> int:
    """Delete up to `limit` expired records; small batches keep SQLite's write lock short."""
    expired = select(_records.c.id).where(_records.c.created_at < older_than).limit(limit)
    result = connection.execute(delete(_records).where(_records.c.id.in_(expired)))
    return int(result.rowcount or 0)


_events = cast(Table, PurchaseEvent.__table__)


class StoredFacts(NamedTuple):
    customer_id: str
    kind: str
    amount: int  # in 1/10,000


def refund_facts(
    connection: Connection, event_ids: Sequence[str], targets: Sequence[str]
) -> tuple[dict[str, StoredFacts], dict[str, int]]:
    """What refund rules need: which of `event_ids` are stored (customer, kind, amount),
    with those among `targets` locked on PostgreSQL so that two refunds of one purchase
    are checked one after the other; and per target, the refunds already stored for it."""
    e = _events.c
    amount = type_coerce(e.amount, BigInteger)  # the raw 1/10,000 units
    stored: dict[str, StoredFacts] = {}
    locked = (
        select(e.event_id, e.customer_id, e.kind, amount)
        .where(e.event_id.in_(sorted(set(targets))))
        .order_by(e.event_id)
    )
    if connection.dialect.name == "postgresql":
        locked = locked.with_for_update()
    for query in (
        locked,
        select(e.event_id, e.customer_id, e.kind, amount).where(
            e.event_id.in_(sorted(set(event_ids) - set(targets)))
        ),
    ):
        stored.update(
            (row[0], StoredFacts(row[1], row[2], int(row[3]))) for row in connection.execute(query)
        )
    refunded = connection.execute(
        select(e.refunds_event_id, func.sum(amount))
        .where(e.refunds_event_id.in_(sorted(set(targets))), e.kind == "refund")
        .group_by(e.refunds_event_id)
    )
    return stored, {row[0]: int(row[1]) for row in refunded}
