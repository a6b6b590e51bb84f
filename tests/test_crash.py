"""SIGKILL under load: `radar serve` is killed at random moments while concurrent tills post
purchases, batches, refunds and retries, and restarted on the same port and database.

Afterwards every event that was acknowledged (2xx) is stored exactly once, nothing is stored
that was never sent, no event was accepted twice, and the customers' patterns are exactly
what a rebuild from the stored events gives.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.alerts.service import Evaluator
from app.kit.db import open_transactions
from app.kit.settings import Settings
from app.models import Customer, CustomerVisitDay, PurchaseEvent
from app.pipeline import Scorer, pending_count, rebuild
from tests.radar_process import (
    RADAR,
    RadarServer,
    create_key,
    fresh_database,
    open_engine,
    server_env,
)
from tests.test_server import _free_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CLIENTS = 6
CUSTOMERS = [f"card-{n}" for n in range(25)]  # shared by every client
STORES = ["store-1", "store-2", "store-3"]
OFFSETS = ["+00:00", "+01:00", "-05:00", "+09:30"]
KILLS_MID_TRAFFIC = 3
ANSWERS_BEFORE_KILL = 6  # requests each server answers before it may be killed


@dataclass
class Request:
    path: str
    body: dict[str, Any]
    idempotency_key: str | None
    event_ids: list[str]


@dataclass
class Ledger:
    """What the tills sent, and what the server told them."""

    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # event_id -> event
    acknowledged: set[str] = field(default_factory=set)  # a 2xx said accepted or duplicate
    # First-time "accepted" answers (idempotent replays repeat one and are not counted).
    accepted: Counter[str] = field(default_factory=Counter)
    answers: Counter[int] = field(default_factory=Counter)
    answered: int = 0  # requests the server answered
    in_flight: int = 0
    refused: int = 0  # nobody listening: the server was down
    broken: int = 0  # the connection broke with the request sent: killed mid-request
    unexpected: list[str] = field(default_factory=list)


class Till:
    """One client: posts new events, refunds, batches with repeats, and retries."""

    def __init__(self, number: int, url: str, key: str, ledger: Ledger, seed: int) -> None:
        self.number = number
        self.url = url
        self.key = key
        self.ledger = ledger
        self.random = random.Random(seed)
        self.sequence = 0
        self.purchases: list[dict[str, Any]] = []
        self.done: list[Request] = []

    def new_event(self) -> dict[str, Any]:
        self.sequence += 1
        event_id = f"till-{self.number}:{self.sequence:06d}"
        rng = self.random
        if self.purchases and rng.random() < 0.15:
            # Each purchase refunded once, by half: a refund may not exceed what is left.
            bought = self.purchases.pop(rng.randrange(len(self.purchases)))
            event = {
                **bought,
                "event_id": event_id,
                "kind": "refund",
                "refunds_event_id": bought["event_id"],
                "amount": str(Decimal(bought["amount"]) / 2),
            }
            event.pop("items", None)
        else:
            day = datetime.now(UTC).date() - timedelta(days=rng.randint(2, 400))
            event = {
                "event_id": event_id,
                "customer_id": rng.choice(CUSTOMERS),
                "store_id": rng.choice(STORES),
                "occurred_at": f"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
                + rng.choice(OFFSETS),
                "amount": f"{rng.randint(100, 20000) / 100:.2f}",
                "currency": "EUR",
                "kind": "purchase",
            }
            if rng.random() < 0.5:
                event["items"] = [{"category": rng.choice(["food", "wine", "home"]), "amount": "1"}]
            if rng.random() < 0.5:
                event["staff_id"] = f"staff-{rng.randint(1, 4)}"
            self.purchases.append(event)
        self.ledger.sent[event_id] = event
        return event

    def next_request(self) -> Request:
        rng = self.random
        key = f"till-{self.number}:request-{self.sequence}" if rng.random() < 0.3 else None
        choice = rng.random()
        if choice < 0.15 and self.done:
            return rng.choice(self.done)  # the till sends an answered request again
        if choice < 0.55:
            event = self.new_event()
            return Request("/v1/purchases", event, key, [event["event_id"]])
        events = [self.new_event() for _ in range(rng.randint(2, 40))]
        # Events stored before, by this till or another, with the same content: duplicates.
        # (Stored, not only sent: another till's refund may not come before its purchase.)
        stored = sorted(self.ledger.acknowledged)
        for event_id in rng.sample(stored, min(3, len(stored))):
            if rng.random() < 0.5:
                events.insert(rng.randrange(len(events) + 1), self.ledger.sent[event_id])
        unique = list({event["event_id"]: event for event in events}.values())
        return Request(
            "/v1/purchases/batch", {"events": unique}, key, [e["event_id"] for e in unique]
        )

    async def run(self, stop: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30) as client:
            while not stop.is_set():
                request = self.next_request()
                await self.send(client, request)
                self.done.append(request)

    async def send(self, client: httpx.AsyncClient, request: Request) -> None:
        """Until the server answers: a till retries the same request (same event ids, same
        Idempotency-Key) after a connection error or a 503."""
        headers = {"Idempotency-Key": request.idempotency_key} if request.idempotency_key else {}
        for _ in range(400):
            self.ledger.in_flight += 1
            try:
                response = await client.post(request.path, json=request.body, headers=headers)
            except httpx.ConnectError:
                self.ledger.refused += 1
                await asyncio.sleep(0.05)
                continue
            except httpx.TransportError:
                self.ledger.broken += 1
                await asyncio.sleep(0.05)
                continue
            finally:
                self.ledger.in_flight -= 1
            self.ledger.answers[response.status_code] += 1
            self.ledger.answered += 1
            if response.status_code == 503:
                await asyncio.sleep(0.1)
                continue
            self.record(request, response)
            return
        self.ledger.unexpected.append(f"{request.event_ids[:3]}: never answered")

    def record(self, request: Request, response: httpx.Response) -> None:
        replayed = response.headers.get("idempotent-replayed") == "true"
        if response.status_code in (200, 201) and request.path == "/v1/purchases":
            results = [response.json()]
        elif response.status_code == 200:
            results = response.json()["results"]
        else:
            self.ledger.unexpected.append(f"{response.status_code}: {response.text}")
            return
        for result in results:
            if result["status"] not in ("accepted", "duplicate"):
                self.ledger.unexpected.append(str(result))
                continue
            self.ledger.acknowledged.add(result["event_id"])
            if result["status"] == "accepted" and not replayed:
                self.ledger.accepted[result["event_id"]] += 1


async def kill_and_restart(server: RadarServer, ledger: Ledger, seed: int) -> tuple[int, int]:
    """SIGKILL at random moments until KILLS_MID_TRAFFIC kills came with requests in flight;
    restart on the same port after each. Each server first answers a few requests, however
    slow the machine. Returns (kills, kills mid-traffic)."""
    rng = random.Random(seed)
    kills = mid_traffic = 0
    while mid_traffic < KILLS_MID_TRAFFIC and kills < 3 * KILLS_MID_TRAFFIC:
        await answered(ledger, ledger.answered + ANSWERS_BEFORE_KILL)
        await asyncio.sleep(rng.uniform(0, 0.5))
        in_flight = ledger.in_flight
        await server.kill()
        kills += 1
        mid_traffic += in_flight > 0
        await asyncio.sleep(rng.uniform(0, 0.3))  # the tills find nobody listening
        await server.start()
    await answered(ledger, ledger.answered + ANSWERS_BEFORE_KILL)  # the last server works too
    return kills, mid_traffic


async def answered(ledger: Ledger, count: int) -> None:
    async with asyncio.timeout(30):
        while ledger.answered < count:  # noqa: ASYNC110 - the tills count as they go
            await asyncio.sleep(0.02)


async def read_tables(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """Every stored event, every customer pattern (minus when it was written and when it is
    due, which depend on when it was evaluated), and every visit day."""
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            events = [
                dict(row._mapping)
                for row in await connection.execute(
                    select(PurchaseEvent).order_by(PurchaseEvent.event_id)
                )
            ]
            columns = [
                column
                for column in Customer.__table__.columns
                if column.name not in ("updated_at", "next_check_at")
            ]
            customers = [
                dict(row._mapping)
                for row in await connection.execute(select(*columns).order_by(Customer.customer_id))
            ]
            days = list(
                await connection.execute(
                    select(CustomerVisitDay.customer_id, CustomerVisitDay.day).order_by(
                        CustomerVisitDay.customer_id, CustomerVisitDay.day
                    )
                )
            )
            return events, customers, [tuple(day) for day in days]
    finally:
        await engine.dispose()


def same_event(stored: dict[str, Any], sent: dict[str, Any]) -> bool:
    occurred_at = datetime.fromisoformat(sent["occurred_at"])
    return bool(
        stored["customer_id"] == sent["customer_id"]
        and stored["store_id"] == sent["store_id"]
        and stored["kind"] == sent["kind"]
        and stored["amount"] == Decimal(sent["amount"])
        and stored["occurred_at"] == occurred_at.astimezone(UTC)
        and stored["occurred_on"] == occurred_at.date()
        and stored["refunds_event_id"] == sent.get("refunds_event_id")
        and stored["staff_id"] == sent.get("staff_id")
    )


def recomputed(sent: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The patterns' plain sums and counts, computed here from the events as sent."""
    patterns: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "purchases": 0,
            "refunds": 0,
            "purchase_amount": Decimal(0),
            "refund_amount": Decimal(0),
            "days": set(),
            "stores": Counter(),
        }
    )
    for event in sent:
        pattern = patterns[event["customer_id"]]
        if event["kind"] == "refund":
            pattern["refunds"] += 1
            pattern["refund_amount"] += Decimal(event["amount"])
        else:
            pattern["purchases"] += 1
            pattern["purchase_amount"] += Decimal(event["amount"])
            pattern["days"].add(datetime.fromisoformat(event["occurred_at"]).date())
            pattern["stores"][event["store_id"]] += 1
    return {
        customer: {
            "purchases": p["purchases"],
            "refunds": p["refunds"],
            "purchase_amount": p["purchase_amount"],
            "refund_amount": p["refund_amount"],
            "visit_days": len(p["days"]),
            "first_visit_on": min(p["days"], default=None),
            "last_visit_on": max(p["days"], default=None),
            "stores": dict(p["stores"]),
        }
        for customer, p in patterns.items()
    }


