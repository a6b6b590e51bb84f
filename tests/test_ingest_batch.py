from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import Keys, event, stored_events

pytestmark = pytest.mark.anyio


async def test_every_event_gets_a_result_in_request_order(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    stored = event("e-stored")
    assert (await client.post("/v1/purchases", json=stored, headers=keys.ingest)).status_code == 201
    events = [
        event("e-1"),
        event("e-2", amount="-3"),  # rejected: bad amount
        stored,  # duplicate of a stored event
        event("e-stored", amount="1"),  # conflicts with the stored event
        "not an event",
        event("e-3", currency="EUR", kind="refund", amount="2"),
    ]
    response = await client.post(
        "/v1/purchases/batch", json={"events": events}, headers=keys.ingest
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 1, 3)
    summary = [
        (r["index"], r.get("event_id"), r["status"], [e["pointer"] for e in r.get("errors", [])])
        for r in body["results"]
    ]
    assert summary == [
        (0, "e-1", "accepted", []),
        (1, "e-2", "rejected", ["/events/1/amount"]),
        (2, "e-stored", "duplicate", []),
        (3, "e-stored", "rejected", ["/events/3/event_id"]),
        (4, None, "rejected", ["/events/4"]),
        (5, "e-3", "accepted", []),
    ]
    assert body["results"][3]["errors"][0]["code"] == "event_id_conflict"
    # Valid events are stored although others were rejected; the stored one is unchanged.
    rows = {e["event_id"]: e for e in await stored_events(app)}
    assert set(rows) == {"e-stored", "e-1", "e-3"}
    assert rows["e-stored"]["amount"] == Decimal("42.5")


async def test_repeats_inside_one_batch(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    events = [event("e-1"), event("e-1"), event("e-1", amount="9"), event("e-2")]
    response = await client.post(
        "/v1/purchases/batch", json={"events": events}, headers=keys.ingest
    )
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "duplicate", "rejected", "accepted"]
    assert results[2]["errors"][0]["code"] == "event_id_conflict"
    assert "index 0" in results[2]["errors"][0]["message"]
    assert len(await stored_events(app)) == 2


async def test_repeat_of_a_conflicting_event_is_rejected_too(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    await client.post("/v1/purchases", json=event("e-1"), headers=keys.ingest)
    events = [event("e-1", amount="9"), event("e-1", amount="9")]
    response = await client.post(
        "/v1/purchases/batch", json={"events": events}, headers=keys.ingest
    )
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rejected", "rejected"]
    assert [r["errors"][0]["pointer"] for r in results] == [
        "/events/0/event_id",
        "/events/1/event_id",
    ]


async def test_rejected_event_id_that_is_not_a_string_is_reported_as_null(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    events = [{**event(), "event_id": 12345}, event("x" * 200)]
    response = await client.post(
        "/v1/purchases/batch", json={"events": events}, headers=keys.ingest
    )
    results = response.json()["results"]
    assert [(r["event_id"], r["status"]) for r in results] == [
        (None, "rejected"),
        (None, "rejected"),
    ]


async def test_full_batch_of_a_thousand_is_accepted(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    events = [event(f"e-{i}", customer_id=f"card-{i % 37}") for i in range(1000)]
    response = await client.post(
        "/v1/purchases/batch", json={"events": events}, headers=keys.ingest
    )
    assert response.json()["accepted"] == 1000
    assert len(await stored_events(app)) == 1000


async def test_batch_posted_again_is_all_duplicates(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    events = [event(f"e-{i}") for i in range(10)]
    first = await client.post("/v1/purchases/batch", json={"events": events}, headers=keys.ingest)
    assert first.json()["accepted"] == 10
    before = await stored_events(app)
    again = await client.post("/v1/purchases/batch", json={"events": events}, headers=keys.ingest)
    assert again.json()["duplicates"] == 10
    assert await stored_events(app) == before
