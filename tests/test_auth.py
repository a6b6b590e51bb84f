from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select

from app.kit.auth import hash_key
from app.main import create_app
from app.models import ApiKey
from tests.conftest import Keys, _truncate, event, settings_for

pytestmark = pytest.mark.anyio

# Every route that needs a key, with the scope it needs and a request that would pass.
PROTECTED = [
    ("POST", "/v1/purchases", "ingest", {"json": event()}),
    ("POST", "/v1/purchases/batch", "ingest", {"json": {"events": [event()]}}),
    ("GET", "/v1/keys", "manage", {}),
    ("POST", "/v1/keys", "manage", {"json": {"name": "n", "scopes": ["read"]}}),
    ("DELETE", "/v1/keys/999999", "manage", {}),
    ("GET", "/v1/customers/card-1", "read", {}),
    ("GET", "/v1/policy", "manage", {}),
    ("PUT", "/v1/policy", "manage", {"json": {}}),
    ("GET", "/v1/alerts", "read", {}),
    ("GET", "/v1/alerts/changes", "read", {}),
    ("GET", "/v1/cases", "read", {}),
    ("GET", "/v1/alerts/999999", "read", {}),
    ("POST", "/v1/alerts/999999/acknowledge", "read", {"json": {}}),
    ("POST", "/v1/alerts/999999/assign", "read", {"json": {"to": "jon"}}),
    ("POST", "/v1/alerts/999999/notes", "read", {"json": {"text": "called"}}),
    ("POST", "/v1/alerts/999999/snooze", "read", {"json": {"until": "2099-01-01T00:00:00Z"}}),
    ("POST", "/v1/alerts/999999/resolve", "read", {"json": {"outcome": "not_a_defection"}}),
    ("GET", "/v1/reports/defection-rate", "read", {}),
    ("GET", "/v1/reports/reasons", "read", {}),
    ("GET", "/v1/reports/response-times", "read", {}),
    ("GET", "/v1/reports/value-at-risk", "read", {}),
    ("GET", "/v1/reports/outreach-effect", "read", {}),
    ("GET", "/v1/reports/outreach-cases", "read", {}),
    ("GET", "/v1/reports/model-quality", "read", {}),
    ("GET", "/v1/reports/defector-profiles", "read", {}),
    ("GET", "/v1/plans", "read", {}),
    ("GET", "/v1/plans/999999", "read", {}),
    ("POST", "/v1/plans/999999/done", "read", {"json": {}}),
    ("POST", "/v1/plans/999999/cancel", "read", {"json": {}}),
    ("POST", "/v1/webhooks/endpoints", "manage", {"json": {"url": "http://127.0.0.1:9/h"}}),
    ("GET", "/v1/webhooks/endpoints", "manage", {}),
    ("GET", "/v1/webhooks/endpoints/999999", "manage", {}),
    ("PATCH", "/v1/webhooks/endpoints/999999", "manage", {"json": {}}),
    ("DELETE", "/v1/webhooks/endpoints/999999", "manage", {}),
    ("POST", "/v1/webhooks/endpoints/999999/rotate-secret", "manage", {"json": {}}),
    ("GET", "/v1/webhooks/endpoints/999999/deliveries", "manage", {}),
    ("GET", "/v1/webhooks/endpoints/999999/deliveries/999999", "manage", {}),
    ("POST", "/v1/webhooks/endpoints/999999/deliveries/999999/retry", "manage", {}),
    ("GET", "/v1/webhooks/endpoints/999999/attempts", "manage", {}),
    (
        "POST",
        "/v1/webhooks/endpoints/999999/recover",
        "manage",
        {"json": {"since": "2026-01-01T00:00:00Z"}},
    ),
    ("GET", "/v1/set-aside", "manage", {}),
    ("POST", "/v1/set-aside/999999/retry", "manage", {}),
]
PROTECTED_IDS = [f"{method} {path}" for method, path, _, _ in PROTECTED]


def test_every_route_is_listed_here() -> None:
    """A new route must be added to PROTECTED (or be one of the public ones)."""
    from app.openapi import render_openapi

    public = {"/healthz", "/readyz", "/metrics"}
    paths = orjson.loads(render_openapi())["paths"]
    routes = {
        (
            method.upper(),
            path.replace("{key_id}", "999999")
            .replace("{customer_id}", "card-1")
            .replace("{alert_id}", "999999")
            .replace("{endpoint_id}", "999999")
            .replace("{delivery_id}", "999999")
            .replace("{item_id}", "999999")
            .replace("{plan_id}", "999999"),
        )
        for path, operations in paths.items()
        for method in operations
        if path not in public
    }
    assert routes == {(method, path) for method, path, _, _ in PROTECTED}


@pytest.fixture(scope="module")
async def keyless(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """One service for the requests without a valid key, which change nothing: a service
    started per request took most of this module's time (about 0.3 s each, 550 of them)."""
    application = create_app(settings_for(database_url))
    async with LifespanManager(application):
        await _truncate(application)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as http:
            yield http


@pytest.mark.parametrize(("method", "path", "scope", "kwargs"), PROTECTED, ids=PROTECTED_IDS)
async def test_missing_key_is_401(
    keyless: httpx.AsyncClient, method: str, path: str, scope: str, kwargs: dict[str, object]
) -> None:
    response = await keyless.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer rk_00000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # well-formed, unknown
        "Bearer not-a-key",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
    ],
    ids=["unknown", "malformed", "basic auth", "empty bearer"],
)
@pytest.mark.parametrize(("method", "path", "scope", "kwargs"), PROTECTED, ids=PROTECTED_IDS)
async def test_invalid_key_is_401(
    keyless: httpx.AsyncClient,
    method: str,
    path: str,
    scope: str,
    kwargs: dict[str, object],
    authorization: str,
) -> None:
    headers = {"Authorization": authorization}
    response = await keyless.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path", "scope", "kwargs"), PROTECTED, ids=PROTECTED_IDS)