async def test_sigkill_under_load_loses_and_invents_nothing(
    database_url: str, tmp_path: Path
) -> None:
    url = await fresh_database(database_url, tmp_path)
    env = server_env(url, RADAR_LOG_LEVEL="WARNING")
    key = await create_key(url, "ingest")
    server = RadarServer(env, _free_port(), tmp_path / "server.log")
    ledger = Ledger()
    stop = asyncio.Event()
    seed = random.randrange(1_000_000)
    try:
        await server.start()
        tills = [Till(n, server.url, key, ledger, seed + n) for n in range(CLIENTS)]
        traffic = [asyncio.create_task(till.run(stop)) for till in tills]
        try:
            kills, mid_traffic = await kill_and_restart(server, ledger, seed)
        finally:
            stop.set()
            async with asyncio.timeout(60):
                await asyncio.gather(*traffic)
        server.terminate()
        exit_code = await server.wait(within=60)
    finally:
        await server.stop()
    context = (
        f"seed {seed}: {kills} kills, {len(ledger.sent)} events sent, answers {ledger.answers}, "
        f"{ledger.refused} refused, {ledger.broken} broken off; log:\n{server.output()[-3000:]}"
    )

    # The kills came mid-traffic: requests were in flight and some broke off.
    assert mid_traffic == KILLS_MID_TRAFFIC, context
    assert ledger.broken > 0, context
    assert ledger.unexpected == [], context
    assert exit_code in (0, -signal.SIGTERM), context  # the last one was stopped gracefully

    # What the last scorer left queued (a kill mid-batch rolls its batch back) is folded by
    # the next one, as `radar score --once` does.
    settings = Settings(database_url=url, migrate_on_start=False)
    async with open_transactions(settings) as transactions:
        await Scorer(transactions, Evaluator()).drain()
        assert await transactions.read(pending_count) == 0
    events, customers, days = await read_tables(url)
    stored = Counter(event["event_id"] for event in events)
    assert [i for i, count in stored.items() if count > 1] == [], "stored more than once"
    assert ledger.acknowledged - set(stored) == set(), f"acknowledged but lost ({context})"
    assert set(stored) - set(ledger.sent) == set(), "stored but never sent"
    for event in events:
        assert same_event(event, ledger.sent[event["event_id"]]), event
    assert [i for i, count in ledger.accepted.items() if count > 1] == [], "accepted twice"

    # The patterns kept event by event are those the events themselves give...
    expected = recomputed([ledger.sent[event_id] for event_id in stored])
    assert {c["customer_id"]: {k: c[k] for k in expected[c["customer_id"]]} for c in customers} == (
        expected
    )
    # ...and exactly those a rebuild from the stored events gives (what `radar rebuild` runs).
    async with open_transactions(settings) as transactions:
        assert await transactions.run(rebuild) == len(customers)
    _, customers_rebuilt, days_rebuilt = await read_tables(url)
    assert customers == customers_rebuilt
    assert days == days_rebuilt


