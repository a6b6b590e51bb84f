"""The streaming scorer: ingest only appends; scorers fold each event exactly once, whatever
order transactions commit in and however many scorers run; the backlog is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, timedelta
from functools import partial
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import Connection

from app import pipeline
from app.alerts.service import Evaluator
from app.customers import service as customers
from app.customers.repository import pending_events
from app.ingestion import service as ingestion
from app.kit.auth import Scope
from app.kit.db import TransactionRunner, create_engine, utcnow
from app.kit.settings import Settings
from app.main import create_app
from app.pipeline import Scorer
from tests.conftest import Clock, Keys, _truncate, make_key, stored_customers
from tests.test_alerts import unresolved, visits, weekly

pytestmark = pytest.mark.anyio


@pytest.fixture
async def quiet_app(settings: Settings, clock: Clock) -> AsyncIterator[FastAPI]:
    """The service without a scorer of its own (as beside `radar score`)."""
    application = create_app(settings.model_copy(update={"scorer": False}), clock=clock)
    async with LifespanManager(application):
        await _truncate(application)
        yield application


async def _client_keys(app: FastAPI) -> tuple[httpx.AsyncClient, Keys]:
    raw = {
        name: await make_key(app, name, scope)
        for name, scope in (("till", Scope.INGEST), ("ops", Scope.READ), ("admin", Scope.MANAGE))
    }
    headers = [{"Authorization": f"Bearer {key}"} for key in raw.values()]
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r.test")
    return client, Keys(headers[0], headers[1], headers[2], raw)


async def _post(client: httpx.AsyncClient, keys: Keys, events: list[dict[str, Any]]) -> None:
    body = {"events": events}
    response = await client.post("/v1/purchases/batch", json=body, headers=keys.ingest)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events), response.text


async def test_ingest_only_appends_and_the_scorer_folds_scores_and_alerts(
    quiet_app: FastAPI, clock: Clock
) -> None:
    app = quiet_app
    clock.set("2026-03-24T09:00:00+00:00")
    client, keys = await _client_keys(app)
    async with client:
        await _post(client, keys, visits("card-1", weekly(date(2026, 1, 5), 6, 0, 3)))
        view = (await client.get("/v1/customers/card-1", headers=keys.read)).json()
        # Stored and answered; not folded: the customer is known, with an empty pattern.
        assert (view["pending_events"], view["pattern"]["visit_days"]) == (12, 0)
        assert view["pattern_updated_at"] is None
        assert app.state.backlog.pending == 12

        assert await app.state.scorer.drain() == 12
        view = (await client.get("/v1/customers/card-1", headers=keys.read)).json()
        assert (view["pending_events"], view["pattern"]["visit_days"]) == (0, 12)
        assert view["pattern_updated_at"] is not None
        assert app.state.backlog.pending == 0

        # Time passes, the customer stays away; when they come back the scorer (not the
        # request) resolves what the sweeper opened.
        clock.set("2026-05-20T09:00:00+00:00")
        swept = await pipeline_sweep(app)
        assert swept == 1
        view = (await client.get("/v1/customers/card-1", headers=keys.read)).json()
        assert "inactivity" in unresolved(view)
        await _post(client, keys, visits("card-1", [date(2026, 5, 20)], tag="-back"))
        assert "inactivity" in unresolved(
            (await client.get("/v1/customers/card-1", headers=keys.read)).json()
        )
        assert await app.state.scorer.drain() == 1
        view = (await client.get("/v1/customers/card-1", headers=keys.read)).json()
        assert unresolved(view) == {}


async def pipeline_sweep(app: FastAPI) -> int:
    from app.alerts.service import sweep

    result = await sweep(app.state.transactions, app.state.evaluator, app.state.clock)
    return result.customers


async def test_the_scorer_in_the_service_follows_ingest_within_a_second(
    app: FastAPI, keys: Keys
) -> None:
    transport = httpx.ASGITransport(app=app)  # no waiting for the scorer: this measures it
    async with httpx.AsyncClient(transport=transport, base_url="http://r.test") as client:
        await _post(client, keys, visits("card-2", weekly(date(2026, 1, 5), 4)))
        started = asyncio.get_running_loop().time()
        while True:
            view = (await client.get("/v1/customers/card-2", headers=keys.read)).json()
            if view["pending_events"] == 0:
                break
            assert asyncio.get_running_loop().time() - started < 1.0, view
            await asyncio.sleep(0.01)
        assert view["pattern"]["visit_days"] == 4
        metrics = (await client.get("/metrics")).text
    assert "radar_scorer_pending_events 0.0" in metrics
    assert "radar_scorer_lag_seconds_count 4.0" in metrics
    assert "radar_scorer_events_total 4.0" in metrics


async def test_above_the_backlog_bound_ingest_answers_503_and_recovers(
    settings: Settings, clock: Clock
) -> None:
    bounded = settings.model_copy(update={"scorer": False, "scorer_max_backlog": 5})
    app = create_app(bounded, clock=clock)
    async with LifespanManager(app):
        await _truncate(app)
        client, keys = await _client_keys(app)
        async with client:
            await _post(client, keys, visits("card-3", weekly(date(2026, 1, 5), 6)))
            refused = await client.post(
                "/v1/purchases/batch",
                json={"events": visits("card-4", [date(2026, 2, 2)])},
                headers=keys.ingest,
            )
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"] == "2"
            assert refused.json()["code"] == "scorer_backlog"
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()["code"]) == (503, "scorer_backlog")
            # Nothing of the refused request was stored.
            missing = await client.get("/v1/customers/card-4", headers=keys.read)
            assert missing.status_code == 404

            assert await app.state.scorer.drain() == 6
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["pending_events"] == 0
            await _post(client, keys, visits("card-4", [date(2026, 2, 2)]))


async def test_events_committed_out_of_id_order_are_all_folded(
    quiet_app: FastAPI, settings: Settings
) -> None:
    """PostgreSQL takes an id at insert, not at commit: an event inserted first and committed
    last must be folded all the same (a cursor on ids would have passed it)."""
    if settings.is_sqlite:
        pytest.skip("SQLite has one writer: transactions commit in the order they insert")
    app = quiet_app
    early = _plan(visits("late-commit", [date(2026, 1, 5)]))
    later = _plan(visits("late-commit", [date(2026, 1, 12)], tag="-2"))
    engine = app.state.engine
    async with engine.connect() as held:
        transaction = await held.begin()
        await held.run_sync(lambda c: ingestion.apply_plan(c, early))  # takes the smaller id
        await app.state.transactions.run(lambda c: ingestion.apply_plan(c, later))
        assert await app.state.scorer.drain() == 1  # the committed one; the other is not yet
        await transaction.commit()
    assert await app.state.scorer.drain() == 1
    (pattern, _) = await stored_customers(app)
    assert pattern["visit_days"] == 2


def _plan(events: list[dict[str, Any]]) -> ingestion.StorePlan:
    import orjson

    candidates = ingestion.parse_batch(orjson.dumps({"events": events}), 1000)
    return ingestion.plan_store(candidates, received_at=utcnow(), max_future_skew=timedelta(0))


async def test_several_scorers_fold_every_event_exactly_once(
    quiet_app: FastAPI, settings: Settings, clock: Clock
) -> None:
    """Three scorers (three engines: as three replicas) drain one queue at once, in small
    batches, over customers whose events are spread through it: each event is folded once,
    and the patterns equal a rebuild from the events."""
    app = quiet_app
    clock.set("2026-06-01T09:00:00+00:00")
    events = [
        event
        for week in range(20)
        for number in range(12)
        for event in visits(f"card-{number}", [date(2026, 1, 5) + timedelta(weeks=week)])
    ]
    for start in range(0, len(events), 40):
        await app.state.transactions.run(partial(_apply, plan=_plan(events[start : start + 40])))
    runners = []
    try:
        for _ in range(3):
            engine = create_engine(settings)
            runners.append((engine, TransactionRunner(engine, settings)))
        scorers = [
            Scorer(transactions, Evaluator(), clock, batch_size=7) for _, transactions in runners
        ]
        folded = await asyncio.gather(*(scorer.drain() for scorer in scorers))
    finally:
        for engine, transactions in runners:
            await transactions.close()
            await engine.dispose()
    assert sum(folded) == len(events)
    if not settings.is_sqlite:
        assert min(folded) > 0, folded  # they shared the work
    live = await stored_customers(app)
    assert [c["visit_days"] for c in live[:-1]] == [20] * 12
    await app.state.transactions.run(pipeline.rebuild)
    assert await stored_customers(app) == live


def _apply(connection: Connection, plan: ingestion.StorePlan) -> None:
    ingestion.apply_plan(connection, plan)


async def test_a_scorer_that_dies_mid_batch_loses_and_doubles_nothing(
    quiet_app: FastAPI, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    """The batch's transaction dies after claiming and folding (a crash before commit): the
    queue rows come back with the rollback, the next scorer folds them once, and the live
    state equals what `radar rebuild` computes."""
    app = quiet_app
    clock.set("2026-06-01T09:00:00+00:00")
    events = visits("card-9", weekly(date(2026, 1, 5), 10, 0, 2))
    await app.state.transactions.run(partial(_apply, plan=_plan(events)))
    real_save = customers.save

    def crash(connection: Connection, states: Any) -> None:
        real_save(connection, states)
        raise KeyboardInterrupt  # not an error a loop catches: the process would be gone

    monkeypatch.setattr(customers, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        await app.state.transactions.run(
            partial(pipeline.score_batch, evaluator=app.state.evaluator, now=clock(), limit=100)
        )
    monkeypatch.setattr(customers, "save", real_save)
    assert await app.state.transactions.read(lambda c: pending_events(c, "card-9")) == 20
    assert await app.state.scorer.drain() == 20
    live = await stored_customers(app)
    assert live[0]["visit_days"] == 20
    await app.state.transactions.run(pipeline.rebuild)
    assert await stored_customers(app) == live
