from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.kit.settings import Settings
from app.main import create_app
from tests.conftest import Keys, event

pytestmark = pytest.mark.anyio
UNREACHABLE_DATABASE = "postgresql://nobody@127.0.0.1:1/none"


@asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client for an app of its own, started and stopped around the block."""
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as http:
            yield http


async def test_healthz_and_readyz_need_no_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"
    assert ready.json()["schema_revision"] is not None


async def test_readyz_reports_pending_migrations(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}", migrate_on_start=False)
    async with service(settings) as http:
        response = await http.get("/readyz")
        assert (await http.get("/healthz")).status_code == 200
    assert response.status_code == 503
    assert response.json()["code"] == "migrations_pending"


async def test_readyz_reports_an_unreachable_database() -> None:
    async with service(Settings(database_url=UNREACHABLE_DATABASE, migrate_on_start=False)) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"
    assert response.headers["retry-after"] == "5"


async def test_migrations_apply_on_start(tmp_path: Path) -> None:
    async with service(Settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}")) as http:
        assert (await http.get("/readyz")).status_code == 200


async def test_request_id_is_generated_or_echoed(client: httpx.AsyncClient) -> None:
    generated = (await client.get("/healthz")).headers["x-request-id"]
    assert len(generated) == 32
    echoed = await client.get("/healthz", headers={"X-Request-ID": "till-12.req:7"})
    assert echoed.headers["x-request-id"] == "till-12.req:7"
    unsafe = await client.get("/healthz", headers={"X-Request-ID": "a b\tc"})
    assert unsafe.headers["x-request-id"] != "a b\tc"


async def test_metrics_count_requests_and_event_outcomes(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    events = [event("e-1"), event("e-1"), event("e-2", amount="-1")]
    await client.post("/v1/purchases/batch", json={"events": events}, headers=keys.ingest)
    text = (await client.get("/metrics")).text
    assert 'radar_events_total{result="accepted"} 1.0' in text
    assert 'radar_events_total{result="duplicate"} 1.0' in text
    assert 'radar_events_total{result="rejected"} 1.0' in text
    assert (
        'radar_http_requests_total{method="POST",route="/v1/purchases/batch",status="200"} 1.0'
        in text
    )
    assert (
        'radar_http_request_duration_seconds_count{method="POST",route="/v1/purchases/batch"}'
        in text
    )


async def test_requests_fail_fast_with_503_when_the_database_is_down() -> None:
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/none", migrate_on_start=False)
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as http:
            response = await http.post(
                "/v1/purchases",
                json=event(),
                headers={"Authorization": "Bearer rk_00000000_" + "A" * 32},
            )
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "database_unavailable"
    assert response.headers["retry-after"] == "2"


async def test_an_unexpected_error_is_a_problem_with_the_request_id(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise RuntimeError("bug")

    app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as http:
        response = await http.get("/boom", headers={"X-Request-ID": "req-boom"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-boom"
    assert response.json()["code"] == "internal_error"
    assert response.json()["request_id"] == "req-boom"
    assert "bug" not in response.text
    assert any(r.name == "radar.errors" and r.exc_info for r in caplog.records)
