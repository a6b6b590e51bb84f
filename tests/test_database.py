from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from app.kit.db import create_engine
from app.kit.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_sqlite_connections_use_wal_and_the_configured_pragmas(
    tmp_path: Path, synchronous: str
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'p.db'}",
        sqlite_synchronous=synchronous,
    )
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": {"FULL": 2, "NORMAL": 1}[synchronous],
        "foreign_keys": 1,
        "busy_timeout": 10000,
    }


async def test_sqlite_file_directory_is_created(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'nested' / 'dir' / 'r.db'}")
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
    finally:
        await engine.dispose()
    assert (tmp_path / "nested" / "dir" / "r.db").exists()


@pytest.mark.anyio
async def test_a_runaway_statement_is_cancelled_as_the_database_being_busy(
    settings: Settings,
) -> None:
    """RADAR_DB_STATEMENT_TIMEOUT: PostgreSQL cancels it, and the service answers it like an
    unavailable database (503 with Retry-After), not like a bug. SQLite has no such limit."""
    if settings.is_sqlite:
        pytest.skip("SQLite has no statement timeout")
    from datetime import timedelta

    from sqlalchemy.exc import OperationalError

    from app.kit.errors import DATABASE_UNAVAILABLE_ERRORS

    engine = create_engine(
        settings.model_copy(update={"db_statement_timeout": timedelta(milliseconds=200)})
    )
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
            with pytest.raises(OperationalError) as caught:
                await connection.execute(text("SELECT pg_sleep(5)"))
        assert isinstance(caught.value, DATABASE_UNAVAILABLE_ERRORS)
        assert "statement timeout" in str(caught.value.orig)
    finally:
        await engine.dispose()
