"""Alembic, driven from code: `radar migrate`, the start-up upgrade and /readyz use it."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger("radar.migrations")
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# Replicas starting together on PostgreSQL take turns: the first migrates, the rest find
# the schema current. Any constant works; this one spells "radar".
_ADVISORY_LOCK_ID = 0x7261646172


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # A migration may rebuild an index of every event: RADAR_DB_STATEMENT_TIMEOUT is for
        # the service's own statements, not for this one transaction.
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
    command.upgrade(alembic_config(connection), "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        before = await connection.run_sync(_current)
        await connection.run_sync(_upgrade)
        after = await connection.run_sync(_current)
    if before != after:
        logger.info("database schema migrated", extra={"from": before, "to": after})


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current)
