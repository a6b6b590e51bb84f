"""The ingest endpoints are served without the router (app.ingestion.asgi): every answer
must be the one the routed endpoint gives, byte for byte but the event ids."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.ingestion.asgi import IngestRoutes
from tests.conftest import Keys, event

pytestmark = pytest.mark.anyio


def _ingest_routes(app: FastAPI) -> IngestRoutes:
    layer: Any = app.middleware_stack
    while not isinstance(layer, IngestRoutes):
        layer = layer.app
    return layer


def _entry(app: FastAPI, inner: ASGIApp) -> ASGIApp:
    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app
        scope.setdefault("state", {})["request_id"] = "req-fixed"
        await inner(scope, receive, send)

    return call


CASES: list[tuple[str, str, dict[str, str], Any]] = [
    ("accepted", "/v1/purchases", {}, "EVENT"),
    ("batch", "/v1/purchases/batch", {}, {"events": ["EVENT", {"event_id": "x"}]}),
    ("malformed", "/v1/purchases", {}, b"{not json"),
    ("bad field", "/v1/purchases", {}, {**event("ID"), "amount": "-1"}),
    ("empty batch", "/v1/purchases/batch", {}, {"events": []}),
    ("no key", "/v1/purchases", {"authorization": ""}, "EVENT"),
    ("bad key", "/v1/purchases", {"authorization": "Bearer rk_00000000_" + "A" * 32}, "EVENT"),
    ("wrong scheme", "/v1/purchases", {"authorization": "Basic abc"}, "EVENT"),
    ("wrong scope", "/v1/purchases", {"authorization": "READ"}, "EVENT"),
    ("text body", "/v1/purchases", {"content-type": "text/plain"}, "EVENT"),
    ("bad idempotency key", "/v1/purchases", {"idempotency-key": "x" * 300}, "EVENT"),
]


@pytest.mark.parametrize(("name", "path", "headers", "body"), CASES, ids=[c[0] for c in CASES])
async def test_the_unrouted_endpoints_answer_as_the_routed_ones(
    app: FastAPI, keys: Keys, name: str, path: str, headers: dict[str, str], body: Any
) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
        await c.get("/healthz")  # builds the middleware stack
    lean = _ingest_routes(app)
    assert set(lean.routes) == {"/v1/purchases", "/v1/purchases/batch"}
    answers = []
    for tag, inner in (("lean", lean), ("routed", lean.app)):
        transport = httpx.ASGITransport(app=_entry(app, inner))
        async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
            sent_headers = {
                "authorization": keys.ingest["Authorization"],
                "content-type": "application/json",
                **headers,
            }
            if sent_headers["authorization"] == "READ":
                sent_headers["authorization"] = keys.read["Authorization"]
            if not sent_headers["authorization"]:
                del sent_headers["authorization"]
            response = await client.post(
                path, content=_body(body, f"{name}-{tag}"), headers=sent_headers
            )
        answers.append(
            (
                response.status_code,
                {k: v for k, v in response.headers.items() if k != "content-length"},
                response.content.replace(f"{name}-{tag}".encode(), b"ID"),
            )
        )
    assert answers[0] == answers[1]


def _body(body: Any, event_id: str) -> bytes:
    if isinstance(body, bytes):
        return body

    def fill(value: Any) -> Any:
        if value == "EVENT":
            return event(event_id)
        if value == "ID":
            return event_id
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    return orjson.dumps(fill(body))
