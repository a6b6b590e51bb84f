"""Every kind of bad input gets a precise problem+json answer and stores nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.kit.settings import Settings
from tests.conftest import Clock, Keys, event, stored_events
from tests.test_webhooks import lapse

pytestmark = pytest.mark.anyio

# (case id, field overrides, expected error code, expected pointer)
BAD_FIELDS: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "attributes with an integer beyond 64 bits",
        {"attributes": {"points": [2**70]}},
        "attributes_not_json",
        "/attributes",
    ),
    # PostgreSQL refuses NUL in text and JSONB: these were 500s there (and a batch holding
    # one was a 500 for every event in it); SQLite stored them.
    ("NUL in an attribute key", {"attributes": {"a\x00": 1}}, "attributes_nul", "/attributes"),
    ("NUL in an attribute", {"attributes": {"a": ["x\x00"]}}, "attributes_nul", "/attributes"),
    ("NUL in the segment", {"attributes": {"segment": "\x00"}}, "attributes_nul", "/attributes"),
    (
        "NUL in a category",
        {"items": [{"category": "wine\x00", "amount": "1"}]},
        "string_pattern_mismatch",
        "/items/0/category",
    ),
    ("amount not a number", {"amount": "abc"}, "decimal_parsing", "/amount"),
    ("amount negative", {"amount": "-5"}, "greater_than_equal", "/amount"),
    ("refund of zero", {"kind": "refund", "amount": 0}, "greater_than", "/amount"),
    ("another currency", {"currency": "USD"}, "currency_not_accepted", "/currency"),
    ("amount too precise", {"amount": "1.23456"}, "decimal_max_places", "/amount"),
    ("amount infinite", {"amount": "Infinity"}, "finite_number", "/amount"),
    ("amount as bool", {"amount": True}, "decimal_type", "/amount"),
    ("unknown currency", {"currency": "ABC"}, "ISO4217", "/currency"),
    ("not a currency of payment", {"currency": "XXX"}, "currency_not_money", "/currency"),
    ("currency wrong type", {"currency": 978}, "string_type", "/currency"),
    ("timestamp as unix number", {"occurred_at": 1700000000}, "timestamp_type", "/occurred_at"),
    (
        "timestamp without offset",
        {"occurred_at": "2026-01-15T18:05:00"},
        "timezone_aware",
        "/occurred_at",
    ),
    (
        "timestamp garbage",
        {"occurred_at": "yesterday"},
        "datetime_from_date_parsing",
        "/occurred_at",
    ),
    (
        "timestamp impossible date",
        {"occurred_at": "2026-02-30T10:00:00Z"},
        "datetime_from_date_parsing",
        "/occurred_at",
    ),
    (
        "timestamp before 1970",
        {"occurred_at": "1969-12-31T23:59:59Z"},
        "timestamp_too_old",
        "/occurred_at",
    ),
    ("event_id too long", {"event_id": "x" * 129}, "string_too_long", "/event_id"),
    ("event_id empty", {"event_id": ""}, "string_too_short", "/event_id"),
    (
        "customer_id with control char",
        {"customer_id": "card\n1"},
        "string_pattern_mismatch",
        "/customer_id",
    ),
    ("customer_id null", {"customer_id": None}, "string_type", "/customer_id"),
    ("kind unknown", {"kind": "exchange"}, "enum", "/kind"),
    (
        "refund link on a purchase",
        {"refunds_event_id": "e-0"},
        "refund_link_on_purchase",
        "/refunds_event_id",
    ),
    ("unknown field", {"colour": "red"}, "extra_forbidden", "/colour"),
    ("items not a list", {"items": {"sku": "a"}}, "list_type", "/items"),
    (
        "item without category",
        {"items": [{"sku": "a", "amount": "1"}]},
        "missing",
        "/items/0/category",
    ),
    (
        "item negative amount",
        {"items": [{"category": "c", "amount": "-1"}]},
        "greater_than_equal",
        "/items/0/amount",
    ),
    (
        "item zero quantity",
        {"items": [{"category": "c", "amount": "1", "quantity": 0}]},
        "greater_than",
        "/items/0/quantity",
    ),
    ("too many items", {"items": [{"category": "c", "amount": "1"}] * 501}, "too_long", "/items"),
    (
        "attributes too deep",
        {"attributes": {"a": {"b": {"c": {"d": {"e": 1}}}}}},
        "attributes_too_deep",
        "/attributes",
    ),
    (
        "attributes too large",
        {"attributes": {"blob": "x" * 5000}},
        "attributes_too_large",
        "/attributes",
    ),
    ("attributes not an object", {"attributes": [1, 2]}, "dict_type", "/attributes"),
]


def _without(name: str) -> dict[str, Any]:
    body = event()
    del body[name]
    return body


@pytest.fixture
async def nothing_stored(app: FastAPI) -> AsyncIterator[None]:
    yield
    assert await stored_events(app) == []


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"] == f"urn:defection-radar:problem:{code}"
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem


@pytest.mark.parametrize(
    ("overrides", "code", "pointer"),
    [case[1:] for case in BAD_FIELDS],
    ids=[case[0] for case in BAD_FIELDS],
)
@pytest.mark.usefixtures("nothing_stored")
async def test_bad_field_names_the_field(
    client: httpx.AsyncClient, keys: Keys, overrides: dict[str, Any], code: str, pointer: str
) -> None:
    response = await client.post("/v1/purchases", json=event(**overrides), headers=keys.ingest)
    problem = assert_problem(response, 422, "validation_error")
    assert [(e["code"], e["pointer"]) for e in problem["errors"]] == [(code, pointer)]


@pytest.mark.parametrize(
    "name", ["event_id", "customer_id", "store_id", "occurred_at", "amount", "currency"]
)
@pytest.mark.usefixtures("nothing_stored")
async def test_missing_required_field(client: httpx.AsyncClient, keys: Keys, name: str) -> None:
    response = await client.post("/v1/purchases", json=_without(name), headers=keys.ingest)
    problem = assert_problem(response, 422, "validation_error")
    assert [(e["code"], e["pointer"]) for e in problem["errors"]] == [("missing", f"/{name}")]


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b'{"event_id": "e-1", ', 400, "malformed_json"),
        (b"\xff\xfe not utf-8", 400, "malformed_json"),
        (b"", 400, "empty_body"),
        (b"[1, 2]", 422, "validation_error"),
        (b'"just a string"', 422, "validation_error"),
    ],
    ids=["truncated json", "not utf-8", "empty body", "array body", "string body"],
)
@pytest.mark.parametrize("path", ["/v1/purchases", "/v1/purchases/batch"])
@pytest.mark.usefixtures("nothing_stored")
async def test_unparseable_bodies(
    client: httpx.AsyncClient, keys: Keys, path: str, raw: bytes, status: int, code: str
) -> None:
    headers = {**keys.ingest, "Content-Type": "application/json"}
    response = await client.post(path, content=raw, headers=headers)
    assert_problem(response, status, code)


@pytest.mark.parametrize("path", ["/v1/purchases", "/v1/purchases/batch"])
@pytest.mark.usefixtures("nothing_stored")
async def test_wrong_content_type(client: httpx.AsyncClient, keys: Keys, path: str) -> None:
    headers = {**keys.ingest, "Content-Type": "text/plain"}
    response = await client.post(path, content=orjson.dumps(event()), headers=headers)
    assert_problem(response, 415, "unsupported_media_type")


@pytest.mark.usefixtures("nothing_stored")
async def test_oversize_body_with_content_length(client: httpx.AsyncClient, keys: Keys) -> None:
    body = b'{"events": [' + b" " * (1024 * 1024) + b"]}"
    headers = {**keys.ingest, "Content-Type": "application/json"}
    response = await client.post("/v1/purchases/batch", content=body, headers=headers)
    problem = assert_problem(response, 413, "payload_too_large")
    assert "1048576 bytes" in problem["detail"]


@pytest.mark.usefixtures("nothing_stored")
async def test_oversize_chunked_body(client: httpx.AsyncClient, keys: Keys) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"events": ['
        for _ in range(20):
            yield b" " * 65536
        yield b"]}"

    headers = {**keys.ingest, "Content-Type": "application/json"}
    response = await client.post("/v1/purchases/batch", content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")


async def test_chunked_body_under_the_limit_is_accepted(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        body = orjson.dumps(event())
        yield body[:10]
        yield body[10:]

    headers = {**keys.ingest, "Content-Type": "application/json"}
    response = await client.post("/v1/purchases", content=chunks(), headers=headers)
    assert response.status_code == 201, response.text


@pytest.mark.usefixtures("nothing_stored")
async def test_batch_over_the_event_limit(client: httpx.AsyncClient, keys: Keys) -> None:
    events = [event(f"e-{i}") for i in range(1001)]
    response = await client.post(
        "/v1/purchases/batch", json={"events": events}, headers=keys.ingest
    )
    problem = assert_problem(response, 413, "too_many_events")
    assert "at most 1000 events" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "pointer", "code"),
    [
        ({"events": []}, "/events", "empty_batch"),
        ({"events": "e-1"}, "/events", "validation_error"),
        ({}, "/events", "validation_error"),
        ({"events": [event()], "extra": 1}, "/extra", "validation_error"),
    ],
    ids=["empty batch", "events not a list", "no events", "unknown top-level field"],
)
@pytest.mark.usefixtures("nothing_stored")
async def test_bad_batch_envelope(
    client: httpx.AsyncClient, keys: Keys, body: dict[str, Any], pointer: str, code: str
) -> None:
    response = await client.post("/v1/purchases/batch", json=body, headers=keys.ingest)
    problem = assert_problem(response, 422, "validation_error")
    assert [(e["pointer"], e["code"]) for e in problem["errors"]] == [(pointer, code)]


@pytest.mark.usefixtures("nothing_stored")
async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient, keys: Keys) -> None:
    assert_problem(await client.get("/v1/nope", headers=keys.ingest), 404, "not_found")
    assert_problem(
        await client.get("/v1/purchases", headers=keys.ingest), 405, "method_not_allowed"
    )


HUGE = str(2**63)  # one past the largest id the database holds


@pytest.mark.parametrize(
    ("method", "path", "params", "pointer"),
    [
        ("GET", f"/v1/alerts/{HUGE}", {}, "/path/alert_id"),
        ("POST", f"/v1/alerts/{HUGE}/acknowledge", {}, "/path/alert_id"),
        ("GET", "/v1/alerts/changes", {"after": HUGE}, "/query/after"),
        ("GET", "/v1/alerts", {"min_value_at_risk": "1e30"}, "/query/min_value_at_risk"),
        ("DELETE", f"/v1/keys/{HUGE}", {}, "/path/key_id"),
        ("GET", f"/v1/webhooks/endpoints/{HUGE}", {}, "/path/endpoint_id"),
        ("GET", f"/v1/webhooks/endpoints/1/deliveries/{HUGE}", {}, "/path/delivery_id"),
        ("GET", "/v1/webhooks/endpoints/1/attempts", {"before": HUGE}, "/query/before"),
    ],
)
async def test_ids_beyond_64_bits_are_refused_not_crashed_on(
    client: httpx.AsyncClient,
    keys: Keys,
    method: str,
    path: str,
    params: dict[str, str],
    pointer: str,
) -> None:
    headers = keys.read if path.startswith("/v1/alerts") else keys.manage
    response = await client.request(method, path, params=params, headers=headers, json={})
    assert response.status_code == 422, response.text
    assert pointer in [e["pointer"] for e in response.json()["errors"]]


async def test_a_cursor_forged_with_a_huge_id_is_a_bad_cursor(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    import base64

    for forged in (
        b'{"s": "-value_at_risk", "v": "1", "i": 1180591620717411303424}',
        b'{"s": "-value_at_risk", "v": "1e40", "i": 5}',
    ):
        cursor = base64.urlsafe_b64encode(forged).decode().rstrip("=")
        response = await client.get("/v1/alerts", params={"cursor": cursor}, headers=keys.read)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("path", "params", "pointer"),
    [
        ("/v1/alerts", {"customer_id": "card\x00-1"}, "/query/customer_id"),
        ("/v1/alerts", {"store_id": ["north", "so\x00uth"]}, "/query/store_id/1"),
        ("/v1/reports/reasons", {"store_id": "\x1bnorth"}, "/query/store_id"),
        ("/v1/customers/card%00-1", {}, "/path/customer_id"),
    ],
)
async def test_control_characters_in_ids_are_refused(
    client: httpx.AsyncClient, keys: Keys, path: str, params: dict[str, Any], pointer: str
) -> None:
    """PostgreSQL cannot hold a NUL in text: such an id was a 500 there (found by fuzzing)."""
    response = await client.get(path, params=params, headers=keys.read)
    assert response.status_code == 422, response.text
    assert pointer in [e["pointer"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/purchases", "POST"),
        ("OPTIONS", "/v1/keys", "GET, POST"),  # two routes share the path
        ("PUT", "/v1/webhooks/endpoints/1", "DELETE, GET, PATCH"),
        ("DELETE", "/v1/policy", "GET, PUT"),
    ],
)
async def test_a_wrong_method_is_405_with_every_allowed_method(
    client: httpx.AsyncClient, keys: Keys, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path, headers=keys.manage)
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "pointer"),
    [
        ("GET", "/v1/alerts", {"opened_before": "0.5"}, None, "/query/opened_before"),
        ("GET", "/v1/alerts", {"opened_after": "1700000000"}, None, "/query/opened_after"),
        ("GET", "/v1/reports/reasons", {"from": "0"}, None, "/query/from"),
        ("GET", "/v1/reports/defection-rate", {"to": "86400"}, None, "/query/to"),
        ("GET", "/v1/customers/card-1", {"as_of": "0"}, None, "/query/as_of"),
        ("POST", "/v1/alerts/1/snooze", {}, {"until": 4102444800}, "/until"),
        ("POST", "/v1/webhooks/endpoints/1/recover", {}, {"since": "86400"}, "/since"),
    ],
)
async def test_a_unix_time_is_not_taken_for_a_date(
    client: httpx.AsyncClient,
    keys: Keys,
    method: str,
    path: str,
    params: dict[str, str],
    body: dict[str, object] | None,
    pointer: str,
) -> None:
    """Pydantic reads numbers as Unix times: `?from=0` meant 1970 (found by fuzzing)."""
    headers = keys.manage if "webhooks" in path else keys.read
    response = await client.request(method, path, params=params, json=body, headers=headers)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [(e["pointer"], e["code"]) for e in errors] == [(pointer, "timestamp_type")]


@pytest.mark.parametrize(
    ("path", "params", "unknown"),
    [
        ("/v1/alerts", {"statuss": "open"}, ["statuss"]),  # a typo must not list every alert
        ("/v1/alerts", {"status": "open", "limit": "5", "x": "1", "b": "2"}, ["b", "x"]),
        ("/v1/policy", {"version": "3"}, ["version"]),
        ("/v1/reports/reasons", {"since": "2026-01-01"}, ["since"]),
    ],
)
async def test_an_unknown_query_parameter_is_named(
    client: httpx.AsyncClient, keys: Keys, path: str, params: dict[str, str], unknown: list[str]
) -> None:
    headers = keys.manage if path == "/v1/policy" else keys.read
    response = await client.get(path, params=params, headers=headers)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [(e["pointer"], e["code"]) for e in errors] == [
        (f"/query/{name}", "unknown_parameter") for name in unknown
    ]


async def test_known_query_parameters_and_aliases_pass(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    response = await client.get(
        "/v1/reports/reasons", params={"from": "2026-01-01", "to": "2026-02-01"}, headers=keys.read
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("limits", "fields", "pointer", "code"),
    [
        (
            {"max_event_items": 2},
            {"items": [{"category": "bakery", "amount": "1"}] * 3},
            "/items",
            "too_long",
        ),
        (
            {"max_attributes_bytes": 64},
            {"attributes": {"note": "x" * 80}},
            "/attributes",
            "attributes_too_large",
        ),
        (
            {"max_attributes_depth": 1},
            {"attributes": {"a": {"b": 1}}},
            "/attributes",
            "attributes_too_deep",
        ),
    ],
    ids=["items", "attributes bytes", "attributes depth"],
)
async def test_what_an_event_may_carry_is_configurable(
    app: FastAPI,
    settings: Settings,
    client: httpx.AsyncClient,
    keys: Keys,
    limits: dict[str, int],
    fields: dict[str, Any],
    pointer: str,
    code: str,
) -> None:
    within_defaults = await client.post(
        "/v1/purchases", json=event("e-0", **fields), headers=keys.ingest
    )
    assert within_defaults.status_code == 201, within_defaults.text
    app.state.settings = settings.model_copy(update=limits)
    single = await client.post("/v1/purchases", json=event("e-1", **fields), headers=keys.ingest)
    problem = assert_problem(single, 422, "validation_error")
    assert [(e["pointer"], e["code"]) for e in problem["errors"]] == [(pointer, code)]
    batch = await client.post(
        "/v1/purchases/batch",
        json={"events": [event("e-2", **fields), event("e-3")]},
        headers=keys.ingest,
    )
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["results"]
    assert [(e["pointer"], e["code"]) for e in first["errors"]] == [(f"/events/0{pointer}", code)]
    assert second["status"] == "accepted"
    assert sorted(e["event_id"] for e in await stored_events(app)) == ["e-0", "e-3"]


async def test_a_batch_with_a_nul_in_one_event_stores_the_others(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys
) -> None:
    events = [
        event("good-1"),
        event("bad", attributes={"note": "x\x00"}),
        event("good-2", items=[{"category": "bread", "amount": "1"}]),
    ]
    response = await client.post(
        "/v1/purchases/batch", json={"events": events}, headers=keys.ingest
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    (bad,) = [r for r in body["results"] if r["status"] == "rejected"]
    assert bad["errors"][0]["pointer"] == "/events/1/attributes"
    assert sorted(e["event_id"] for e in await stored_events(app)) == ["good-1", "good-2"]


@pytest.mark.parametrize(
    ("action", "body", "pointer"),
    [
        ("acknowledge", {"by": "maria\x00"}, "/by"),
        ("snooze", {"by": "\x00", "until": "2026-06-01T00:00:00Z"}, "/by"),
        ("resolve", {"outcome": "not_a_defection", "note": "called\x00"}, "/note"),
        ("resolve", {"outcome": "lost", "reason": "price\x00"}, "/reason"),
    ],
)
async def test_a_nul_in_what_people_write_on_an_alert_is_refused(
    app: FastAPI,
    client: httpx.AsyncClient,
    keys: Keys,
    clock: Clock,
    action: str,
    body: dict[str, Any],
    pointer: str,
) -> None:
    await lapse(client, keys, clock)
    (alert,) = (await client.get("/v1/alerts", headers=keys.read)).json()["items"]
    url = f"/v1/alerts/{alert['id']}/{action}"
    response = await client.post(url, json=body, headers=keys.read)
    problem = assert_problem(response, 422, "validation_error")
    assert pointer in [e["pointer"] for e in problem["errors"]]
    after = (await client.get(f"/v1/alerts/{alert['id']}", headers=keys.read)).json()
    assert (after["alert"]["status"], len(after["history"])) == ("open", 1)


@pytest.mark.parametrize(
    ("overrides", "code", "says"),
    [
        (
            {"occurred_at": "2026-11-20T18:05:00"},
            "timezone_aware",
            "has no UTC offset: add one such as +01:00 or Z",
        ),
        ({"amount": "42,50"}, "decimal_parsing", 'has a decimal comma: use a point: "42.50"'),
        ({"amount": "1.234,50"}, "decimal_parsing", 'use a point: "1234.50"'),
        ({"amount": "about 5"}, "decimal_parsing", 'with a point, e.g. "42.50"'),
        (
            {"amount": "-5"},
            "greater_than_equal",
            'send a refund as its own event with a positive amount and "kind": "refund"',
        ),
    ],
    ids=["no-offset", "decimal-comma", "thousands-and-comma", "not-a-number", "negative"],
)
@pytest.mark.usefixtures("nothing_stored")
async def test_the_commonest_mistakes_say_how_to_fix_them(
    client: httpx.AsyncClient, keys: Keys, overrides: dict[str, Any], code: str, says: str
) -> None:
    single = await client.post("/v1/purchases", json=event(**overrides), headers=keys.ingest)
    (error,) = assert_problem(single, 422, "validation_error")["errors"]
    assert error["code"] == code
    assert says in error["message"]
    batch = await client.post(
        "/v1/purchases/batch", json={"events": [event(**overrides)]}, headers=keys.ingest
    )
    assert batch.status_code == 200, batch.text
    (result,) = batch.json()["results"]
    pointer = "/events/0" + error["pointer"]
    assert [(e["code"], e["pointer"]) for e in result["errors"]] == [(code, pointer)]
    assert says in result["errors"][0]["message"]
