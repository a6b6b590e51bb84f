from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from starlette.types import Message, Receive, Scope, Send

from app.models import PurchaseEvent
from tests.conftest import Keys, event, stored_events

pytestmark = pytest.mark.anyio


async def test_accepted_event_is_stored_with_both_times(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    before = datetime.now(UTC)
    body = event(
        items=[{"sku": "A-1", "category": "bakery", "quantity": 2, "amount": "5.10"}],
        staff_id="staff-9",
        attributes={"channel": "till"},
    )
    response = await client.post("/v1/purchases", json=body, headers=keys.ingest)
    assert response.status_code == 201, response.text
    assert response.json() == {"event_id": "e-1", "status": "accepted"}

    async with app.state.sessionmaker() as session:
        row = await session.scalar(select(PurchaseEvent))
    assert row is not None
    assert row.occurred_at == datetime(2026, 1, 15, 17, 5, tzinfo=UTC)
    assert before <= row.received_at <= datetime.now(UTC)
    assert row.amount == Decimal("42.5")
    assert (row.customer_id, row.store_id, row.staff_id) == ("card-1", "store-1", "staff-9")
    assert row.items == [{"sku": "A-1", "category": "bakery", "quantity": "2", "amount": "5.1"}]
    assert row.attributes == {"channel": "till"}


async def test_amount_is_exact_to_four_places(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    response = await client.post(
        "/v1/purchases", json=event(amount="1234567890.1234"), headers=keys.ingest
    )
    assert response.status_code == 201
    assert (await stored_events(app))[0]["amount"] == Decimal("1234567890.1234")


async def test_same_event_again_is_a_duplicate_and_changes_nothing(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    assert (
        await client.post("/v1/purchases", json=event(), headers=keys.ingest)
    ).status_code == 201
    before = await stored_events(app)
    # Same content written differently: another offset for the same instant, a number amount.
    again = event(occurred_at="2026-01-15T17:05:00Z", amount=42.5, currency="eur")
    response = await client.post("/v1/purchases", json=again, headers=keys.ingest)
    assert response.status_code == 200
    assert response.json() == {"event_id": "e-1", "status": "duplicate"}
    assert await stored_events(app) == before


async def test_same_event_id_with_other_content_is_a_conflict(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    assert (
        await client.post("/v1/purchases", json=event(), headers=keys.ingest)
    ).status_code == 201
    before = await stored_events(app)
    response = await client.post("/v1/purchases", json=event(amount="43"), headers=keys.ingest)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "event_id_conflict"
    assert problem["errors"][0]["pointer"] == "/event_id"
    assert await stored_events(app) == before


async def test_late_and_out_of_order_events_are_accepted(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    newest = event("e-new", occurred_at="2026-03-01T10:00:00Z")
    years_late = event("e-old", occurred_at="1997-01-01T10:00:00-05:00")
    for body in (newest, years_late):
        response = await client.post("/v1/purchases", json=body, headers=keys.ingest)
        assert response.status_code == 201
    assert {e["event_id"] for e in await stored_events(app)} == {"e-new", "e-old"}


async def test_future_events_beyond_the_skew_are_rejected(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    soon = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    too_far = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    ok = await client.post(
        "/v1/purchases", json=event("e-soon", occurred_at=soon), headers=keys.ingest
    )
    assert ok.status_code == 201
    bad = await client.post(
        "/v1/purchases", json=event("e-far", occurred_at=too_far), headers=keys.ingest
    )
    assert bad.status_code == 422
    problem = bad.json()
    assert problem["errors"] == [
        {
            "pointer": "/occurred_at",
            "code": "future_timestamp",
            "message": "occurred_at is more than 300 s in the future; check the till's clock",
        }
    ]
    assert [e["event_id"] for e in await stored_events(app)] == ["e-soon"]


async def test_refund_may_name_the_purchase_it_reverses(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    purchase = await client.post("/v1/purchases", json=event("e-1"), headers=keys.ingest)
    assert purchase.status_code == 201
    refund = event("r-1", kind="refund", amount="10", refunds_event_id="e-1")
    response = await client.post("/v1/purchases", json=refund, headers=keys.ingest)
    assert response.status_code == 201
    stored = (await stored_events(app))[1]
    assert (stored["kind"], stored["refunds_event_id"], stored["amount"]) == (
        "refund",
        "e-1",
        Decimal(10),
    )


async def test_accepted_event_is_committed_before_the_response_starts(
    keys: Keys, app: FastAPI
) -> None:
    """At the moment the 201 starts, an independent connection already sees the event."""
    from app.kit.db import create_engine

    seen_at_response_start: list[str | None] = []
    engine = create_engine(app.state.settings)

    async def observing_app(scope: Scope, receive: Receive, send: Send) -> None:
        async def observing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                async with engine.connect() as connection:
                    seen_at_response_start.append(
                        await connection.scalar(select(PurchaseEvent.event_id))
                    )
            await send(message)

        await app(scope, receive, observing_send)

    transport = httpx.ASGITransport(app=observing_app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as http:
            response = await http.post("/v1/purchases", json=event(), headers=keys.ingest)
    finally:
        await engine.dispose()
    assert response.status_code == 201
    assert seen_at_response_start == ["e-1"]
