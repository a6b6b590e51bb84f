"""Per-key rate limits: 429 + Retry-After once a key's budget is spent, per key and kind."""

from __future__ import annotations

import anyio
import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from app.kit.auth import Scope
from app.kit.ratelimit import RateLimiter
from app.kit.settings import Settings
from tests.conftest import Keys, event, make_key, stored_events

pytestmark = pytest.mark.anyio


def limit(app: FastAPI, settings: Settings, *, ingest: str = "off", read: str = "off") -> None:
    """Give the running app a fresh limiter with these limits (minutes: no window slides
    during a test)."""
    app.state.rate_limiter = RateLimiter(
        settings.model_copy(update={"rate_limit_ingest": ingest, "rate_limit_read": read})
    )


def assert_limited(response: httpx.Response, window_seconds: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= window_seconds


async def test_ingest_beyond_the_limit_is_429_and_stores_nothing(
    app: FastAPI, settings: Settings, client: httpx.AsyncClient, keys: Keys
) -> None:
    limit(app, settings, ingest="3/minute")
    for n in range(3):
        response = await client.post("/v1/purchases", json=event(f"e-{n}"), headers=keys.ingest)
        assert response.status_code == 201, response.text
    refused = await client.post("/v1/purchases", json=event("e-3"), headers=keys.ingest)
    assert_limited(refused, 60)
    batch = {"events": [event("e-4"), event("e-5")]}
    assert_limited(await client.post("/v1/purchases/batch", json=batch, headers=keys.ingest), 60)
    assert sorted(e["event_id"] for e in await stored_events(app)) == ["e-0", "e-1", "e-2"]


async def test_each_key_and_kind_has_its_own_budget(
    app: FastAPI, settings: Settings, client: httpx.AsyncClient, keys: Keys
) -> None:
    limit(app, settings, ingest="1/minute", read="2/minute")
    other_till = {"Authorization": f"Bearer {await make_key(app, 'till-2', Scope.INGEST)}"}
    assert (await client.post("/v1/purchases", json=event(), headers=keys.ingest)).is_success
    assert_limited(await client.post("/v1/purchases", json=event(), headers=keys.ingest), 60)
    # Another key, and reads with the first key's neighbours, are not held back.
    assert (await client.post("/v1/purchases", json=event("e-2"), headers=other_till)).is_success
    for _ in range(2):
        assert (await client.get("/v1/alerts", headers=keys.read)).status_code == 200
    assert_limited(await client.get("/v1/customers/card-1", headers=keys.read), 60)
    # Management routes count as reads of their own key.
    for _ in range(2):
        assert (await client.get("/v1/keys", headers=keys.manage)).status_code == 200
    assert_limited(await client.get("/v1/policy", headers=keys.manage), 60)


async def test_refused_requests_do_not_use_up_the_budget(
    app: FastAPI, settings: Settings, client: httpx.AsyncClient, keys: Keys
) -> None:
    """A request refused by one limit is not counted by the others, nor is an unknown key."""
    limit(app, settings, read="3/minute;2/second")
    bad = {"Authorization": "Bearer rk_00000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
    for _ in range(5):
        assert (await client.get("/v1/alerts", headers=bad)).status_code == 401
    assert (await client.get("/v1/alerts", headers=keys.read)).status_code == 200
    assert (await client.get("/v1/alerts", headers=keys.read)).status_code == 200
    # The per-second limit refuses the third. Had the minute limit counted it, the next
    # second's request would be its fourth, and refused.
    assert_limited(await client.get("/v1/alerts", headers=keys.read), 1)
    await anyio.sleep(1.1)
    assert (await client.get("/v1/alerts", headers=keys.read)).status_code == 200
    assert_limited(await client.get("/v1/alerts", headers=keys.read), 60)


async def test_off_means_unlimited(
    app: FastAPI, settings: Settings, client: httpx.AsyncClient, keys: Keys
) -> None:
    limit(app, settings, ingest="off", read="1/minute")
    for n in range(30):
        response = await client.post("/v1/purchases", json=event(f"e-{n}"), headers=keys.ingest)
        assert response.status_code == 201
    assert len(await stored_events(app)) == 30


@pytest.mark.parametrize("value", ["lots", "10/fortnight", "-1/second", "10 per"])
def test_a_malformed_limit_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ValidationError, match="rate_limit_read") as raised:
        Settings(rate_limit_read=value)
    assert "not a rate limit" in str(raised.value)


def test_the_defaults_limit_both_kinds() -> None:
    settings = Settings()
    assert settings.rate_limit_ingest != "off"
    assert settings.rate_limit_read != "off"
