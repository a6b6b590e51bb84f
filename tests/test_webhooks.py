"""Webhooks end to end: alerts open through the API, a real receiver on 127.0.0.1 gets them,
signed as Standard Webhooks says (verified with the `standardwebhooks` package)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from ipaddress import ip_network
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import Connection, func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.alerts import repository
from app.kit.auth import Scope
from app.kit.db import utcnow
from app.kit.settings import Settings
from app.main import create_app
from app.models import Alert, WebhookAttempt, WebhookDelivery, WebhookMessage
from app.webhooks import outbox
from app.webhooks import repository as webhooks
from app.webhooks.dispatcher import Dispatcher
from app.webhooks.repository import Job
from app.webhooks.targets import Resolver, system_resolver
from tests.conftest import Clock, Keys, ScoredTransport, _truncate, make_key
from tests.receiver import Received, Receiver, Reply, always
from tests.test_alerts import post, visits, weekly

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Retries in milliseconds, so that a whole retry schedule fits in a test."""
    return settings.model_copy(
        update={
            "webhook_retry_schedule": [timedelta(milliseconds=50)] * 3,
            "webhook_timeout": timedelta(seconds=1),
            "webhook_lease": timedelta(seconds=3),
            "webhook_poll_interval": timedelta(milliseconds=20),
            "webhook_circuit_failures": 100,
            "webhook_retry_after_max": timedelta(seconds=60),
        }
    )


async def lapse(client: httpx.AsyncClient, keys: Keys, clock: Clock, *names: str) -> None:
    """Weekly customers silent since March: each opens an inactivity alert on ingest."""
    clock.set("2026-05-01T09:00:00+00:00")
    for name in names or ("card-1",):
        store = "south" if name.startswith("s") else "north"
        events = visits(name, weekly(date(2026, 1, 5), 12), amount="40")
        for item in events:
            item["store_id"] = store
        await post(client, keys, events)


async def add_endpoint(
    client: httpx.AsyncClient, keys: Keys, url: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhooks/endpoints", json={"url": url, **fields}, headers=keys.manage
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def deliver(app: FastAPI) -> None:
    await app.state.dispatcher.run_until_idle()


def verified(secret: str, request: Received) -> dict[str, Any]:
    """The body, after the reference receiver library checked the signature."""
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


async def deliveries(
    client: httpx.AsyncClient, keys: Keys, endpoint: dict[str, Any], **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/webhooks/endpoints/{endpoint['id']}/deliveries", params=params, headers=keys.manage
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def endpoint_now(
    client: httpx.AsyncClient, keys: Keys, endpoint: dict[str, Any]
) -> dict[str, Any]:
    response = await client.get(f"/v1/webhooks/endpoints/{endpoint['id']}", headers=keys.manage)
    assert response.status_code == 200, response.text
    return dict(response.json())


# -- managing endpoints --------------------------------------------------------------------


async def test_an_endpoint_is_created_listed_changed_and_deleted(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    created = await add_endpoint(
        client,
        keys,
        "http://127.0.0.1:9/crm",
        description="CRM",
        event_types=["alert.opened", "alert.resolved"],
        filters={"store_ids": ["north"], "min_severity": "medium"},
        rate_limit=5,
        ordered=True,
    )
    assert created["secret"].startswith("whsec_")
    assert created["enabled"] is True
    assert created["filters"]["store_ids"] == ["north"]
    path = f"/v1/webhooks/endpoints/{created['id']}"
    shown = (await client.get(path, headers=keys.manage)).json()
    assert "secret" not in shown  # shown once, at creation
    assert shown["ordered"] is True
    assert shown["rate_limit"] == 5

    changed = await client.patch(
        path, json={"enabled": False, "rate_limit": None}, headers=keys.manage
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["enabled"] is False
    assert changed.json()["disabled_reason"] == "disabled by a user"
    assert changed.json()["rate_limit"] is None
    assert changed.json()["description"] == "CRM"  # untouched

    listed = (await client.get("/v1/webhooks/endpoints", headers=keys.manage)).json()
    assert [e["id"] for e in listed["items"]] == [created["id"]]
    assert (await client.delete(path, headers=keys.manage)).status_code == 204
    assert (await client.get(path, headers=keys.manage)).status_code == 404
    assert (await client.delete(path, headers=keys.manage)).status_code == 404


@pytest.mark.parametrize(
    ("body", "pointer", "code"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "/url", "invalid_url"),
        ({"url": "not a url"}, "/url", "invalid_url"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "/url", "invalid_url"),
        ({"url": "http://127.0.0.1:0/x"}, "/url", "invalid_url"),
        ({"url": "http://127.0.0.1:65536/x"}, "/url", "invalid_url"),
        ({"url": "http://127.0.0.1:99999999999999999999/x"}, "/url", "invalid_url"),
        ({"url": "http://127.0.0.1:-1/x"}, "/url", "invalid_url"),
        ({"url": "http://[::1]:0/x"}, "/url", "invalid_url"),
        # Names no resolver takes (a label over 63 characters, an empty one): refused before
        # any query is sent.
        ({"url": f"http://{'a' * 64}.example/x"}, "/url", "unresolvable_host"),
        ({"url": "http://crm..example/x"}, "/url", "unresolvable_host"),
        (
            {"url": "http://127.0.0.1:9/x", "event_types": ["alert.exploded"]},
            "/event_types/0",
            None,
        ),
        ({"url": "http://127.0.0.1:9/x", "event_types": []}, "/event_types", None),
        ({"url": "http://127.0.0.1:9/x", "rate_limit": 0}, "/rate_limit", None),
        ({"url": "http://127.0.0.1:9/x", "filters": {"rules": ["x"]}}, "/filters/rules/0", None),
        (
            {"url": "http://127.0.0.1:9/x", "filters": {"min_value_at_risk": -1}},
            "/filters/min_value_at_risk",
            None,
        ),
        ({"url": "http://127.0.0.1:9/x", "colour": "red"}, "/colour", None),
        ({}, "/url", None),
    ],
)
async def test_bad_endpoints_are_refused_naming_the_field(
    client: httpx.AsyncClient,
    keys: Keys,
    body: dict[str, Any],
    pointer: str,
    code: str | None,
) -> None:
    response = await client.post("/v1/webhooks/endpoints", json=body, headers=keys.manage)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    pointers = [error["pointer"] for error in problem["errors"]]
    assert pointer in pointers, pointers
    if code is not None:
        assert problem["code"] == code
    listed = (await client.get("/v1/webhooks/endpoints", headers=keys.manage)).json()
    assert listed["items"] == []  # nothing half-written


@pytest.mark.parametrize(
    ("field", "value", "pointer"),
    [
        ("description", "CRM\x00", "/description"),  # PostgreSQL's text cannot hold a NUL
        ("filters", {"store_ids": ["north\x00"]}, "/filters/store_ids/0"),
        ("filters", {"store_ids": ["north\n"]}, "/filters/store_ids/0"),  # no store id has one
    ],
)
async def test_text_that_cannot_be_stored_or_matched_is_refused_on_create_and_change(
    client: httpx.AsyncClient, keys: Keys, field: str, value: object, pointer: str
) -> None:
    url = "http://127.0.0.1:9/x"
    created = await client.post(
        "/v1/webhooks/endpoints", json={"url": url, field: value}, headers=keys.manage
    )
    assert created.status_code == 422, created.text
    assert created.headers["content-type"] == "application/problem+json"
    assert [e["pointer"] for e in created.json()["errors"]] == [pointer]
    endpoint = await add_endpoint(client, keys, url, description="CRM")
    path = f"/v1/webhooks/endpoints/{endpoint['id']}"
    changed = await client.patch(path, json={field: value}, headers=keys.manage)
    assert changed.status_code == 422, changed.text
    assert [e["pointer"] for e in changed.json()["errors"]] == [pointer]
    assert (await endpoint_now(client, keys, endpoint))["description"] == "CRM"


async def test_an_endpoint_saved_before_store_ids_were_checked_can_still_be_read(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys
) -> None:
    endpoint = await add_endpoint(client, keys, "http://127.0.0.1:9/x")
    await app.state.transactions.run(
        lambda c: webhooks.update_endpoint(
            c, endpoint["id"], {"filters": {"store_ids": ["north\n"], "min_value_at_risk": "5"}}
        )
    )
    shown = await endpoint_now(client, keys, endpoint)
    assert shown["filters"]["store_ids"] == ["north\n"]
    assert shown["filters"]["min_value_at_risk"] == "5"
    listed = (await client.get("/v1/webhooks/endpoints", headers=keys.manage)).json()
    assert listed["items"][0]["filters"] == shown["filters"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"since": "0001-01-01T00:00:00+01:00"}, "/since"),  # 31 December of year 0 in UTC
        ({"since": "9999-12-31T23:30:00-01:00"}, "/since"),  # year 10000 in UTC
        ({"since": "2026-01-01T00:00:00Z", "until": "0001-01-01T00:30:00+01:00"}, "/until"),
    ],
)
async def test_a_recovery_window_beyond_what_utc_can_hold_is_refused_naming_the_field(
    client: httpx.AsyncClient, keys: Keys, body: dict[str, str], pointer: str
) -> None:
    endpoint = await add_endpoint(client, keys, "http://127.0.0.1:9/x")
    response = await client.post(
        f"/v1/webhooks/endpoints/{endpoint['id']}/recover", json=body, headers=keys.manage
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["pointer"] for e in response.json()["errors"]] == [pointer]


