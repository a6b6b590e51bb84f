"""Order and repetition never change what is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from app.models import IdempotencyRecord, PurchaseEvent
from tests.conftest import Keys, stored_events

pytestmark = pytest.mark.anyio

offsets = st.integers(min_value=-12 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
instants = st.datetimes(
    min_value=datetime(1997, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
)
amounts = st.decimals(min_value="0.0001", max_value="99999", places=4).map(str)
items = st.lists(
    st.fixed_dictionaries(
        {
            "category": st.sampled_from(["bakery", "dairy", "fuel"]),
            "amount": st.decimals(min_value=0, max_value=500, places=2).map(str),
        },
        optional={"sku": st.text("ABC123", min_size=1, max_size=6)},
    ),
    max_size=3,
)


@st.composite
def purchase_events(draw: st.DrawFn, event_id: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["purchase", "refund"]))
    body: dict[str, Any] = {
        "event_id": event_id,
        "customer_id": draw(st.sampled_from(["card-1", "card-2", "card-3"])),
        "store_id": draw(st.sampled_from(["north", "south"])),
        "occurred_at": draw(instants).astimezone(draw(offsets)).isoformat(),
        "amount": draw(amounts),
        "currency": draw(st.sampled_from(["EUR", "usd", "GBP"])),
        "kind": kind,
    }
    if draw(st.booleans()):
        body["items"] = draw(items)
    if kind == "refund" and draw(st.booleans()):
        body["refunds_event_id"] = "e-0"
    return body


@st.composite
def event_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=25))
    return [draw(purchase_events(f"e-{i}")) for i in range(count)]


async def _post_all(client: httpx.AsyncClient, keys: Keys, events: list[dict[str, Any]]) -> None:
    response = await client.post(
        "/v1/purchases/batch", json={"events": events}, headers=keys.ingest
    )
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == 0, response.text


async def _clear_events(app: FastAPI) -> None:
    async with app.state.sessionmaker.begin() as session:
        await session.execute(delete(IdempotencyRecord))
        await session.execute(delete(PurchaseEvent))


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=event_lists(), data=st.data())
async def test_split_shuffled_and_repeated_batches_store_the_same_events(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI, events: list[dict[str, Any]], data: Any
) -> None:
    await _clear_events(app)
    await _post_all(client, keys, events)
    expected = await stored_events(app)
    assert len(expected) == len(events)

    await _clear_events(app)
    shuffled = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(events) - 1)), max_size=4)))
    chunks = [
        shuffled[a:b]
        for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=False)
        if shuffled[a:b]
    ]
    repeated = data.draw(st.lists(st.sampled_from(chunks), max_size=3))
    for chunk in data.draw(st.permutations(chunks + repeated)):
        await _post_all(client, keys, chunk)
    assert await stored_events(app) == expected


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=event_lists())
async def test_batch_posted_twice_stores_the_same_events(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI, events: list[dict[str, Any]]
) -> None:
    await _clear_events(app)
    await _post_all(client, keys, events)
    once = await stored_events(app)
    await _post_all(client, keys, events)
    assert await stored_events(app) == once