class ScorerProcess:
    """`radar score` on its own; each start appends its output to one log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                RADAR, "score", env=self.env, stdout=output, stderr=output
            )

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
        async with asyncio.timeout(30):
            return await self.process.wait()


async def test_sigkill_of_the_scorer_under_load_folds_every_event_once(
    database_url: str, tmp_path: Path
) -> None:
    """The scorer in its own process (`radar score`, the service with RADAR_SCORER=false) is
    killed mid-batch again and again while tills post: every acknowledged event ends up in
    its customer's pattern exactly once, as a rebuild from the stored events gives."""
    url = await fresh_database(database_url, tmp_path)
    env = server_env(url, RADAR_LOG_LEVEL="WARNING", RADAR_SCORER="false")
    key = await create_key(url, "ingest")
    server = RadarServer(env, _free_port(), tmp_path / "server.log")
    scorer = ScorerProcess(
        {**env, "RADAR_SCORER_BATCH_SIZE": "7", "RADAR_SCORER_LINGER": "0"},
        tmp_path / "scorer.log",
    )
    ledger = Ledger()
    stop = asyncio.Event()
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    try:
        await server.start()
        await scorer.start()
        tills = [Till(n, server.url, key, ledger, seed + n) for n in range(CLIENTS)]
        traffic = [asyncio.create_task(till.run(stop)) for till in tills]
        try:
            for _ in range(KILLS_MID_TRAFFIC):
                await answered(ledger, ledger.answered + 3 * ANSWERS_BEFORE_KILL)
                await asyncio.sleep(rng.uniform(0, 0.3))
                await scorer.kill()
                await scorer.start()
            await answered(ledger, ledger.answered + ANSWERS_BEFORE_KILL)
        finally:
            stop.set()
            async with asyncio.timeout(60):
                await asyncio.gather(*traffic)
        assert await scorer.stop() in (0, -signal.SIGTERM)
        server.terminate()
        await server.wait(within=60)
    finally:
        await server.stop()
        if scorer.process is not None and scorer.process.returncode is None:
            await scorer.kill()
    context = f"seed {seed}; scorer log:\n{scorer.log.read_text()[-3000:]}"
    assert ledger.unexpected == [], context
    assert "Traceback" not in scorer.log.read_text(), context

    settings = Settings(database_url=url, migrate_on_start=False)
    async with open_transactions(settings) as transactions:
        await Scorer(transactions, Evaluator()).drain()  # what the last one left queued
    events, customers, days = await read_tables(url)
    expected = recomputed([ledger.sent[event["event_id"]] for event in events])
    assert {c["customer_id"]: {k: c[k] for k in expected[c["customer_id"]]} for c in customers} == (
        expected
    ), context
    async with open_transactions(settings) as transactions:
        assert await transactions.run(rebuild) == len(customers)
    _, customers_rebuilt, days_rebuilt = await read_tables(url)
    assert customers == customers_rebuilt
    assert days == days_rebuilt