async def test_bad_changes_are_refused_naming_the_field(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    endpoint = await add_endpoint(client, keys, "http://127.0.0.1:9/x")
    path = f"/v1/webhooks/endpoints/{endpoint['id']}"
    for body, pointer in [
        ({"url": None}, "/url"),
        ({"enabled": None}, "/enabled"),
        ({"url": "gopher://127.0.0.1/"}, "/url"),
        ({"url": "http://10.0.0.1/x"}, "/url"),
        ({"url": "http://127.0.0.1:0/x"}, "/url"),
        ({"url": "http://127.0.0.1:65536/x"}, "/url"),
    ]:
        response = await client.patch(path, json=body, headers=keys.manage)
        assert response.status_code == 422, (body, response.text)
        assert pointer in [e["pointer"] for e in response.json()["errors"]]
    rotate = await client.post(
        f"{path}/rotate-secret", json={"grace_period": "P8D"}, headers=keys.manage
    )
    assert rotate.status_code == 422
    assert rotate.json()["errors"][0]["pointer"] == "/grace_period"
    assert (await endpoint_now(client, keys, endpoint))["url"] == "http://127.0.0.1:9/x"
    missing = await client.patch(
        "/v1/webhooks/endpoints/999999", json={"enabled": True}, headers=keys.manage
    )
    assert missing.status_code == 404


# -- SSRF ----------------------------------------------------------------------------------


@asynccontextmanager
async def running(
    settings: Settings, clock: Clock, resolver: Resolver = system_resolver, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Keys]]:
    """The service with settings of its own, a client and keys."""
    application = create_app(settings.model_copy(update=overrides), clock=clock, resolver=resolver)
    async with LifespanManager(application):
        await _truncate(application)
        manage = await make_key(application, "admin", Scope.MANAGE)
        ingest = await make_key(application, "till", Scope.INGEST)
        read = await make_key(application, "ops", Scope.READ)
        keys = Keys(
            ingest={"Authorization": f"Bearer {ingest}"},
            read={"Authorization": f"Bearer {read}"},
            manage={"Authorization": f"Bearer {manage}"},
            raw={},
        )
        transport = ScoredTransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as c:
            yield application, c, keys


