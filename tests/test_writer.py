"""The group-commit writer: shutdown drains it, and a stopped writer refuses work."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from app.ingestion.writer import EventWriter
from app.kit.errors import ServiceUnavailable
from tests.conftest import Keys, event, stored_events

pytestmark = pytest.mark.anyio


async def test_stop_during_load_loses_nothing_acknowledged(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    writer: EventWriter = app.state.event_writer
    warm = await client.post("/v1/purchases", json=event("warm"), headers=keys.ingest)
    assert warm.status_code == 201  # the key is now cached: requests go straight to the writer
    posts = [
        asyncio.create_task(client.post("/v1/purchases", json=event(f"e-{i}"), headers=keys.ingest))
        for i in range(40)
    ]
    await asyncio.wait(posts, return_when=asyncio.FIRST_COMPLETED)
    await writer.stop()
    responses = await asyncio.gather(*posts)
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 503}
    acknowledged = {f"e-{i}" for i, status in enumerate(statuses) if status == 201} | {"warm"}
    assert len(acknowledged) > 1
    assert {e["event_id"] for e in await stored_events(app)} == acknowledged
    assert all(r.headers["retry-after"] == "5" for r in responses if r.status_code == 503)


async def test_a_stopped_writer_refuses_work(app: FastAPI) -> None:
    writer: EventWriter = app.state.event_writer
    await writer.stop()
    with pytest.raises(ServiceUnavailable):
        await writer.submit([], lambda _: httpx.Response(200))  # type: ignore[arg-type, return-value]


async def test_a_full_queue_answers_503_overloaded(app: FastAPI, keys: Keys) -> None:
    writer = EventWriter(
        app.state.transactions,
        max_future_skew=app.state.settings.max_future_skew,
        idempotency_ttl=app.state.settings.idempotency_key_ttl,
        max_pending_events=0,
    )
    with pytest.raises(ServiceUnavailable) as refused:
        await writer.submit([], lambda _: httpx.Response(200))  # type: ignore[arg-type, return-value]
    assert refused.value.instance_code == "overloaded"
    assert refused.value.headers["Retry-After"] == "1"
