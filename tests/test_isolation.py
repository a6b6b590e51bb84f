"""No item can stall the others: every loop that serves many (the dispatcher, the sweeper,
the event writer, the periodic jobs) sets a poisoned item aside, visibly, and goes on."""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.kit.settings import Settings
from app.webhooks.dispatcher import Outcome
from tests.conftest import Clock, Keys
from tests.receiver import Receiver, Reply, always
from tests.test_webhooks import add_endpoint, deliver, deliveries, lapse

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    from tests.test_webhooks import settings as webhook_settings

    return webhook_settings.__wrapped__(settings)  # type: ignore[attr-defined, no-any-return]


async def attempts_of(
    client: httpx.AsyncClient, keys: Keys, endpoint: dict[str, Any]
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/webhooks/endpoints/{endpoint['id']}/attempts", headers=keys.manage
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


# -- the dispatcher ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "kept"),
    [
        (Reply(200, body=b"ok\x00done"), "ok\ufffddone"),
        (Reply(200, {"content-encoding": "gzip"}, gzip.compress(b"ok, gzipped")), "ok, gzipped"),
        (Reply(500, {"content-encoding": "gzip"}, b"\x00\x01 not gzip"), "does not inflate"),
        (Reply(200, {"content-encoding": "br"}, b"\x00\x8b\x02"), "br-encoded answer, not"),
    ],
    ids=["nul", "gzip", "bad-gzip", "brotli"],
)
async def test_a_receiver_answering_bytes_text_cannot_hold_stops_no_other_delivery(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, reply: Reply, kept: str
) -> None:
    async with Receiver(always(reply)) as odd, Receiver() as plain:
        odd_endpoint = await add_endpoint(client, keys, odd.url)
        plain_endpoint = await add_endpoint(client, keys, plain.url)
        await lapse(client, keys, clock, "card-1", "card-2")
        await deliver(app)
        assert odd.requests[0].headers["accept-encoding"] == "identity"
        assert len(plain.requests) == 2
        plain_done = await deliveries(client, keys, plain_endpoint, status="succeeded")
        assert len(plain_done) == 2
        (attempt, *_) = await attempts_of(client, keys, odd_endpoint)
        assert kept in attempt["response_body"]
        assert "\x00" not in attempt["response_body"]
        expected = "succeeded" if reply.status == 200 else "failed"
        assert len(await deliveries(client, keys, odd_endpoint, status=expected)) == 2


async def test_an_outcome_the_database_refuses_is_stored_stripped_and_the_rest_go_on(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """A poisoned outcome (a status code no column holds) among good ones: the good ones are
    written, the bad one is written without what was refused, with why, and counted."""
    async with Receiver() as receiver:
        endpoint = await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock, "card-1", "card-2", "card-3")
        dispatcher = app.state.dispatcher
        real_send = dispatcher.send
        poisoned: list[int] = []

        async def send(job: Any) -> Outcome:
            outcome: Outcome = await real_send(job)
            if not poisoned:
                poisoned.append(job.delivery_id)
                return Outcome(job, outcome.attempted_at, 1.0, 2**70, "ok\x00", None)
            return outcome

        dispatcher.send = send
        await deliver(app)
        # The others were written as they came; the poisoned one was stored stripped, as a
        # failed attempt, and its retry then arrived.
        assert len(await deliveries(client, keys, endpoint, status="succeeded")) == 3
        attempts = await attempts_of(client, keys, endpoint)
        assert len(attempts) == 4
        stripped, retried = sorted(
            (a for a in attempts if a["delivery_id"] == poisoned[0]), key=lambda a: a["id"]
        )
        assert stripped["status_code"] is None
        assert stripped["response_body"] is None
        assert "could not be stored in full (" in stripped["error"]
        assert retried["status_code"] == 200
        assert app.state.metrics.set_aside.labels("dispatcher")._value.get() == 1
