"""What a refund may reverse, the one currency, and purchases of nothing: the rules that keep
one bogus event from rewriting a loyal customer's value."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.kit.settings import Settings
from app.main import create_app
from tests.conftest import Keys, ScoredTransport, event, stored_customers, stored_events

pytestmark = pytest.mark.anyio


async def batch(client: httpx.AsyncClient, keys: Keys, *events: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(
        "/v1/purchases/batch", json={"events": list(events)}, headers=keys.ingest
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def refund(event_id: str, of: str | None, amount: str, **fields: Any) -> dict[str, Any]:
    body = event(event_id, kind="refund", amount=amount, **fields)
    if of is not None:
        body["refunds_event_id"] = of
    return body


def errors(answer: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """event_id -> (code, pointer) of each rejected event."""
    return {
        r["event_id"]: (r["errors"][0]["code"], r["errors"][0]["pointer"])
        for r in answer["results"]
        if r["status"] == "rejected"
    }


async def test_a_refund_reverses_at_most_what_is_left_of_the_same_customers_purchase(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys
) -> None:
    await batch(client, keys, event("buy", amount="40"), event("other", customer_id="card-2"))
    answer = await batch(
        client,
        keys,
        refund("r-1", "buy", "30"),
        refund("r-2", "buy", "10.01"),  # 10 is left after r-1 (checked in event_id order)
        refund("r-3", "buy", "10"),
        refund("r-4", "nothing", "5"),
        refund("r-5", "other", "5"),  # card-2's purchase, refunded to card-1
        refund("r-6", "r-1", "5"),  # a refund of a refund
        refund("r-7", None, "5"),  # not linked: taken as sent
    )
    assert errors(answer) == {
        "r-2": ("refund_exceeds_purchase", "/events/1/amount"),
        "r-4": ("refund_of_unknown_event", "/events/3/refunds_event_id"),
        "r-5": ("refund_customer_mismatch", "/events/4/refunds_event_id"),
        "r-6": ("refund_of_refund", "/events/5/refunds_event_id"),
    }
    assert answer["accepted"] == 3
    left = await batch(client, keys, refund("r-8", "buy", "0.0001"))
    assert errors(left) == {"r-8": ("refund_exceeds_purchase", "/events/0/amount")}
    (card_1, _, _) = await stored_customers(app)
    assert card_1["refund_amount"] == Decimal(45)  # r-1, r-3 and the unlinked r-7


async def test_a_retried_refund_is_a_duplicate_not_an_excess(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    await batch(client, keys, event("buy", amount="40"))
    first = await batch(client, keys, refund("r-1", "buy", "40"))
    again = await batch(client, keys, refund("r-1", "buy", "40"), refund("r-1", "buy", "40"))
    assert (first["accepted"], again["duplicates"], again["rejected"]) == (1, 2, 0)


async def test_a_purchase_and_its_refund_in_one_batch_in_either_order(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    answer = await batch(client, keys, refund("r-1", "buy", "40"), event("buy", amount="40"))
    assert (answer["accepted"], answer["rejected"]) == (2, 0)


async def test_a_refund_sent_before_its_purchase_is_accepted_when_sent_again(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    early = await client.post("/v1/purchases", json=refund("r-1", "buy", "5"), headers=keys.ingest)
    assert early.status_code == 422
    assert early.json()["errors"][0]["code"] == "refund_of_unknown_event"
    await batch(client, keys, event("buy", amount="40"))
    late = await client.post("/v1/purchases", json=refund("r-1", "buy", "5"), headers=keys.ingest)
    assert late.status_code == 201, late.text


async def test_a_purchase_of_nothing_is_a_visit_and_a_refund_of_nothing_is_refused(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys
) -> None:
    answer = await batch(
        client,
        keys,
        event("free", amount="0", occurred_at="2026-01-10T10:00:00Z"),
        event("paid", amount="4", occurred_at="2026-01-11T10:00:00Z"),
        refund("r-0", None, "0"),
    )
    assert errors(answer) == {"r-0": ("greater_than", "/events/2/amount")}
    (card_1, _) = await stored_customers(app)
    assert (card_1["visit_days"], card_1["purchases"]) == (2, 2)


async def test_another_currency_is_refused_per_event_naming_the_one_kept(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys
) -> None:
    answer = await batch(
        client, keys, event("eur", currency="eur"), event("jpy", currency="JPY", amount="5000")
    )
    (rejected,) = [r for r in answer["results"] if r["status"] == "rejected"]
    assert rejected["errors"][0]["code"] == "currency_not_accepted"
    assert rejected["errors"][0]["pointer"] == "/events/1/currency"
    assert "EUR" in rejected["errors"][0]["message"]
    assert [e["event_id"] for e in await stored_events(app)] == ["eur"]


async def test_the_currency_is_the_deployments_choice(settings: Settings) -> None:
    from asgi_lifespan import LifespanManager

    from app.kit.auth import Scope
    from tests.conftest import _truncate, make_key

    app = create_app(settings.model_copy(update={"currency": "JPY"}))
    async with LifespanManager(app):
        await _truncate(app)
        key = await make_key(app, "till", Scope.INGEST)
        transport = ScoredTransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as client:
            headers = {"Authorization": f"Bearer {key}"}
            yen = await client.post(
                "/v1/purchases", json=event(currency="JPY", amount="5000"), headers=headers
            )
            euro = await client.post("/v1/purchases", json=event("e-2"), headers=headers)
    assert yen.status_code == 201, yen.text
    assert euro.status_code == 422
