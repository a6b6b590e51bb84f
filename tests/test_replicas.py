"""Several replicas (`radar serve` processes) on one PostgreSQL database, each with its own
writer, sweeper and webhook dispatcher, and no load balancer: the test spreads the requests
itself, the same customers and even the same events through different replicas at once.
Whatever the interleaving, the events and patterns are exact, each alert opens once, and every
webhook message reaches the receiver once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.alerts import holdout
from app.kit.db import utcnow
from app.models import Alert, AlertEvent, Customer, PurchaseEvent, WebhookDelivery
from tests.conftest import Keys, event
from tests.receiver import Receiver

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
RADAR = str(Path(sys.executable).with_name("radar"))


@pytest.fixture
def postgres_url(database_url: str) -> str:
    """The session's PostgreSQL database (under CI=true an unreachable one fails, as in
    conftest); SQLite is single-node and has no replicas to test."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite is single-node: several replicas need PostgreSQL")
    return database_url


def replica_env(database_url: str, **overrides: str) -> dict[str, str]:
    """A replica as production runs it (writer, sweeper, dispatcher on), with the loops
    quick enough for a test and no per-key rate limits in the way of the load."""
    return {
        **os.environ,
        "RADAR_DATABASE_URL": database_url,
        "RADAR_MIGRATE_ON_START": "false",
        "RADAR_LOG_LEVEL": "WARNING",
        "RADAR_DB_POOL_SIZE": "4",
        "RADAR_SWEEP_INTERVAL": "PT0.5S",
        "RADAR_REFIT_INTERVAL": "0",  # a refit mid-test would change scores and severities
        "RADAR_WEBHOOK_DISPATCHER": "true",
        "RADAR_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
        "RADAR_WEBHOOK_POLL_INTERVAL": "PT0.1S",
        "RADAR_RATE_LIMIT_INGEST": "off",
        "RADAR_RATE_LIMIT_READ": "off",
        **overrides,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Replica:
    """One `radar serve` process and a client for it."""

    name: str
    process: asyncio.subprocess.Process
    http: httpx.AsyncClient
    log: Path

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


async def wait_until_healthy(replica: Replica, within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while True:
            assert replica.alive, f"{replica.name} exited during start-up:\n{replica.output()}"
            try:
                if (await replica.http.get("/healthz", timeout=1)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


@asynccontextmanager
async def replica(
    name: str, env: Mapping[str, str], directory: Path, *, wait: bool = True
) -> AsyncIterator[Replica]:
    """`radar serve` on a free port of 127.0.0.1 (healthy, unless not `wait`ed for); SIGTERM
    (a graceful shutdown) at the end."""
    port = free_port()
    log = directory / f"{name}.log"
    handle: TextIO
    with log.open("w") as handle:
        process = await asyncio.create_subprocess_exec(
            RADAR, "serve", "--port", str(port), env=dict(env), stdout=handle, stderr=handle
        )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        server = Replica(name, process, http, log)
        try:
            if wait:
                await wait_until_healthy(server)
            yield server
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 40)
                except TimeoutError:
                    process.kill()
                    await process.wait()


@asynccontextmanager
async def replicas(
    count: int, env: Mapping[str, str], directory: Path
) -> AsyncIterator[list[Replica]]:
    """`count` replicas, started together and stopped together."""
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(replica(f"replica-{n}", env, directory, wait=False))
            for n in range(count)
        ]
        try:
            await asyncio.gather(*(wait_until_healthy(server) for server in servers))
            yield servers
        finally:
            for server in servers:
                if server.alive:
                    server.process.send_signal(signal.SIGTERM)


# -- histories -----------------------------------------------------------------------------

WEEKS = 16
REGULARS = [f"regular-{n}" for n in range(6)]  # weekly until three days ago: no alert
GONE = [f"gone-{n}" for n in range(6)]  # silent for 210 days: an alert on ingest
QUIET = [f"quiet-{n}" for n in range(6)]  # silent for 70 days: an alert once the policy says so


def history(customer: str, last: date) -> list[dict[str, Any]]:
    """Weekly visits ending on `last`, each with its own amount (so that sums are exact)."""
    return [
        event(
            f"{customer}-w{week:02d}",
            customer_id=customer,
            store_id="north",
            occurred_at=f"{last - timedelta(weeks=WEEKS - 1 - week)}T12:00:00Z",
            amount=f"{10 + week}.{week:02d}",
        )
        for week in range(WEEKS)
    ]


def policy(min_days: int) -> dict[str, Any]:
    """Inactivity alone (the other rules would read partial histories their own way)."""
    return {
        "rules": {
            "inactivity": {"min_days": min_days},
            "frequency_drop": {"enabled": False},
            "spend_drop": {"enabled": False},
            "category_lapse": {"enabled": False},
        },
    }


def held_out(min_days: int) -> dict[str, Any]:
    """The same, with half the cases held out as a control group (their arms are checked)."""
    return {**policy(min_days), "holdout": 0.5}


async def ingest(server: Replica, keys: Keys, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await server.http.post(
        "/v1/purchases/batch", json={"events": events}, headers=keys.ingest
    )
    assert response.status_code == 200, f"{server.name}: {response.status_code} {response.text}"
    body: dict[str, Any] = response.json()
    assert body["rejected"] == 0, body
    return body


async def rows(app: FastAPI, statement: Any) -> list[Any]:
    async with app.state.sessionmaker() as session:
        return list((await session.execute(statement)).all())


async def eventually(app: FastAPI, statement: Any, expected: Any, within: float = 30.0) -> None:
    """Wait until the query (a scalar) answers `expected`."""
    value = None
    try:
        async with asyncio.timeout(within):
            while (value := (await rows(app, statement))[0][0]) != expected:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"still {value!r}, expected {expected!r}, after {within} s")


# -- the test ------------------------------------------------------------------------------


async def test_replicas_share_one_database_exactly(
    app: FastAPI, keys: Keys, postgres_url: str, tmp_path: Path
) -> None:
    today = utcnow().date()
    regular = {c: history(c, today - timedelta(days=3)) for c in REGULARS}
    gone = {c: history(c, today - timedelta(days=210)) for c in GONE}
    quiet = {c: history(c, today - timedelta(days=70)) for c in QUIET}
    env = replica_env(postgres_url)
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(Receiver())
        servers = await stack.enter_async_context(replicas(3, env, tmp_path))
        first = servers[0]
        created = await first.http.post(
            "/v1/webhooks/endpoints", json={"url": receiver.url}, headers=keys.manage
        )
        assert created.status_code == 201, created.text
        # Silence of 200 days and more only: the gone alert on ingest, the quiet ones not yet.
        answer = await first.http.put("/v1/policy", json=held_out(200), headers=keys.manage)
        assert answer.status_code == 200, answer.text

        # Regulars and quiet customers: every event to one replica, every third one to a
        # second replica too, in small batches that mix the customers, all replicas at once.
        spread: list[list[dict[str, Any]]] = [[], [], []]
        position = 0
        for week in range(WEEKS):
            for customer in [*REGULARS, *QUIET]:
                item = (regular | quiet)[customer][week]
                spread[position % 3].append(item)
                if position % 3 == 0:
                    spread[(position + 1) % 3].append(item)
                position += 1
        calls = [
            ingest(servers[n], keys, spread[n][start : start + 5])
            for n in range(3)
            for start in range(0, len(spread[n]), 5)
        ]
        # The gone customers: each whole history, as one batch, to two replicas at once (in
        # the opposite order to the second, as a client's retry may).
        calls += [
            ingest(servers[(n + k) % 3], keys, gone[customer][:: 1 - 2 * k])
            for n, customer in enumerate(GONE)
            for k in (0, 1)
        ]
        answers = await asyncio.gather(*calls)
        sent = {item["event_id"] for batch in spread for item in batch}
        sent |= {item["event_id"] for events in gone.values() for item in events}
        accepted = sum(a["accepted"] for a in answers)
        assert accepted == len(sent), "every distinct event accepted once, wherever it went"
        assert sum(a["duplicates"] for a in answers) == sum(len(a["results"]) for a in answers) - (
            len(sent)
        )

        # One event through two replicas at the same moment: one stores it, one sees it stored.
        single = event("late-1", customer_id=REGULARS[0], store_id="south", amount="7.25",
                       occurred_at=f"{today - timedelta(days=2)}T09:30:00Z")  # fmt: skip
        both = await asyncio.gather(
            *(s.http.post("/v1/purchases", json=single, headers=keys.ingest) for s in servers[:2])
        )
        assert sorted(r.status_code for r in both) == [200, 201], [r.text for r in both]
        assert {r.json()["status"] for r in both} == {"accepted", "duplicate"}

        # The gone customers' alerts opened on ingest, once each.
        await eventually(app, select(func.count()).select_from(Alert), len(GONE))
        # Now every silence of 14 days counts: the policy makes every customer due, and the
        # three sweepers (SKIP LOCKED) open the quiet customers' alerts between them.
        answer = await servers[1].http.put("/v1/policy", json=held_out(14), headers=keys.manage)
        assert answer.status_code == 200, answer.text
        await eventually(app, select(func.count()).select_from(Alert), len(GONE) + len(QUIET))
        # ...and between them they re-evaluated every customer (each replica counts its own).
        async with asyncio.timeout(30):
            while await swept_customers(servers) < len(REGULARS) + len(GONE) + len(QUIET):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        # Every webhook delivered, by whichever dispatcher claimed it: contact cases only.
        contact = select(Alert.customer_id).where(Alert.arm == "contact")
        expected_messages = len(await rows(app, contact))
        await eventually(
            app,
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.status == "succeeded"),
            expected_messages,
        )
        await asyncio.sleep(1.0)  # a message sent twice would have arrived by now
        for server in servers:
            assert server.alive, f"{server.name} died:\n{server.output()}"
        feeds = [await changes(server, keys) for server in servers]

    # -- the one database, after three replicas -----------------------------------------
    stored = await rows(app, select(PurchaseEvent.event_id))
    assert sorted(e for (e,) in stored) == sorted(sent | {"late-1"})
    patterns = {
        row.customer_id: row
        for (row,) in await rows(app, select(Customer).order_by(Customer.customer_id))
    }
    assert set(patterns) == set(REGULARS) | set(GONE) | set(QUIET)
    for customer, events in (regular | gone | quiet).items():
        extra = [single] if customer == REGULARS[0] else []
        pattern = patterns[customer]
        assert pattern.visit_days == WEEKS + len(extra), customer
        assert pattern.purchases == WEEKS + len(extra), customer
        assert pattern.purchase_amount == sum(Decimal(e["amount"]) for e in events + extra)
        assert pattern.stores == ({"north": WEEKS, "south": 1} if extra else {"north": WEEKS})

    alerts = await rows(app, select(Alert.customer_id, Alert.rule, Alert.status))
    assert sorted(alerts) == sorted((c, "inactivity", "open") for c in GONE + QUIET)
    # Whichever replica opened a case, its arm is the draw of its customer and stratum.
    arms = await rows(app, select(Alert.customer_id, Alert.rule, Alert.severity, Alert.arm))
    assert all(arm == holdout.arm_for(c, rule, severity, 0.5) for c, rule, severity, arm in arms)
    called = sorted(c for c, _, _, arm in arms if arm == "contact")
    assert 0 < len(called) < len(arms), "both arms drawn"
    feed = await rows(app, select(AlertEvent.customer_id, AlertEvent.type).order_by(AlertEvent.seq))
    opened = Counter(customer for customer, kind in feed if kind == "alert.opened")
    assert opened == Counter(GONE + QUIET), "every alert opened once"
    # Each replica serves the same change feed, in the same (commit) order.
    assert feeds[0] == feeds[1] == feeds[2]
    assert [(c["customer_id"], c["type"]) for c in feeds[0]] == [tuple(f) for f in feed]

    received = Counter(request.message_id for request in receiver.requests)
    bodies = {request.message_id: orjson.loads(request.body) for request in receiver.requests}
    assert len(received) == expected_messages, "every message arrived"
    assert set(received.values()) == {1}, f"none twice: {received}"
    assert sorted(
        (body["type"], body["data"]["alert"]["customer_id"]) for body in bodies.values()
    ) == [("alert.opened", customer) for customer in called]


async def swept_customers(servers: list[Replica]) -> int:
    """Customers the replicas' sweepers evaluated, all together (from their /metrics)."""
    total = 0.0
    for server in servers:
        text = (await server.http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith("radar_sweep_customers_total "):
                total += float(line.split()[1])
    return int(total)


async def changes(server: Replica, keys: Keys) -> list[dict[str, Any]]:
    response = await server.http.get(
        "/v1/alerts/changes", params={"limit": 200, "arm": "all"}, headers=keys.read
    )
    assert response.status_code == 200, response.text
    return list(response.json()["events"])
