from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from app.kit.auth import Scope
from app.kit.settings import Settings
from tests.conftest import Keys, event, make_key, stored_events

pytestmark = pytest.mark.anyio


async def test_retry_with_the_same_key_replays_the_first_response(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    headers = {**keys.ingest, "Idempotency-Key": "req-1"}
    first = await client.post("/v1/purchases", json=event(), headers=headers)
    second = await client.post("/v1/purchases", json=event(), headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    # Without the key, the same event is reported for what it is: a duplicate.
    third = await client.post("/v1/purchases", json=event(), headers=keys.ingest)
    assert third.json()["status"] == "duplicate"
    assert len(await stored_events(app)) == 1


async def test_batch_replay(client: httpx.AsyncClient, keys: Keys) -> None:
    headers = {**keys.ingest, "Idempotency-Key": "batch-1"}
    body = {"events": [event("e-1"), event("e-2", amount="-1")]}
    first = await client.post("/v1/purchases/batch", json=body, headers=headers)
    second = await client.post("/v1/purchases/batch", json=body, headers=headers)
    assert first.json()["accepted"] == 1
    assert second.content == first.content


async def test_same_key_with_another_body_is_refused(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    headers = {**keys.ingest, "Idempotency-Key": "req-1"}
    await client.post("/v1/purchases", json=event("e-1"), headers=headers)
    response = await client.post("/v1/purchases", json=event("e-2"), headers=headers)
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert [e["event_id"] for e in await stored_events(app)] == ["e-1"]


async def test_same_key_on_another_endpoint_is_refused(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    headers = {**keys.ingest, "Idempotency-Key": "req-1"}
    await client.post("/v1/purchases", json=event("e-1"), headers=headers)
    response = await client.post("/v1/purchases/batch", json={"events": [event()]}, headers=headers)
    assert response.json()["code"] == "idempotency_key_reused"


async def test_keys_are_scoped_to_the_api_key(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    other = await make_key(app, "till-2", Scope.INGEST)
    first = await client.post(
        "/v1/purchases", json=event("e-1"), headers={**keys.ingest, "Idempotency-Key": "k"}
    )
    second = await client.post(
        "/v1/purchases",
        json=event("e-2"),
        headers={"Authorization": f"Bearer {other}", "Idempotency-Key": "k"},
    )
    assert (first.status_code, second.status_code) == (201, 201)
    assert len(await stored_events(app)) == 2


async def test_validation_failures_are_not_remembered(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    headers = {**keys.ingest, "Idempotency-Key": "req-1"}
    bad = await client.post("/v1/purchases", json=event(amount="-1"), headers=headers)
    assert bad.status_code == 422
    good = await client.post("/v1/purchases", json=event(), headers=headers)
    assert good.status_code == 201


@pytest.fixture
def keys_expire_at_once(settings: Settings) -> None:
    settings.idempotency_key_ttl = timedelta(0)


@pytest.mark.usefixtures("keys_expire_at_once")
async def test_expired_key_is_processed_afresh(client: httpx.AsyncClient, keys: Keys) -> None:
    headers = {**keys.ingest, "Idempotency-Key": "req-1"}
    await client.post("/v1/purchases", json=event("e-1"), headers=headers)
    response = await client.post("/v1/purchases", json=event("e-2"), headers=headers)
    assert response.status_code == 201
    assert "idempotent-replayed" not in response.headers


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_malformed_key(client: httpx.AsyncClient, keys: Keys, key: str) -> None:
    response = await client.post(
        "/v1/purchases", json=event(), headers={**keys.ingest, "Idempotency-Key": key}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_header"


async def test_expired_records_are_purged(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    from sqlalchemy import func, select

    from app.ingestion.idempotency import purge_expired
    from app.kit.db import utcnow
    from app.models import IdempotencyRecord

    for key in ("a", "b", "c"):
        await client.post(
            "/v1/purchases", json=event(key), headers={**keys.ingest, "Idempotency-Key": key}
        )
    ttl = timedelta(hours=24)
    transactions = app.state.transactions
    assert await purge_expired(transactions, now=utcnow(), ttl=ttl) == 0
    assert (
        await purge_expired(transactions, now=utcnow() + ttl + timedelta(seconds=1), ttl=ttl) == 3
    )
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0
