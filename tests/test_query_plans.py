"""Every statement of the hot paths (ingest, the scorer, the sweeper, a customer's page) is
planned with an index on tables of a realistic size, on both databases: a query whose cost
grows with history is caught here, not in production."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import Connection, event

from app.alerts.service import sweep
from app.ingestion import service as ingestion
from app.kit.db import utcnow
from tests.conftest import Clock, Keys
from tests.test_alerts import visits, weekly

pytestmark = pytest.mark.anyio

CUSTOMERS = 2000
WEEKS = 15  # 30,000 events and visit days: enough for either planner to prefer its indexes
BIG = (
    "purchase_events",
    "customers",
    "customer_visit_days",
    "scorer_queue",
    "alerts",
    "alert_events",
)  # (idempotency_records stays small here: one row; its look-ups are by key or id)
# Statements that read a whole (bounded) table on purpose.
ALLOWED = (
    # The backlog gauge counts the queue: it holds at most RADAR_SCORER_MAX_BACKLOG events.
    re.compile(r"^SELECT count\(\*\) FROM scorer_queue$"),
)
SKIPPED = re.compile(
    r"^(BEGIN|COMMIT|ROLLBACK|PRAGMA|SELECT pg_notify|SELECT 1\b|SAVEPOINT|RELEASE)"
)


def _history(first: date) -> list[dict[str, Any]]:
    return [
        event
        for number in range(CUSTOMERS)
        for event in visits(f"card-{number:05d}", weekly(first, WEEKS))
    ]


async def _fill(app: FastAPI) -> None:
    events = _history(date(2026, 1, 5))
    for start in range(0, len(events), 5000):
        body = orjson.dumps({"events": events[start : start + 5000]})
        plan = ingestion.plan_store(
            ingestion.parse_batch(body, 5000), received_at=utcnow(), max_future_skew=timedelta(0)
        )
        await app.state.transactions.run(partial(_apply, plan=plan))
        await app.state.scorer.drain()
    await app.state.transactions.run(_analyze)


def _apply(connection: Connection, plan: ingestion.StorePlan) -> None:
    ingestion.apply_plan(connection, plan)


def _analyze(connection: Connection) -> None:
    connection.exec_driver_sql("ANALYZE")


def _record(app: FastAPI) -> tuple[list[tuple[str, Any]], Any]:
    recorded: list[tuple[str, Any]] = []
    engines = [app.state.engine.sync_engine]
    sync_engine = getattr(app.state.transactions, "_sync_engine", None)
    if sync_engine is not None:
        engines.append(sync_engine)

    def listen(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        rows = many and parameters and isinstance(parameters[0], tuple | list | dict)
        one = parameters[0] if rows else parameters
        recorded.append((statement, tuple(one) if isinstance(one, list) else one))

    for engine in engines:
        event.listen(engine, "before_cursor_execute", listen)

    def stop() -> None:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", listen)

    return recorded, stop


def _full_scans(connection: Connection, statement: str, parameters: Any) -> list[str]:
    parameters = parameters or None
    if connection.dialect.name == "postgresql":
        plan = [row[0] for row in connection.exec_driver_sql("EXPLAIN " + statement, parameters)]
        return [
            line.strip()
            for line in plan
            if (found := re.search(r"Seq Scan on (\w+)", line)) and found.group(1) in BIG
        ]
    plan = [
        row[3] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
    ]
    return [
        line
        for line in plan
        if (found := re.match(r"SCAN (\w+)(?: AS \w+)?(.*)", line))
        and found.group(1) in BIG
        and "USING" not in found.group(2)
    ]


async def test_the_hot_paths_use_indexes_at_a_realistic_size(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    clock.set(datetime(2026, 4, 20, 9, tzinfo=UTC))
    await _fill(app)
    recorded, stop = _record(app)
    try:
        # Ingest: new and known customers, a duplicate, a refund, an idempotent request.
        batch = [
            *visits("card-00001", [date(2026, 4, 20)], tag="-new"),
            *visits("card-new", [date(2026, 4, 20)]),
        ]
        for _ in range(2):
            response = await client.post(
                "/v1/purchases/batch", json={"events": batch}, headers=keys.ingest
            )
            assert response.status_code == 200, response.text
        refund = {
            **visits("card-00001", [date(2026, 4, 20)], tag="-refund")[0],
            "kind": "refund",
            "refunds_event_id": batch[0]["event_id"],
            "amount": "5",
        }
        response = await client.post(
            "/v1/purchases",
            json=refund,
            headers={**keys.ingest, "Idempotency-Key": "plan-check"},
        )
        assert response.status_code == 201, response.text
        # The sweeper, with customers due; a customer's page.
        clock.set(datetime(2026, 6, 1, 9, tzinfo=UTC))
        swept = await sweep(app.state.transactions, app.state.evaluator, clock, batch_size=50)
        assert swept.customers > 0
        page = await client.get("/v1/customers/card-00001", headers=keys.read)
        assert page.status_code == 200, page.text
    finally:
        stop()

    statements = {
        statement: parameters
        for statement, parameters in recorded
        if not SKIPPED.match(statement.strip()) and not any(a.match(statement) for a in ALLOWED)
    }
    assert len(statements) >= 10, statements.keys()  # the recording saw the paths

    def check(connection: Connection) -> dict[str, list[str]]:
        found = {}
        for statement, parameters in statements.items():
            scans = _full_scans(connection, statement, parameters)
            if scans:
                found[statement] = scans
        return found

    scans = await app.state.transactions.read(check)
    assert scans == {}, "\n\n".join(f"{s}\n  {' | '.join(p)}" for s, p in scans.items())
