"""Fixtures: every test runs on a real SQLite file and on the real PostgreSQL server.

PostgreSQL comes from RADAR_TEST_POSTGRES_URL (default: the local server's `test`
database). Outside CI a missing server skips those tests; with CI=true it fails them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.keys.service import create_key
from app.kit.auth import Scope
from app.kit.db import Base, create_engine, unit_of_work, utcnow
from app.kit.migrations import upgrade
from app.kit.settings import Settings
from app.main import create_app

POSTGRES_URL = os.environ.get(
    "RADAR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RUN_SLOW = IN_CI or os.environ.get("RADAR_TEST_SLOW", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow system tests (processes killed under load, replicas, a database outage, the
    browser, the simulated chain, the fuzzer: about half the suite's time) always run in CI;
    locally they are skipped, and listed as such, unless RADAR_TEST_SLOW=1."""
    if RUN_SLOW:
        return
    skip = pytest.mark.skip(reason="slow system test: runs in CI, or with RADAR_TEST_SLOW=1")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


async def _reset_postgres(url: str) -> None:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
    try:
        await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await connection.close()


async def _migrate(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def _postgres_or_skip() -> str:
    try:
        asyncio.run(_reset_postgres(POSTGRES_URL))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc!r}"
        if IN_CI:
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    return POSTGRES_URL


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated, empty database of each kind, shared by the session's tests."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'radar.db'}"
    else:
        url = _postgres_or_skip()
    asyncio.run(_migrate(Settings(database_url=url)))
    return url


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'radar.db'}"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for(database_url)


def settings_for(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        environment="test",
        migrate_on_start=False,
        # fsync per commit is the production default; the tests do not need power-cut safety.
        sqlite_synchronous="NORMAL",
        log_json=False,
        # Tests sweep and refit when they choose to (the loops would race their setup).
        sweep_interval=timedelta(0),
        refit_interval=timedelta(0),
        model_quality_interval=timedelta(0),
        # (Housekeeping at start-up would race the truncation of the tables between tests.)
        housekeeping_interval=timedelta(0),
        # ...and deliver webhooks when they choose to, to receivers on this machine only.
        webhook_dispatcher=False,
        webhook_allowed_networks=["127.0.0.1/32", "::1/128"],
        # Rate limits are tested where they are the subject (test_rate_limits.py).
        rate_limit_ingest="off",
        rate_limit_read="off",
    )


async def _truncate(app: FastAPI) -> None:
    """Empty every table of the started service. Its loops (the scorer, the backlog count)
    run from start-up: PostgreSQL may break a lock cycle between them and the TRUNCATE by
    aborting the TRUNCATE, which is then simply run again."""
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    for attempt in range(5):
        try:
            async with app.state.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    await connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
                else:
                    for table in tables:
                        await connection.execute(text(f"DELETE FROM {table}"))  # noqa: S608
            return
        except DBAPIError as exc:
            if "deadlock detected" not in str(exc) or attempt == 4:
                raise
            await asyncio.sleep(0.05)


class Clock:
    """The time the service evaluates customers at: real time until a test sets it."""

    def __init__(self) -> None:
        self.now: datetime | None = None

    def __call__(self) -> datetime:
        return self.now or utcnow()

    def set(self, when: str | datetime) -> datetime:
        self.now = datetime.fromisoformat(when) if isinstance(when, str) else when
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def app(settings: Settings, clock: Clock) -> AsyncIterator[FastAPI]:
    application = create_app(settings, clock=clock)
    async with LifespanManager(application):
        await _truncate(application)
        yield application


class ScoredTransport(httpx.ASGITransport):
    """The app in process, read-your-writes: once an ingest request is answered, the test
    waits for the app's own scorer to fold what is queued (as a client polling until
    `pending_events` is 0 would), so that what a test reads next includes its events.
    Tests of the scorer's lag itself use a plain `httpx.ASGITransport`."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if (
            request.method == "POST"
            and request.url.path.startswith("/v1/purchases")
            and response.status_code < 300
        ):
            app: Any = self.app
            await app.state.scorer.drain()
        return response


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = ScoredTransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as http:
        yield http


@dataclass
class Keys:
    ingest: dict[str, str]
    read: dict[str, str]
    manage: dict[str, str]
    raw: dict[str, str]


async def make_key(app: FastAPI, name: str, *scopes: Scope) -> str:
    async with unit_of_work(app.state.sessionmaker) as session:
        created = await create_key(session, name, scopes)
    return created.key


@pytest.fixture
async def keys(app: FastAPI) -> Keys:
    raw = {
        "ingest": await make_key(app, "till-1", Scope.INGEST),
        "read": await make_key(app, "ops", Scope.READ),
        "manage": await make_key(app, "admin", Scope.MANAGE),
    }
    headers = {name: {"Authorization": f"Bearer {key}"} for name, key in raw.items()}
    return Keys(headers["ingest"], headers["read"], headers["manage"], raw)


def event(event_id: str = "e-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "customer_id": "card-1",
        "store_id": "store-1",
        "occurred_at": "2026-01-15T18:05:00+01:00",
        "amount": "42.50",
        "currency": "EUR",
        "kind": "purchase",
    }
    body.update(overrides)
    return body


async def stored_events(app: FastAPI) -> list[dict[str, Any]]:
    """Every stored event as plain values, minus what the server stamps (id, received_at)."""
    async with app.state.sessionmaker() as session:
        from sqlalchemy import select

        from app.models import PurchaseEvent

        rows = await session.scalars(select(PurchaseEvent).order_by(PurchaseEvent.event_id))
        return [
            {
                column.name: getattr(row, column.name)
                for column in PurchaseEvent.__table__.columns
                if column.name not in ("id", "received_at")
            }
            for row in rows
        ]


async def stored_customers(app: FastAPI) -> list[dict[str, Any]]:
    """Every customer pattern and visit day, minus the write and next check times (which
    depend on when the customer was evaluated, not on the events)."""
    from sqlalchemy import select

    from app.models import Customer, CustomerVisitDay

    async with app.state.sessionmaker() as session:
        rows = await session.scalars(select(Customer).order_by(Customer.customer_id))
        customers = [
            {
                column.name: getattr(row, column.name)
                for column in Customer.__table__.columns
                if column.name not in ("updated_at", "next_check_at")
            }
            for row in rows
        ]
        days = await session.execute(
            select(CustomerVisitDay.customer_id, CustomerVisitDay.day).order_by(
                CustomerVisitDay.customer_id, CustomerVisitDay.day
            )
        )
        return [*customers, {"visit_days": [tuple(day) for day in days]}]


CDNOW_SAMPLE = Path(__file__).resolve().parents[1] / "bench" / "data" / "CDNOW_sample.txt"


@pytest.fixture(scope="session")
def calibration() -> tuple[Any, Any, Any]:
    """(x, t_x, T) in weeks of the CDNOW sample's 2,357 customers, to 1997-09-30: the data
    the published BG/NBD and Pareto/NBD estimates were fitted on."""
    from app.scoring.history import summarise

    purchases = []
    for line in CDNOW_SAMPLE.read_text().splitlines():
        customer, _, day, _, _ = line.split()
        purchases.append((customer, datetime.strptime(day, "%Y%m%d").date()))
    summary = summarise(purchases, date(1997, 9, 30))
    assert len(summary.customers) == 2357
    return summary.x, summary.t_x / 7.0, summary.T / 7.0
