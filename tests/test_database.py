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
