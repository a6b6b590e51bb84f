"""The schema comes only from migrations, and the published OpenAPI document is current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.ext.asyncio import AsyncConnection

from app.kit.db import create_engine
from app.kit.migrations import alembic_config
from app.kit.settings import Settings
from app.openapi import render_openapi

OPENAPI_FILE = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"

pytestmark = pytest.mark.anyio


async def test_models_and_migrations_agree(settings: Settings) -> None:
    """`alembic check`: autogenerate finds nothing the migrations do not already create."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            await _check(connection)
    finally:
        await engine.dispose()


async def _check(connection: AsyncConnection) -> None:
    await connection.run_sync(lambda sync: command.check(alembic_config(sync)))


async def test_migrations_run_down_and_up_again(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'm.db'}")
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda s: command.upgrade(alembic_config(s), "head"))
            await connection.run_sync(lambda s: command.downgrade(alembic_config(s), "base"))
            await connection.run_sync(lambda s: command.upgrade(alembic_config(s), "head"))
            await _check(connection)
    finally:
        await engine.dispose()


def test_openapi_document_is_current() -> None:
    assert OPENAPI_FILE.read_text() == render_openapi(), (
        "openapi/openapi.json is stale: run `make openapi` and commit the result"
    )


def test_every_reference_in_the_openapi_document_resolves() -> None:
    document = json.loads(render_openapi())
    refs: set[str] = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                refs.add(ref)
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(document)
    schemas = document["components"]["schemas"]
    assert {"PurchaseEventIn", "BatchIn", "LineItem", "Problem"} <= set(schemas)
    assert {ref.removeprefix("#/components/schemas/") for ref in refs} <= set(schemas)


def test_validation_errors_are_documented_as_problems() -> None:
    document = json.loads(render_openapi())
    responses = document["paths"]["/v1/purchases"]["post"]["responses"]
    assert list(responses["422"]["content"]) == ["application/problem+json"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
