"""No item can stall the others: every loop that serves many (the dispatcher, the sweeper,
the scorer, the periodic jobs) sets a poisoned item aside, visibly, and goes on."""

from __future__ import annotations

import gzip
import math
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from app.customers import state
from app.customers.repository import pending_events
from app.kit.db import Money
from app.models import Customer
from app.scoring.service import MIN_CUSTOMERS_TO_FIT, refit
from app.webhooks.dispatcher import Outcome
from tests.conftest import Clock, Keys, event, stored_customers
from tests.receiver import Receiver, Reply, always
from tests.test_alerts import customer, post, sweep_at, unresolved, visits, weekly
from tests.test_scores import _regular
from tests.test_webhooks import add_endpoint, deliver, deliveries, lapse
from tests.test_webhooks import settings as settings  # retries in milliseconds

pytestmark = pytest.mark.anyio


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
    app: FastAPI,
    client: httpx.AsyncClient,
    keys: Keys,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
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
        # The statement's error is logged without its parameters (the rows it wrote).
        assert "writing 3 webhook outcomes failed" in caplog.text
        if not app.state.settings.is_sqlite:  # (SQLite's driver refuses it before SQL)
            assert "SQL parameters hidden" in caplog.text
        assert "ok\x00" not in caplog.text
        assert "[parameters:" not in caplog.text


# -- the sweeper ---------------------------------------------------------------------------

MAX_AMOUNT = "999999999999.9999"  # the largest amount an event may carry


def daily(first: date, days: int) -> list[date]:
    return [first + timedelta(days=n) for n in range(days)]


