"""Order and repetition never change what is stored, nor the alerts left open."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import httpx
import orjson
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from app.alerts.service import Evaluator
from app.kit.auth import Scope
from app.kit.db import Base, utcnow
from app.kit.settings import Settings
from app.main import create_app
from app.models import Alert, AlertEvent, WebhookDelivery, WebhookMessage
from app.pipeline import Scorer
from app.policy import service as policies
from app.policy.schemas import PolicyBody
from app.webhooks import service as webhooks
from app.webhooks.schemas import EVENT_TYPES, EndpointIn, EventType
from tests.conftest import ScoredTransport, make_key, stored_customers, stored_events

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


# Few customers, days and stores, so that events share visits, weeks and categories.
days = st.dates(min_value=date(2024, 1, 1), max_value=date(2025, 6, 30))
hours = st.integers(min_value=0, max_value=23)


@st.composite
def purchase_events(draw: st.DrawFn, event_id: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["purchase", "refund"]))
    body: dict[str, Any] = {
        "event_id": event_id,
        "customer_id": draw(st.sampled_from(["card-1", "card-2", "card-3"])),
        "store_id": draw(st.sampled_from(["north", "south"])),
        "occurred_at": datetime.combine(draw(days), time(draw(hours)), tzinfo=UTC)
        .astimezone(draw(offsets))
        .isoformat()
        if draw(st.booleans())
        else draw(instants).astimezone(draw(offsets)).isoformat(),
        "amount": draw(amounts),
        "currency": draw(st.sampled_from(["EUR", "eur"])),  # the service's one currency
        "kind": kind,
    }
    if draw(st.booleans()):
        body["items"] = draw(items)
    if draw(st.booleans()):
        body["attributes"] = {"segment": draw(st.sampled_from(["gold", "silver"]))}
    if draw(st.booleans()):
        body["staff_id"] = draw(st.sampled_from(["sam", "lee"]))
    if kind == "refund" and draw(st.booleans()):
        body["refunds_event_id"] = ANCHOR["event_id"]
        body["customer_id"] = ANCHOR["customer_id"]
    return body


# The purchase that linked refunds reverse, stored first in every run (a refund must come
# after its purchase), and large enough that they never exceed it whatever their order.
ANCHOR = {
    "event_id": "anchor",
    "customer_id": "card-1",
    "store_id": "north",
    "occurred_at": "2024-01-01T10:00:00+00:00",
    "amount": "10000000",
    "currency": "EUR",
}


@st.composite
def event_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=25))
    return [draw(purchase_events(f"e-{i}")) for i in range(count)]


async def _post_all(client: httpx.AsyncClient, key: str, events: list[dict[str, Any]]) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    response = await client.post("/v1/purchases/batch", json={"events": events}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == 0, response.text


async def _store(
    settings: Settings, deliveries: list[list[dict[str, Any]]], scorer_batch: int = 0
) -> list[Any]:
    """Post the deliveries in order to a fresh service; return the events, the patterns and
    the alerts left open (evaluated at one fixed moment, after the last event).

    The service's scorer folds what each request stored before the next one is sent; with
    `scorer_batch`, nothing is folded until every delivery is stored, and then a scorer
    folds the queue in micro-batches of that many events, whatever customers they mix."""
    if scorer_batch:
        settings = settings.model_copy(update={"scorer": False})
    app = create_app(settings, clock=lambda: EVALUATED_AT)
    async with LifespanManager(app):
        async with app.state.sessionmaker.begin() as session:
            for table in reversed(Base.metadata.sorted_tables):
                await session.execute(delete(table))
        key = await make_key(app, "till", Scope.INGEST)
        # Half the cases held out: which arm each case lands in is part of the state.
        await app.state.transactions.run(
            lambda c: policies.replace(
                c, PolicyBody(holdout=0.5), source="api", created_by="test", now=EVALUATED_AT
            )
        )
        await app.state.transactions.run(
            lambda c: webhooks.create(
                c, EndpointIn(url="http://127.0.0.1:9/crm", event_types=ALERT_TYPES), utcnow()
            )
        )
        transport = httpx.ASGITransport(app=app) if scorer_batch else ScoredTransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as client:
            await _post_all(client, key, [ANCHOR])
            for delivery in deliveries:
                await _post_all(client, key, delivery)
        if scorer_batch:
            scorer = Scorer(
                app.state.transactions, Evaluator(), lambda: EVALUATED_AT, batch_size=scorer_batch
            )
            stored = sum(len(delivery) for delivery in deliveries) + 1
            assert 0 < await scorer.drain() <= stored
        await _assert_every_alert_change_is_queued(app)
        return [*await stored_events(app), *await stored_customers(app), *await _open(app)]


ALERT_TYPES: list[EventType] = [t for t in EVENT_TYPES if t.startswith("alert.")]


async def _assert_every_alert_change_is_queued(app: FastAPI) -> None:
    """The outbox holds one delivery for each alert change, with the alert as it was."""
    async with app.state.sessionmaker() as session:
        changes = await session.execute(select(AlertEvent.type, AlertEvent.data))
        queued = await session.execute(
            select(WebhookMessage.payload).join(
                WebhookDelivery, WebhookDelivery.message_id == WebhookMessage.id
            )
        )
        expected = sorted(
            orjson.dumps([kind, data], option=orjson.OPT_SORT_KEYS) for kind, data in changes
        )
        found = sorted(
            orjson.dumps([p["type"], p["data"]["alert"]], option=orjson.OPT_SORT_KEYS)
            for (p,) in queued
        )
        assert found == expected


EVALUATED_AT = datetime(2026, 1, 2, tzinfo=UTC)


async def _open(app: FastAPI) -> list[tuple[Any, ...]]:
    async with app.state.sessionmaker() as session:
        rows = await session.execute(
            select(Alert.customer_id, Alert.rule, Alert.severity, Alert.evidence, Alert.arm)
            .where(Alert.resolved_at.is_(None))
            .order_by(Alert.customer_id, Alert.rule)
        )
        return [tuple(row) for row in rows]


# Each example runs its own event loop and service: nothing carries over between examples.
PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(events=event_lists(), data=st.data())
def test_split_shuffled_and_repeated_batches_store_the_same_events(
    settings: Settings, events: list[dict[str, Any]], data: Any
) -> None:
    expected = asyncio.run(_store(settings, [events]))
    assert len([e for e in expected if "event_id" in e]) == len(events) + 1  # and the anchor

    shuffled = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(events) - 1)), max_size=4)))
    bounds = zip([0, *cuts], [*cuts, len(shuffled)], strict=True)
    chunks = [shuffled[a:b] for a, b in bounds if shuffled[a:b]]
    repeated = data.draw(st.lists(st.sampled_from(chunks), max_size=3))
    deliveries = data.draw(st.permutations(chunks + repeated))
    assert asyncio.run(_store(settings, deliveries)) == expected


@PROPERTY_SETTINGS
@given(events=event_lists(), data=st.data())
def test_the_scorer_folds_the_same_state_whatever_its_micro_batches(
    settings: Settings, events: list[dict[str, Any]], data: Any
) -> None:
    """All of it stored first, in shuffled and repeated parts, then folded by a scorer in
    micro-batches of a random size: the same events, patterns, open alerts and outbox."""
    expected = asyncio.run(_store(settings, [events]))
    shuffled = data.draw(st.permutations(events))
    cut = data.draw(st.integers(0, len(shuffled)))
    deliveries = [part for part in (shuffled[:cut], shuffled[cut:], shuffled[:cut]) if part]
    batch = data.draw(st.integers(1, 30))
    assert asyncio.run(_store(settings, deliveries, scorer_batch=batch)) == expected


@PROPERTY_SETTINGS
@given(events=event_lists())
def test_batch_posted_twice_stores_the_same_events(
    settings: Settings, events: list[dict[str, Any]]
) -> None:
    once = asyncio.run(_store(settings, [events]))
    assert asyncio.run(_store(settings, [events, events])) == once