def guarded_service(
    settings: Settings, clock: Clock, resolver: Resolver = system_resolver
) -> AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient, Keys]]:
    """The service as production runs it: no private network allowed for webhook targets."""
    return running(settings, clock, resolver, webhook_allowed_networks=[])


# IPv6 addresses that reach a private IPv4 one through a translator or tunnel, or whose
# destination cannot be told: each would be 10.0.0.7 (or 127.0.0.1) once it left this host.
PRIVATE_IPV4_IN_IPV6 = [
    "64:ff9b::a00:7",  # NAT64 (well-known prefix) of 10.0.0.7
    "64:ff9b::127.0.0.1",
    "64:ff9b:1::a00:7",  # local-use NAT64
    "2002:a00:7::1",  # 6to4 of 10.0.0.7
    "2002:7f00:1::1",
    "::10.0.0.7",  # IPv4-compatible
    "::127.0.0.1",
    "::ffff:0:10.0.0.7",  # IPv4-translated (SIIT)
    "::ffff:0:127.0.0.1",
    "::ffff:10.0.0.7",  # IPv4-mapped
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001::a00:7",
    "fec0::7",  # site-local
]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",  # resolves (from /etc/hosts) to loopback
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.5/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://100.64.0.1/hook",  # carrier-grade NAT
        "http://0.0.0.0/hook",
        "http://224.0.1.1/hook",  # multicast
        *(f"http://[{address}]/hook" for address in PRIVATE_IPV4_IN_IPV6),
    ],
)
async def test_private_targets_are_refused_at_creation(
    settings: Settings, clock: Clock, url: str
) -> None:
    async with guarded_service(settings, clock) as (_, client, keys):
        response = await client.post(
            "/v1/webhooks/endpoints", json={"url": url}, headers=keys.manage
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "forbidden_target"
        assert response.json()["errors"][0]["pointer"] == "/url"


async def test_a_name_that_does_not_resolve_is_refused(settings: Settings, clock: Clock) -> None:
    async def nowhere(host: str, port: int) -> list[str]:
        raise OSError(f"no such host {host}")

    async with guarded_service(settings, clock, nowhere) as (_, client, keys):
        response = await client.post(
            "/v1/webhooks/endpoints", json={"url": "https://crm.example/hook"}, headers=keys.manage
        )
        assert response.status_code == 422
        assert response.json()["code"] == "unresolvable_host"


@pytest.mark.parametrize("address", ["10.0.0.7", *PRIVATE_IPV4_IN_IPV6])
async def test_dns_rebinding_is_refused_at_connect_time(
    settings: Settings, clock: Clock, address: str
) -> None:
    """The name resolved to a public address when the endpoint was saved; by delivery time
    it points inside the network (as 10/8, or an IPv6 form of a private IPv4 address). The
    dispatcher resolves again and refuses to connect."""
    answers = iter([["93.184.216.34"]])  # once, at creation; then the private address

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers, [address])

    async with guarded_service(settings, clock, rebinding) as (app, client, keys):
        endpoint = await add_endpoint(client, keys, "http://crm.example/hook")
        await lapse(client, keys, clock)
        await app.state.dispatcher.dispatch_due()
        await asyncio.sleep(0.2)
        await app.state.dispatcher.dispatch_due()  # writes the outcome
        attempts = (
            await client.get(
                f"/v1/webhooks/endpoints/{endpoint['id']}/attempts", headers=keys.manage
            )
        ).json()["items"]
        assert attempts, "an attempt was made and recorded"
        assert attempts[0]["status_code"] is None
        assert "refused" in attempts[0]["error"], attempts[0]["error"]
        if address == "10.0.0.7":
            assert "10.0.0.7" in attempts[0]["error"]


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34: what DNS64 answers for an IPv4 site
        "2002:5db8:d822::1",  # 6to4 of the same
        "::ffff:93.184.216.34",
    ],
)
async def test_ipv6_forms_of_public_addresses_are_accepted(
    settings: Settings, clock: Clock, address: str
) -> None:
    async with guarded_service(settings, clock) as (_, client, keys):
        await add_endpoint(client, keys, f"http://[{address}]/hook")


async def test_an_allowed_network_admits_its_addresses_in_ipv6_forms(
    settings: Settings, clock: Clock
) -> None:
    """The operator allowed 10.0.0.0/8 (and a local NAT64 prefix): NAT64, 6to4 and the other
    forms of 10/8 reach it too; other private addresses and refused ranges stay refused."""
    allowed = [ip_network("10.0.0.0/8"), ip_network("64:ff9b:1::/48")]
    async with running(settings, clock, webhook_allowed_networks=allowed) as (_, client, keys):
        for address in ("64:ff9b::a00:7", "2002:a00:7::1", "::ffff:0:10.0.0.7", "64:ff9b:1::7"):
            await add_endpoint(client, keys, f"http://[{address}]/hook")
        for address in ("64:ff9b::7f00:1", "2002:c0a8::1", "2001::a00:7", "fec0::7"):
            response = await client.post(
                "/v1/webhooks/endpoints", json={"url": f"http://[{address}]/"}, headers=keys.manage
            )
            assert response.status_code == 422, (address, response.text)
            assert response.json()["code"] == "forbidden_target"


# -- delivery ------------------------------------------------------------------------------