async def test_a_customer_with_a_huge_value_at_risk_is_alerted_without_stopping_the_sweep(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """160 maximal purchases a visit: totals beyond the amount column (which used to make
    every later event of the customer fail), and a value at risk beyond it too (which used
    to roll back every sweep batch). Both saturate, and everyone is swept."""
    clock.set("2026-02-10T09:00:00+00:00")
    rich = [
        {**item, "event_id": f"{item['event_id']}-{n}"}
        for item in visits("rich", weekly(date(2026, 1, 5), 6), amount=MAX_AMOUNT)
        for n in range(160)
    ]
    await post(client, keys, rich)
    await post(client, keys, visits("plain", weekly(date(2026, 1, 5), 6)))
    pattern = (await customer(client, keys, "rich"))["pattern"]
    assert Decimal(pattern["purchase_amount"]) == Decimal("922337203685477.5807")  # 2**63 - 1
    result = await sweep_at(app, clock, datetime(2026, 3, 10, 9, tzinfo=UTC))
    assert result.customers == 2
    assert result.set_aside == 0
    rich_alert = unresolved(await customer(client, keys, "rich"))["inactivity"]
    assert Decimal(rich_alert["value_at_risk"]) == Money.MAX
    plain_alert = unresolved(await customer(client, keys, "plain"))["inactivity"]
    assert Decimal(plain_alert["value_at_risk"]) > 0


async def corrupt_pattern(app: FastAPI, customer_id: str, weekly: dict[str, Any]) -> None:
    """A stored pattern no code of ours would write (a hand edit, a bug of an old version)."""
    async with app.state.engine.begin() as connection:
        await connection.execute(
            update(Customer).where(Customer.customer_id == customer_id).values(weekly=weekly)
        )


async def test_a_customer_the_sweeper_cannot_evaluate_is_set_aside_and_the_others_swept(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    clock.set("2026-03-24T09:00:00+00:00")
    for name in ("a-first", "poison", "z-last"):
        await post(client, keys, visits(name, weekly(date(2026, 1, 5), 12)))
    await corrupt_pattern(app, "poison", {"not a week": "nor a tally"})
    when = datetime(2026, 5, 1, 9, tzinfo=UTC)
    result = await sweep_at(app, clock, when)
    assert (result.customers, result.set_aside) == (3, 1)
    for name in ("a-first", "z-last"):
        assert "inactivity" in unresolved(await customer(client, keys, name))
    assert app.state.metrics.set_aside.labels("sweeper")._value.get() == 0  # counted by the job

    listed = await client.get("/v1/set-aside", headers=keys.manage)
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert (item["loop"], item["item"], item["failures"]) == ("sweeper", "poison", 1)
    assert item["error"].startswith(("ValueError", "TypeError", "AttributeError"))
    # Set aside for an hour: the next sweeps pass it by.
    assert (await sweep_at(app, clock, when + timedelta(minutes=30))).customers == 0
    assert (await sweep_at(app, clock, when + timedelta(minutes=61))).set_aside == 1
    (again,) = (await client.get("/v1/set-aside", headers=keys.manage)).json()["items"]
    assert again["failures"] == 2

    # Mended, and given back to the sweeper through the API: swept, and no longer aside.
    await corrupt_pattern(app, "poison", {})
    retried = await client.post(f"/v1/set-aside/{again['id']}/retry", headers=keys.manage)
    assert retried.status_code == 202, retried.text
    result = await sweep_at(app, clock, when + timedelta(minutes=62))
    assert (result.customers, result.set_aside) == (1, 0)
    assert (await client.get("/v1/set-aside", headers=keys.manage)).json()["items"] == []
    missing = await client.post(f"/v1/set-aside/{again['id']}/retry", headers=keys.manage)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


# -- the scorer ----------------------------------------------------------------------------


async def test_a_customer_whose_events_cannot_be_folded_is_set_aside_and_the_others_scored(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """A batch mixing a customer whose pattern cannot take an event with others: ingest
    stores and accepts all (storing never reads a pattern); the scorer folds the others,
    sets that customer aside with their event kept in its queue, and folds it once mended
    and retried: nothing is lost and nothing counts twice."""
    clock.set("2026-03-24T09:00:00+00:00")
    await post(client, keys, visits("poison", weekly(date(2026, 1, 5), 2)))
    await corrupt_pattern(app, "poison", {"not a week": "nor a tally"})
    batch = [
        *visits("a-first", [date(2026, 3, 20)]),
        *visits("poison", [date(2026, 3, 21)]),
        *visits("z-last", [date(2026, 3, 22)]),
    ]
    response = await client.post("/v1/purchases/batch", json={"events": batch}, headers=keys.ingest)
    assert response.status_code == 200, response.text
    assert (response.json()["accepted"], response.json()["rejected"]) == (3, 0)
    for name in ("a-first", "z-last"):
        view = await customer(client, keys, name)
        assert (view["pattern"]["visit_days"], view["pending_events"]) == (1, 0)
    pending = await app.state.transactions.read(lambda c: pending_events(c, "poison"))
    assert pending == 1  # kept in the scorer's queue
    assert app.state.metrics.set_aside.labels("scorer")._value.get() == 1
    (item,) = (await client.get("/v1/set-aside", headers=keys.manage)).json()["items"]
    assert (item["loop"], item["item"], item["failures"]) == ("scorer", "poison", 1)
    assert item["error"].startswith(("ValueError", "TypeError", "AttributeError"))
    # Set aside: the scorer passes it by (a drain folds nothing, and does not fail).
    assert await app.state.scorer.drain() == 0
    # ...and the sweeper does not evaluate a pattern with events still to fold, even due
    # (it would fail on this one, and set it aside as its own).
    async with app.state.engine.begin() as connection:
        await connection.execute(
            update(Customer)
            .where(Customer.customer_id == "poison")
            .values(next_check_at=datetime(2026, 3, 1, tzinfo=UTC))
        )
    swept = await sweep_at(app, clock, datetime(2026, 5, 1, 9, tzinfo=UTC))
    assert (swept.customers, swept.set_aside) == (0, 0)

    await corrupt_pattern(app, "poison", {})
    retried = await client.post(f"/v1/set-aside/{item['id']}/retry", headers=keys.manage)
    assert retried.status_code == 202, retried.text
    assert await app.state.scorer.drain() == 1
    mended = await customer(client, keys, "poison")
    assert (mended["pattern"]["visit_days"], mended["pending_events"]) == (3, 0)
    assert (await client.get("/v1/set-aside", headers=keys.manage)).json()["items"] == []
    again = await client.post("/v1/purchases/batch", json={"events": batch}, headers=keys.ingest)
    assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 3)


# -- sizes ---------------------------------------------------------------------------------


async def test_a_customer_sending_ever_new_names_keeps_a_bounded_pattern(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys
) -> None:
    events = [
        event(
            f"e-{n}",
            store_id=f"store-{n:03}",
            staff_id=f"staff-{n:03}",
            occurred_at=f"2026-01-{1 + n % 28:02}T12:00:00+00:00",
            items=[{"category": f"cat-{n:03}-{k}", "amount": "1"} for k in range(4)],
        )
        for n in range(150)
    ]
    await post(client, keys, events)
    again = event("again", store_id="store-000", items=[{"category": "cat-000-0", "amount": "1"}])
    await post(client, keys, [again])
    (pattern, _) = await stored_customers(app)
    assert len(pattern["categories"]) == state.MAX_CATEGORIES == 500
    assert len(pattern["stores"]) == state.MAX_STORES == 100
    assert len(pattern["staff"]) == state.MAX_STAFF == 100
    assert pattern["purchases"] == 151  # every purchase counts, tallied or not
    assert pattern["stores"]["store-000"] == 2  # names already tallied go on counting
    assert pattern["categories"]["cat-000-0"][0] == 2
    view = await client.get("/v1/customers/card-1", headers=keys.read)
    assert len(view.content) < 100_000


# -- the refit -----------------------------------------------------------------------------


async def test_a_customer_at_the_totals_bound_does_not_break_the_refit_or_the_scores(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys
) -> None:
    """One customer whose totals saturated among ordinary ones: the population fit stays
    finite and everyone, the outlier too, is scored (a guard: this held before the bounds)."""
    rng = random.Random(7)
    events: list[dict[str, object]] = []
    for n in range(MIN_CUSTOMERS_TO_FIT + 20):
        first = date(2025, 1, 1) + timedelta(days=rng.randint(0, 60))
        events += _regular(f"c{n}", first, rng.choice([7, 14, 30]), rng.randint(2, 12))
    events += [
        event(
            f"rich-{day}-{n}",
            customer_id="rich",
            amount=MAX_AMOUNT,
            occurred_at=f"2025-0{1 + day}-05T12:00:00Z",
        )
        for day in range(4)
        for n in range(250)
    ]
    await post(client, keys, events)
    fit = await refit(app.state.transactions, date(2026, 1, 1))
    assert fit is not None
    for value in (fit.r, fit.alpha, fit.s, fit.beta, fit.log_likelihood):
        assert value is not None
        assert math.isfinite(value)
    for name in ("rich", "c1"):
        view = await client.get(f"/v1/customers/{name}", headers=keys.read)
        assert view.status_code == 200, view.text
        assert Decimal(view.json()["scores"]["value_at_risk"]) <= Money.MAX
