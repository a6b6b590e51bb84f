"""Every set-aside query; runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from app.kit.text import storable
from app.models import SetAsideItem

_items = cast(Table, SetAsideItem.__table__)
ERROR_LIMIT = 500


def record(connection: Connection, loop: str, item: str, error: str, now: datetime) -> None:
    """Note that `item` failed again (or for the first time)."""
    values = {
        "loop": loop,
        "item": storable(item, 200),
        "error": storable(error, ERROR_LIMIT),
        "failures": 1,
        "first_failed_at": now,
        "last_failed_at": now,
    }
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_items).values(values)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["loop", "item"],
            set_={
                "error": statement.excluded.error,
                "failures": _items.c.failures + 1,
                "last_failed_at": statement.excluded.last_failed_at,
            },
        )
    )


def clear(connection: Connection, loop: str, items: Sequence[str]) -> None:
    """Forget items that were processed after all."""
    if items:
        connection.execute(delete(_items).where(_items.c.loop == loop, _items.c.item.in_(items)))


def page(connection: Connection, loop: str | None, before: int | None, limit: int) -> list[Any]:
    """Newest first."""
    query = select(_items).order_by(_items.c.id.desc()).limit(limit)
    if loop is not None:
        query = query.where(_items.c.loop == loop)
    if before is not None:
        query = query.where(_items.c.id < before)
    return list(connection.execute(query))


def take(connection: Connection, item_id: int) -> Any | None:
    """Remove one item and return it (None if there is none)."""
    row = connection.execute(select(_items).where(_items.c.id == item_id)).first()
    if row is not None:
        connection.execute(delete(_items).where(_items.c.id == item_id))
    return row