async def test_an_alert_reaches_the_receiver_signed_with_everything_a_crm_needs(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver() as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock)
        await deliver(app)
        (request,) = receiver.requests
        body = verified(endpoint["secret"], request)
        assert body["type"] == "alert.opened"
        assert body["timestamp"] == "2026-05-01T09:00:00+00:00"
        data = body["data"]
        assert data["alert"]["customer_id"] == "card-1"
        assert data["alert"]["rule"] == "inactivity"
        assert data["alert"]["status"] == "open"
        assert data["evidence"] == data["alert"]["evidence"]
        assert data["evidence"]["last_visit_on"] == "2026-03-23"
        assert float(data["value_at_risk"]) > 0
        assert data["customer"]["visit_days"] == 12
        assert data["customer"]["home_store"] == "north"
        assert data["customer"]["net_spend"] == "480"
        assert data["links"]["alert"] == f"/v1/alerts/{data['alert']['id']}"
        fetched = await client.get(data["links"]["alert"], headers=keys.read)
        assert fetched.status_code == 200
        assert request.headers["content-type"] == "application/json"
        assert request.message_id.startswith("msg_")

        with pytest.raises(WebhookVerificationError):  # and the signature does check
            Webhook("whsec_" + "A" * 43 + "=").verify(request.body, request.headers)
        tampered = request.body.replace(b"card-1", b"card-2")
        with pytest.raises(WebhookVerificationError):
            Webhook(endpoint["secret"]).verify(tampered, request.headers)

        (delivery,) = await deliveries(client, keys, endpoint)
        assert delivery["status"] == "succeeded"
        assert delivery["attempts"] == 1
        assert delivery["message_id"] == request.message_id
        assert delivery["event_type"] == "alert.opened"
        detail = (
            await client.get(
                f"/v1/webhooks/endpoints/{endpoint['id']}/deliveries/{delivery['id']}",
                headers=keys.manage,
            )
        ).json()
        assert detail["payload"] == body
        (attempt,) = detail["attempt_log"]
        assert attempt["status_code"] == 200
        assert attempt["response_body"] == "ok"
        assert attempt["succeeded"] is True
        assert attempt["duration_ms"] > 0


# Customer ids are the client's: each of these is a valid one that means something in a URL.
URL_LIKE_CUSTOMER_IDS = ["x/../../keys", "..", ".", "a?b=c", "a#b", "100%", "a b", "%2F"]


async def test_links_lead_to_customers_whose_ids_look_like_url_syntax(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver() as receiver:
        await add_endpoint(client, keys, receiver.url, event_types=["alert.opened"])
        await lapse(client, keys, clock, *URL_LIKE_CUSTOMER_IDS)
        await deliver(app)
        bodies = [orjson.loads(request.body)["data"] for request in receiver.requests]
        links = {data["alert"]["customer_id"]: data["links"]["customer"] for data in bodies}
        assert sorted(links) == sorted(URL_LIKE_CUSTOMER_IDS)
        for customer_id, link in links.items():
            resolved = client.base_url.join(link).raw_path  # as a receiver's client resolves it
            assert resolved.startswith(b"/v1/customers/"), (customer_id, link)
            assert resolved.count(b"/") == 3, (customer_id, link)  # one segment: the id
            fetched = await client.get(link, headers=keys.read)
            assert fetched.status_code == 200, (customer_id, link, fetched.text)
            assert fetched.json()["customer_id"] == customer_id


async def test_the_background_dispatcher_delivers_within_a_second_of_the_post(
    settings: Settings, clock: Clock
) -> None:
    async with (
        running(settings, clock, webhook_dispatcher=True) as (_, client, keys),
        Receiver() as receiver,
    ):
        await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock)
        (request,) = await receiver.wait_for(1, within=5)
        assert orjson.loads(request.body)["type"] == "alert.opened"


async def test_a_commit_that_queues_deliveries_wakes_the_dispatcher_at_once(
    settings: Settings, clock: Clock
) -> None:
    """The poll interval is for what other processes queue: this one's commits ring."""
    async with (
        running(
            settings,
            clock,
            webhook_dispatcher=True,
            webhook_poll_interval=timedelta(seconds=60),
        ) as (_, client, keys),
        Receiver() as receiver,
    ):
        await add_endpoint(client, keys, receiver.url)
        await asyncio.sleep(0.1)  # the dispatcher's first look found nothing: it waits
        started = asyncio.get_running_loop().time()
        await lapse(client, keys, clock)
        await receiver.wait_for(1, within=5)
        assert asyncio.get_running_loop().time() - started < 2  # not the 60 s poll


