"""Concurrent writers of the same event: exactly one wins, the rest see a duplicate."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import Keys, event, stored_events

pytestmark = pytest.mark.anyio


async def test_concurrent_posts_of_one_event_store_it_once(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    responses = await asyncio.gather(
        *(client.post("/v1/purchases", json=event(), headers=keys.ingest) for _ in range(8))
    )
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["accepted"] + ["duplicate"] * 7
    assert len(await stored_events(app)) == 1


async def test_concurrent_overlapping_batches(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    batches = [[event(f"e-{i}") for i in range(start, start + 20)] for start in (0, 10, 5, 15)]
    responses = await asyncio.gather(
        *(
            client.post("/v1/purchases/batch", json={"events": b}, headers=keys.ingest)
            for b in batches
        )
    )
    assert sum(r.json()["accepted"] for r in responses) == 35
    assert sum(r.json()["duplicates"] for r in responses) == 80 - 35
    assert len(await stored_events(app)) == 35


async def test_concurrent_retries_with_one_idempotency_key_get_one_answer(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    headers = {**keys.ingest, "Idempotency-Key": "retry-storm"}
    responses = await asyncio.gather(
        *(client.post("/v1/purchases", json=event(), headers=headers) for _ in range(6))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert sum("idempotent-replayed" in r.headers for r in responses) == 5
    assert len(await stored_events(app)) == 1


async def test_the_same_batch_in_opposite_orders_at_once(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    """Two tills re-sending one batch, one of them reversed: inserted in the order given, the
    two transactions each waited for a row the other held (PostgreSQL aborted one: a 500)."""
    for attempt in range(5):
        events = [event(f"r{attempt}-{n:04d}", customer_id=f"card-{n}") for n in range(1000)]
        responses = await asyncio.gather(
            client.post("/v1/purchases/batch", json={"events": events}, headers=keys.ingest),
            client.post("/v1/purchases/batch", json={"events": events[::-1]}, headers=keys.ingest),
        )
        assert [r.status_code for r in responses] == [200, 200], responses[1].text
        assert sum(r.json()["accepted"] for r in responses) == 1000
    assert len(await stored_events(app)) == 5000
