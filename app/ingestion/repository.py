"""Every query the ingestion domain makes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import IdempotencyRecord, PurchaseEvent

_events = PurchaseEvent.__table__


def _insert_ignoring_conflicts(session: AsyncSession, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()


async def insert_new_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert the rows whose event_id is not stored yet; return the event_ids inserted.

    ON CONFLICT DO NOTHING makes concurrent writers of the same event safe: the second waits
    for the first to commit and then inserts nothing.
    """
    if not rows:
        return set()
    statement = _insert_ignoring_conflicts(session, _events).returning(_events.c.event_id)
    result = await session.execute(statement, list(rows))
    return set(result.scalars())


async def stored_hashes(session: AsyncSession, event_ids: Sequence[str]) -> dict[str, bytes]:
    if not event_ids:
        return {}
    result = await session.execute(
        select(PurchaseEvent.event_id, PurchaseEvent.content_hash).where(
            PurchaseEvent.event_id.in_(event_ids)
        )
    )
    return {event_id: content_hash for event_id, content_hash in result}


async def claim_idempotency_key(
    session: AsyncSession, api_key_id: int, key: str, fingerprint: bytes, now: datetime
) -> int | None:
    """Reserve the key for this request; None when another request already holds it."""
    table = IdempotencyRecord.__table__
    statement = (
        _insert_ignoring_conflicts(session, table)
        .values(
            api_key_id=api_key_id,
            key=key,
            request_fingerprint=fingerprint,
            status_code=0,
            response_body=b"",
            created_at=now,
        )
        .returning(table.c.id)
    )
    claimed: int | None = await session.scalar(statement)
    return claimed


async def get_idempotency_record(
    session: AsyncSession, api_key_id: int, key: str
) -> IdempotencyRecord | None:
    return await session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key
        )
    )


async def delete_idempotency_record(session: AsyncSession, record_id: int) -> None:
    await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))


async def save_idempotent_response(
    session: AsyncSession, record_id: int, status_code: int, body: bytes
) -> None:
    await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.id == record_id)
        .values(status_code=status_code, response_body=body)
    )


async def purge_idempotency_records(session: AsyncSession, older_than: datetime, limit: int) -> int:
    """Delete up to `limit` expired records; small batches keep SQLite's write lock short."""
    expired = (
        select(IdempotencyRecord.id).where(IdempotencyRecord.created_at < older_than).limit(limit)
    )
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(expired))
    )
    return int(getattr(result, "rowcount", 0) or 0)