async def test_wrong_scope_is_403_and_right_scope_passes(
    client: httpx.AsyncClient,
    keys: Keys,
    method: str,
    path: str,
    scope: str,
    kwargs: dict[str, object],
) -> None:
    all_keys = {"ingest": keys.ingest, "read": keys.read, "manage": keys.manage}
    for name, headers in all_keys.items():
        response = await client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
        if name == scope:
            assert response.status_code not in (401, 403), response.text
        else:
            assert response.status_code == 403, (name, response.text)
            assert response.json()["code"] == "forbidden"
            assert f"'{scope}' scope" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path", "scope", "kwargs"), PROTECTED, ids=PROTECTED_IDS)
async def test_revoked_key_is_401(
    client: httpx.AsyncClient,
    keys: Keys,
    method: str,
    path: str,
    scope: str,
    kwargs: dict[str, object],
) -> None:
    created = await client.post(
        "/v1/keys", json={"name": "doomed", "scopes": [scope]}, headers=keys.manage
    )
    doomed = {"Authorization": f"Bearer {created.json()['key']}"}
    warm = await client.request(method, path, headers=doomed, **kwargs)  # type: ignore[arg-type]
    assert warm.status_code not in (401, 403)
    revoked = await client.delete(f"/v1/keys/{created.json()['id']}", headers=keys.manage)
    assert revoked.status_code == 200
    response = await client.request(method, path, headers=doomed, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 401


async def test_created_key_is_shown_once_and_stored_only_as_a_hash(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    response = await client.post(
        "/v1/keys", json={"name": "till-12", "scopes": ["ingest", "read"]}, headers=keys.manage
    )
    assert response.status_code == 201
    created = response.json()
    assert created["key"].startswith(created["prefix"] + "_")
    assert created["prefix"].startswith("rk_")
    assert created["scopes"] == ["ingest", "read"]

    listed = (await client.get("/v1/keys", headers=keys.manage)).json()["items"]
    entry = next(item for item in listed if item["prefix"] == created["prefix"])
    assert "key" not in entry
    assert entry["name"] == "till-12"
    assert created["key"] not in str(listed)

    async with app.state.sessionmaker() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.prefix == created["prefix"]))
    assert row is not None
    assert row.key_hash == hash_key(created["key"])
    assert created["key"].encode() not in row.key_hash


async def test_last_used_is_recorded(client: httpx.AsyncClient, keys: Keys) -> None:
    listed = (await client.get("/v1/keys", headers=keys.manage)).json()["items"]
    by_name = {item["name"]: item for item in listed}
    assert by_name["admin"]["last_used_at"] is not None
    assert by_name["till-1"]["last_used_at"] is None
    await client.post("/v1/purchases", json=event(), headers=keys.ingest)
    listed = (await client.get("/v1/keys", headers=keys.manage)).json()["items"]
    assert {item["name"]: item for item in listed}["till-1"]["last_used_at"] is not None


async def test_revoked_keys_are_hidden_unless_asked(client: httpx.AsyncClient, keys: Keys) -> None:
    listed = (await client.get("/v1/keys", headers=keys.manage)).json()["items"]
    ops = next(item for item in listed if item["name"] == "ops")
    await client.delete(f"/v1/keys/{ops['id']}", headers=keys.manage)
    active = (await client.get("/v1/keys", headers=keys.manage)).json()["items"]
    everything = (
        await client.get("/v1/keys", params={"include_revoked": "true"}, headers=keys.manage)
    ).json()["items"]
    assert "ops" not in {item["name"] for item in active}
    assert next(i for i in everything if i["name"] == "ops")["revoked_at"] is not None


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"name": "x", "scopes": ["root"]}, "/scopes/0"),
        ({"name": "x", "scopes": []}, "/scopes"),
        ({"name": "", "scopes": ["read"]}, "/name"),
        ({"scopes": ["read"]}, "/name"),
    ],
    ids=["unknown scope", "no scope", "empty name", "missing name"],
)
async def test_bad_key_requests(
    client: httpx.AsyncClient, keys: Keys, body: dict[str, object], pointer: str
) -> None:
    response = await client.post("/v1/keys", json=body, headers=keys.manage)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["pointer"] for e in response.json()["errors"]] == [pointer]


async def test_revoking_an_unknown_key_is_404(client: httpx.AsyncClient, keys: Keys) -> None:
    response = await client.delete("/v1/keys/424242", headers=keys.manage)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_a_real_prefix_with_a_wrong_secret_is_401(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    """The prefix finds the key; the secret's digest must still match (compared in constant
    time), whether or not the right key was used, and so cached, just before."""
    real = keys.raw["read"]
    prefix, secret = real[: len("rk_00000000")], real[len("rk_00000000_") :]
    forged = f"{prefix}_{secret[::-1]}"
    assert forged != real
    assert (await client.get("/v1/alerts", headers=keys.read)).status_code == 200
    response = await client.get("/v1/alerts", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