async def test_filters_and_event_types_choose_what_each_endpoint_gets(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver() as north, Receiver() as south, Receiver() as resolved_only:
        await add_endpoint(client, keys, north.url, filters={"store_ids": ["north"]})
        await add_endpoint(
            client, keys, south.url, filters={"store_ids": ["south"], "rules": ["inactivity"]}
        )
        await add_endpoint(client, keys, resolved_only.url, event_types=["alert.resolved"])
        await lapse(client, keys, clock, "n-1", "n-2", "s-1")
        await deliver(app)

        def customers(receiver: Receiver) -> list[str]:
            return sorted(
                orjson.loads(r.body)["data"]["alert"]["customer_id"] for r in receiver.requests
            )

        assert customers(north) == ["n-1", "n-2"]
        assert customers(south) == ["s-1"]
        assert resolved_only.requests == []

        high = await add_endpoint(client, keys, north.url, filters={"min_value_at_risk": "1000000"})
        clock.set("2026-05-02T09:00:00+00:00")
        await post(client, keys, visits("n-1", [date(2026, 5, 2)], tag="-back"))
        await deliver(app)
        types = [orjson.loads(r.body)["type"] for r in north.requests[2:]]
        assert types == ["alert.resolved", "customer.recovered"]
        assert [orjson.loads(r.body)["type"] for r in resolved_only.requests] == ["alert.resolved"]
        assert await deliveries(client, keys, high) == []  # nobody is worth that much


async def test_a_customer_who_comes_back_is_announced_as_recovered(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver() as receiver:
        endpoint = await add_endpoint(
            client, keys, receiver.url, event_types=["customer.recovered"]
        )
        await lapse(client, keys, clock)
        clock.set("2026-05-02T09:00:00+00:00")
        await post(client, keys, visits("card-1", [date(2026, 5, 2)], tag="-back"))
        await deliver(app)
        (request,) = receiver.requests
        body = verified(endpoint["secret"], request)
        assert body["type"] == "customer.recovered"
        assert body["data"]["customer"]["last_visit_on"] == "2026-05-02"
        (alert,) = body["data"]["alerts"]
        assert alert["resolution"] == "customer_returned"


async def test_people_working_an_alert_are_announced_with_who_did_it(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver() as receiver:
        await add_endpoint(client, keys, receiver.url, event_types=["alert.acknowledged"])
        await lapse(client, keys, clock)
        (alert,) = (await client.get("/v1/alerts", headers=keys.read)).json()["items"]
        acknowledged = await client.post(
            f"/v1/alerts/{alert['id']}/acknowledge", json={"by": "maria"}, headers=keys.read
        )
        assert acknowledged.status_code == 200
        await deliver(app)
        (request,) = receiver.requests
        body = orjson.loads(request.body)
        assert body["type"] == "alert.acknowledged"
        assert body["data"]["actor"] == "maria"
        assert body["data"]["alert"]["acknowledged_by"] == "maria"


# -- retries, failures, the dead letter ----------------------------------------------------


def fail_first(times: int, reply: Reply) -> Callable[[Received, int], Reply]:
    return lambda _request, count: reply if count < times else Reply()


async def test_a_receiver_failing_twice_gets_exactly_one_successful_delivery(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver(fail_first(2, Reply(500, body=b"database down"))) as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock)
        await deliver(app)
        assert [r.message_id for r in receiver.requests] == [receiver.requests[0].message_id] * 3
        for request in receiver.requests:  # every retry is signed afresh, and verifies
            verified(endpoint["secret"], request)
        (delivery,) = await deliveries(client, keys, endpoint)
        assert delivery["status"] == "succeeded"
        assert delivery["attempts"] == 3
        attempts = (
            await client.get(
                f"/v1/webhooks/endpoints/{endpoint['id']}/attempts", headers=keys.manage
            )
        ).json()["items"]
        assert [a["status_code"] for a in attempts] == [200, 500, 500]  # newest first
        assert attempts[1]["response_body"] == "database down"
        assert attempts[1]["error"] == "HTTP 500"
        health = await endpoint_now(client, keys, endpoint)
        assert health["consecutive_failures"] == 0
        assert health["failing_since"] is None


async def test_a_receiver_answering_with_a_nul_is_recorded_and_delivery_goes_on(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """PostgreSQL cannot store a NUL in text: the answer is kept with U+FFFD in its place
    (as for bytes that are not UTF-8), not left to fail every write of the outcomes."""
    async with Receiver(always(Reply(200, body=b"ok\x00\xff"))) as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock, "card-1", "card-2")
        async with asyncio.timeout(10):
            await deliver(app)
        assert len(receiver.requests) == 2
        assert [d["status"] for d in await deliveries(client, keys, endpoint)] == ["succeeded"] * 2
        attempts = (
            await client.get(
                f"/v1/webhooks/endpoints/{endpoint['id']}/attempts", headers=keys.manage
            )
        ).json()["items"]
        assert [a["response_body"] for a in attempts] == ["ok\ufffd\ufffd"] * 2


async def test_after_the_last_attempt_a_delivery_is_dead_until_retried_or_recovered(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver(always(Reply(500))) as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock, "card-1", "card-2")
        await deliver(app)
        assert len(receiver.requests) == 2 * 4  # the first attempt and three retries each
        failed = await deliveries(client, keys, endpoint, status="failed")
        assert len(failed) == 2
        assert all(d["attempts"] == 4 and d["next_attempt_at"] is None for d in failed)
        assert await deliveries(client, keys, endpoint, status="succeeded") == []

        receiver.script = always(Reply(204, body=b""))
        path = f"/v1/webhooks/endpoints/{endpoint['id']}"
        retried = await client.post(
            f"{path}/deliveries/{failed[0]['id']}/retry", headers=keys.manage
        )
        assert retried.status_code == 202
        assert retried.json()["status"] == "pending"
        await deliver(app)
        assert len(await deliveries(client, keys, endpoint, status="succeeded")) == 1

        window = {"since": "2026-01-01T00:00:00Z", "until": utcnow().isoformat()}
        recovered = await client.post(f"{path}/recover", json=window, headers=keys.manage)
        assert recovered.json() == {"requeued": 1}
        await deliver(app)
        assert len(await deliveries(client, keys, endpoint, status="succeeded")) == 2
        again = await client.post(f"{path}/recover", json=window, headers=keys.manage)
        assert again.json() == {"requeued": 0}


async def test_retry_after_is_honoured_and_clamped(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver(always(Reply(429, {"Retry-After": "20"}))) as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock)
        before = utcnow()
        await deliver(app)  # the retry is 20 s away, not the schedule's 50 ms
        assert len(receiver.requests) == 1
        (delivery,) = await deliveries(client, keys, endpoint)
        assert delivery["status"] == "pending"
        wait = datetime.fromisoformat(delivery["next_attempt_at"]) - before
        assert timedelta(seconds=19) < wait < timedelta(seconds=25)

    async with Receiver(always(Reply(503, {"Retry-After": "86400"}))) as receiver:
        await client.patch(
            f"/v1/webhooks/endpoints/{endpoint['id']}",
            json={"url": receiver.url},
            headers=keys.manage,
        )
        retried = await client.post(
            f"/v1/webhooks/endpoints/{endpoint['id']}/deliveries/{delivery['id']}/retry",
            headers=keys.manage,
        )
        assert retried.status_code == 202
        before = utcnow()
        await app.state.dispatcher.run_until_idle()
        assert len(receiver.requests) == 1
        (delivery,) = await deliveries(client, keys, endpoint)
        wait = datetime.fromisoformat(delivery["next_attempt_at"]) - before
        assert timedelta(seconds=59) < wait < timedelta(seconds=65), "clamped to the maximum"


@pytest.mark.parametrize("retry_after", ["9" * 30, "9" * 400])  # beyond any date; a float inf
async def test_a_retry_after_beyond_any_date_is_clamped_too(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, retry_after: str
) -> None:
    async with Receiver(always(Reply(429, {"Retry-After": retry_after}))) as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock, "card-1", "card-2")
        before = utcnow()
        async with asyncio.timeout(10):
            await deliver(app)
        assert len(receiver.requests) == 2
        for delivery in await deliveries(client, keys, endpoint):
            assert delivery["status"] == "pending"
            wait = datetime.fromisoformat(delivery["next_attempt_at"]) - before
            assert timedelta(seconds=59) < wait < timedelta(seconds=65), "clamped to the maximum"


async def test_a_receiver_that_never_answers_is_timed_out_and_retried(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver(fail_first(1, Reply(delay=30))) as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock)
        await deliver(app)
        assert len(receiver.requests) == 2
        attempts = (
            await client.get(
                f"/v1/webhooks/endpoints/{endpoint['id']}/attempts", headers=keys.manage
            )
        ).json()["items"]
        late, first = attempts[1], attempts[0]
        assert late["status_code"] is None
        assert late["error"] == "no answer within 1 s"
        assert 900 < late["duration_ms"] < 5000
        assert first["status_code"] == 200


async def test_redirects_are_failures_and_not_followed(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver() as elsewhere:
        moved = Reply(302, {"Location": elsewhere.url})
        async with Receiver(fail_first(1, moved)) as receiver:
            endpoint = await add_endpoint(client, keys, receiver.url)
            await lapse(client, keys, clock)
            await deliver(app)
            assert elsewhere.requests == []
            assert len(receiver.requests) == 2
            attempts = (
                await client.get(
                    f"/v1/webhooks/endpoints/{endpoint['id']}/attempts", headers=keys.manage
                )
            ).json()["items"]
            assert attempts[1]["status_code"] == 302
            assert "redirects are not followed" in attempts[1]["error"]
            assert attempts[1]["succeeded"] is False


async def test_410_gone_disables_the_endpoint_and_tells_ops(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver(always(Reply(410))) as crm, Receiver() as ops:
        endpoint = await add_endpoint(client, keys, crm.url, event_types=["alert.opened"])
        watcher = await add_endpoint(client, keys, ops.url, event_types=["endpoint.disabled"])
        await lapse(client, keys, clock)
        await deliver(app)
        assert len(crm.requests) == 1  # no retry after a 410
        health = await endpoint_now(client, keys, endpoint)
        assert health["enabled"] is False
        assert health["disabled_reason"] == "the receiver answered 410 Gone"
        (failed,) = await deliveries(client, keys, endpoint)
        assert failed["status"] == "failed"
        (request,) = ops.requests
        body = verified(watcher["secret"], request)
        assert body["type"] == "endpoint.disabled"
        assert body["data"]["endpoint"]["id"] == endpoint["id"]
        assert body["data"]["endpoint"]["disabled_reason"] == "the receiver answered 410 Gone"

        # While disabled, new alerts queue up for it; re-enabling sends them.
        await lapse(client, keys, clock, "card-2")
        await deliver(app)
        assert len(crm.requests) == 1
        crm.script = always(Reply())
        enabled = await client.patch(
            f"/v1/webhooks/endpoints/{endpoint['id']}", json={"enabled": True}, headers=keys.manage
        )
        assert enabled.json()["disabled_reason"] is None
        await deliver(app)
        assert len(crm.requests) == 2
        assert orjson.loads(crm.requests[1].body)["data"]["alert"]["customer_id"] == "card-2"


async def test_an_endpoint_failing_for_too_long_is_disabled(
    settings: Settings, clock: Clock
) -> None:
    async with (
        running(
            settings,
            clock,
            webhook_retry_schedule=[timedelta(milliseconds=200)] * 5,
            webhook_disable_after=timedelta(milliseconds=500),
        ) as (app, client, keys),
        Receiver(always(Reply(500))) as crm,
        Receiver() as ops,
    ):
        endpoint = await add_endpoint(client, keys, crm.url, event_types=["alert.opened"])
        await add_endpoint(client, keys, ops.url, event_types=["endpoint.disabled"])
        await lapse(client, keys, clock)
        await deliver(app)
        health = await endpoint_now(client, keys, endpoint)
        assert health["enabled"] is False
        assert health["disabled_reason"].startswith("every attempt failed since")
        assert 3 <= len(crm.requests) <= 5  # stopped before the schedule ran out
        (delivery,) = await deliveries(client, keys, endpoint)
        assert delivery["status"] == "pending"  # kept, for when it is enabled again
        (request,) = ops.requests
        assert orjson.loads(request.body)["type"] == "endpoint.disabled"


async def test_the_circuit_breaker_pauses_a_failing_endpoint_then_probes_it(
    settings: Settings, clock: Clock
) -> None:
    async with (
        running(
            settings,
            clock,
            webhook_circuit_failures=2,
            webhook_circuit_cooldown=timedelta(milliseconds=400),
        ) as (app, client, keys),
        Receiver(always(Reply(500))) as receiver,
    ):
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock, "card-1", "card-2", "card-3")
        dispatcher = app.state.dispatcher
        await dispatcher.dispatch_due()
        await receiver.wait_for(3)
        await asyncio.sleep(0.1)
        await dispatcher.dispatch_due()  # records the three failures: the circuit opens
        health = await endpoint_now(client, keys, endpoint)
        assert health["consecutive_failures"] == 3
        paused_until = datetime.fromisoformat(health["paused_until"])
        assert paused_until > utcnow()
        await asyncio.sleep(0.1)  # the retries (50 ms) are due, but the circuit is open
        await dispatcher.dispatch_due()
        assert len(receiver.requests) == 3

        receiver.script = always(Reply(delay=0.2))  # healthy again, and a little slow
        await asyncio.sleep((paused_until - utcnow()).total_seconds() + 0.05)
        await deliver(app)
        probe, *rest = receiver.requests[3:]
        assert len(rest) == 2
        # Half-open: one probe alone; the others only once it had succeeded.
        assert min(r.at for r in rest) - probe.at >= 0.19
        health = await endpoint_now(client, keys, endpoint)
        assert health["consecutive_failures"] == 0
        assert health["paused_until"] is None
        assert len(await deliveries(client, keys, endpoint, status="succeeded")) == 3


async def test_an_ordered_endpoint_gets_messages_one_at_a_time_in_order(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver(fail_first(2, Reply(503))) as ordered, Receiver() as unordered:
        await add_endpoint(client, keys, ordered.url, ordered=True)
        await add_endpoint(client, keys, unordered.url)
        await lapse(client, keys, clock, *(f"card-{n}" for n in range(5)))
        await deliver(app)
        sent = [r.message_id for r in ordered.requests]
        first = sent[0]
        assert sent[:3] == [first] * 3  # retried until it went through, nothing overtaking
        assert len(sent) == 7
        assert len(set(sent)) == 5
        assert sorted(r.message_id for r in unordered.requests) == sorted(set(sent))
        customers = [orjson.loads(r.body)["data"]["alert"]["customer_id"] for r in ordered.requests]
        assert customers[2:] == sorted(customers[2:], key=lambda c: int(c.split("-")[1]))


async def test_a_rate_limit_spaces_the_deliveries(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver() as receiver:
        await add_endpoint(client, keys, receiver.url, rate_limit=10)
        await lapse(client, keys, clock, *(f"card-{n}" for n in range(25)))
        await deliver(app)
        times = sorted(r.at for r in receiver.requests)
        assert len(times) == 25
        # A bucket of 10 that refills at 10 per second: never more than 10 + 10 t in t.
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= 10 + 10 * (times[j] - start) + 1, (i, j)
        assert times[-1] - times[0] >= 1.2


async def test_a_rotated_secret_signs_alongside_the_old_one_during_the_grace_period(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver() as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        old = endpoint["secret"]
        path = f"/v1/webhooks/endpoints/{endpoint['id']}/rotate-secret"
        rotated = await client.post(path, headers=keys.manage)
        assert rotated.status_code == 200
        new = rotated.json()["secret"]
        assert new != old
        grace_end = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
        assert timedelta(hours=23) < grace_end - utcnow() <= timedelta(hours=24)
        await lapse(client, keys, clock, "card-1")
        await deliver(app)
        (request,) = receiver.requests
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        verified(old, request)  # a receiver not yet updated still accepts it
        verified(new, request)

        again = await client.post(path, json={"grace_period": "PT0S"}, headers=keys.manage)
        newest = again.json()["secret"]
        assert again.json()["previous_secret_expires_at"] is None
        await lapse(client, keys, clock, "card-2")
        await deliver(app)
        request = receiver.requests[1]
        verified(newest, request)
        with pytest.raises(WebhookVerificationError):
            verified(new, request)
        with pytest.raises(WebhookVerificationError):
            verified(old, request)


# -- the outbox, leases, shutdown, retention -----------------------------------------------


async def count(app: FastAPI, model: type[Any]) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_deliveries_commit_and_roll_back_with_the_alert_change(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await add_endpoint(client, keys, "http://127.0.0.1:9/a")
    await add_endpoint(client, keys, "http://127.0.0.1:9/b", event_types=["alert.resolved"])
    await lapse(client, keys, clock, *(f"card-{n}" for n in range(10)))
    assert await count(app, Alert) == 10
    assert await count(app, WebhookMessage) == 10  # one per alert.opened
    assert await count(app, WebhookDelivery) == 10  # to the one endpoint that wants them

    class Abort(Exception):
        pass

    def open_alert_then_fail(connection: Connection) -> None:
        (alert,) = repository.insert_alerts(
            connection,
            [
                {
                    "customer_id": "card-x",
                    "rule": "inactivity",
                    "status": "open",
                    "severity": "low",
                    "score": 0.9,
                    "value_at_risk": Decimal(1),
                    "store_id": None,
                    "evidence": {},
                    "policy_version": 0,
                    "opened_at": clock(),
                    "updated_at": clock(),
                    "resolved_at": None,
                    "resolution": None,
                }
            ],
        )
        repository.record_events(connection, [("alert.opened", alert)], clock())
        outbox.enqueue_alert_events(connection, [("alert.opened", alert)], clock())
        assert connection.scalar(select(func.count()).select_from(WebhookDelivery)) == 11
        raise Abort

    with pytest.raises(Abort):
        await app.state.transactions.run(open_alert_then_fail)
    assert await count(app, Alert) == 10
    assert await count(app, WebhookMessage) == 10
    assert await count(app, WebhookDelivery) == 10


async def test_a_claim_whose_dispatcher_died_is_sent_by_another_after_the_lease(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, settings: Settings
) -> None:
    async with Receiver() as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock)
        now = utcnow()
        lease_end = now + timedelta(milliseconds=500)

        def claim_and_vanish(connection: Connection) -> list[Job]:
            (row,) = webhooks.list_endpoints(connection)
            return webhooks.claim(connection, row, now, lease_end, 10)

        (job,) = await app.state.transactions.run(claim_and_vanish)
        assert job.attempt == 1
        other = Dispatcher(app.state.transactions, settings)
        try:
            await other.dispatch_due()
            assert receiver.requests == []  # still leased
            (delivery,) = await deliveries(client, keys, endpoint)
            assert delivery["status"] == "sending"
            await asyncio.sleep((lease_end - utcnow()).total_seconds() + 0.05)
            await other.run_until_idle()
        finally:
            await other.stop()
        (request,) = receiver.requests
        assert request.message_id == job.message_uid
        (delivery,) = await deliveries(client, keys, endpoint)
        assert delivery["status"] == "succeeded"
        assert delivery["attempts"] == 2  # the lost one counts


async def test_shutdown_gives_unanswered_deliveries_back_and_marks_nothing_sent(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, settings: Settings
) -> None:
    async with Receiver(fail_first(1, Reply(delay=5))) as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock)
        first = Dispatcher(app.state.transactions, settings)
        await first.dispatch_due()
        await receiver.wait_for(1)
        await first.stop(grace=timedelta(milliseconds=100))
        (delivery,) = await deliveries(client, keys, endpoint)
        assert delivery["status"] == "pending"  # not sent as far as anyone knows
        assert delivery["attempts"] == 0
        assert delivery["finished_at"] is None

        second = Dispatcher(app.state.transactions, settings)
        try:
            await second.run_until_idle()
        finally:
            await second.stop()
        assert [r.message_id for r in receiver.requests] == [receiver.requests[0].message_id] * 2
        (delivery,) = await deliveries(client, keys, endpoint)
        assert delivery["status"] == "succeeded"


async def test_shutdown_waits_for_sends_that_finish_within_the_grace(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, settings: Settings
) -> None:
    async with Receiver(always(Reply(delay=0.3))) as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock)
        dispatcher = Dispatcher(app.state.transactions, settings)
        await dispatcher.dispatch_due()
        await receiver.wait_for(1)
        await dispatcher.stop(grace=timedelta(seconds=5))
        (delivery,) = await deliveries(client, keys, endpoint)
        assert delivery["status"] == "succeeded"


async def test_old_messages_are_purged_with_their_deliveries_unless_being_sent(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver() as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock, "card-1", "card-2")
        await deliver(app)
        await lapse(client, keys, clock, "card-3")

        def claim(connection: Connection) -> list[Job]:
            (row,) = webhooks.list_endpoints(connection)
            return webhooks.claim(connection, row, utcnow(), utcnow() + timedelta(hours=1), 1)

        (in_flight,) = await app.state.transactions.run(claim)
        later = utcnow() + timedelta(seconds=1)
        purged = await app.state.transactions.run(lambda c: webhooks.purge(c, later))
        assert purged == 2
        (left,) = await deliveries(client, keys, endpoint)
        assert left["id"] == in_flight.delivery_id
        assert await count(app, WebhookAttempt) == 0  # the purged deliveries' attempts too


async def test_a_customer_won_back_by_staff_is_announced_as_recovered(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver() as receiver:
        await add_endpoint(
            client, keys, receiver.url, event_types=["alert.resolved", "customer.recovered"]
        )
        await lapse(client, keys, clock, "card-1", "card-2")
        alerts = (await client.get("/v1/alerts", headers=keys.read)).json()["items"]
        by_customer = {alert["customer_id"]: alert for alert in alerts}
        for customer, outcome, reason in (
            ("card-1", "won_back", "price"),
            ("card-2", "lost", "price"),
        ):
            resolved = await client.post(
                f"/v1/alerts/{by_customer[customer]['id']}/resolve",
                json={"outcome": outcome, "reason": reason, "by": "maria"},
                headers=keys.read,
            )
            assert resolved.status_code == 200, resolved.text
        await deliver(app)
        bodies = [orjson.loads(r.body) for r in receiver.requests]
        assert [(b["type"], b["data"]["customer"]["customer_id"]) for b in bodies] == [
            ("alert.resolved", "card-1"),
            ("customer.recovered", "card-1"),  # a lost customer is not recovered
            ("alert.resolved", "card-2"),
        ]
        assert bodies[0]["data"]["actor"] == "maria"
        assert bodies[1]["data"]["alerts"][0]["resolution"] == "won_back"


async def test_deleting_an_endpoint_mid_delivery_drops_its_queue_cleanly(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async with Receiver(always(Reply(delay=0.3))) as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock, "card-1", "card-2")
        dispatcher = app.state.dispatcher
        await dispatcher.dispatch_due()
        await receiver.wait_for(2)
        path = f"/v1/webhooks/endpoints/{endpoint['id']}"
        assert (await client.delete(path, headers=keys.manage)).status_code == 204
        await deliver(app)  # the answers come back for deliveries that are gone
        assert await count(app, WebhookDelivery) == 0
        assert await count(app, WebhookAttempt) == 0
        metrics = (await client.get("/metrics")).text
        assert 'radar_webhook_attempts_total{result="succeeded"} 2.0' in metrics


async def test_webhook_secrets_never_reach_the_logs(
    app: FastAPI,
    client: httpx.AsyncClient,
    keys: Keys,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Receiver(fail_first(1, Reply(410))) as receiver:
        # Receivers often take their token in the URL: it is as secret as the signing key.
        url = f"{receiver.url}/hooks/path-token-5150?token=query-token-2112"
        endpoint = await add_endpoint(client, keys, url)
        rotated = await client.post(
            f"/v1/webhooks/endpoints/{endpoint['id']}/rotate-secret", headers=keys.manage
        )
        await lapse(client, keys, clock)
        await deliver(app)  # a 410: the endpoint is disabled, with a warning logged
    records = "\n".join(str(vars(record)) for record in caplog.records)
    assert "webhook endpoint disabled" in records, "the dispatcher's log should have run"
    assert receiver.requests, "the endpoint should have been called"
    for secret in (endpoint["secret"], rotated.json()["secret"]):
        assert secret not in records
        assert secret.removeprefix("whsec_") not in records
    assert "path-token-5150" not in records
    assert "query-token-2112" not in records
