"""Dispatchers as separate processes (`radar dispatch`): killed mid-delivery, and two at once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.kit.settings import Settings
from app.models import WebhookDelivery
from tests.conftest import Clock, Keys
from tests.receiver import Receiver, Reply, always
from tests.test_webhooks import add_endpoint, lapse

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
RADAR = str(Path(sys.executable).with_name("radar"))


def worker_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "RADAR_DATABASE_URL": settings.database_url,
        "RADAR_MIGRATE_ON_START": "false",
        "RADAR_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
        "RADAR_WEBHOOK_TIMEOUT": "PT2S",
        "RADAR_WEBHOOK_LEASE": "PT3S",
        "RADAR_WEBHOOK_POLL_INTERVAL": "PT0.05S",
        "RADAR_WEBHOOK_CONCURRENCY": "4",
        "RADAR_WEBHOOK_RETRY_SCHEDULE": '["PT0.1S", "PT0.1S", "PT0.1S"]',
        "RADAR_LOG_LEVEL": "WARNING",
    }


@asynccontextmanager
async def worker(settings: Settings) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(RADAR, "dispatch", env=worker_env(settings))
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)


async def statuses(app: FastAPI) -> Counter[str]:
    async with app.state.sessionmaker() as session:
        rows = await session.execute(
            select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
        )
        return Counter({status: count for status, count in rows})


async def all_succeeded(app: FastAPI, expected: int) -> None:
    """Wait for the worker processes to have recorded every delivery as sent."""
    async with asyncio.timeout(60):
        while (await statuses(app))["succeeded"] < expected:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.1)


async def test_a_worker_killed_mid_delivery_loses_nothing(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, settings: Settings
) -> None:
    """SIGKILL while requests are in flight, three times: after the restarts every alert has
    reached the receiver (at least once), and every delivery is marked sent."""
    async with Receiver(always(Reply(delay=0.3))) as receiver:
        await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock, *(f"card-{n}" for n in range(24)))
        assert (await statuses(app))["pending"] == 24
        for kill in range(3):
            async with worker(settings) as process:
                await receiver.wait_for(4 * (kill + 1), within=20)
                process.kill()  # SIGKILL: no chance to release its leases
                await process.wait()
        async with worker(settings):
            await all_succeeded(app, 24)
        received = Counter(r.message_id for r in receiver.requests)
        assert len(received) == 24, "every message arrived"
        # What was in flight at a kill arrived twice (at least once: the kills came
        # mid-delivery), and nothing else did.
        assert 24 < sum(received.values()) <= 24 + 3 * 4
        assert await statuses(app) == Counter({"succeeded": 24})


async def test_two_workers_send_every_delivery_once(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, settings: Settings
) -> None:
    async with Receiver(always(Reply(delay=0.01))) as receiver:
        await add_endpoint(client, keys, receiver.url)
        await add_endpoint(client, keys, receiver.url, description="second endpoint")
        await lapse(client, keys, clock, *(f"card-{n}" for n in range(40)))
        async with worker(settings) as first, worker(settings) as second:
            await all_succeeded(app, 80)
            await asyncio.sleep(0.5)  # anything sent twice would have arrived by now
            assert first.returncode is None
            assert second.returncode is None
        assert len(receiver.requests) == 80
        pairs = Counter((r.message_id, r.headers["webhook-signature"]) for r in receiver.requests)
        assert set(pairs.values()) == {1}, "no delivery sent twice"
        assert await statuses(app) == Counter({"succeeded": 80})


async def test_dispatch_once_sends_what_is_due_and_exits(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, settings: Settings
) -> None:
    async with Receiver() as receiver:
        await add_endpoint(client, keys, receiver.url)
        await lapse(client, keys, clock, "card-1", "card-2", "card-3")
        process = await asyncio.create_subprocess_exec(
            RADAR, "dispatch", "--once", env=worker_env(settings)
        )
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert len({r.message_id for r in receiver.requests}) == 3
        assert await statuses(app) == Counter({"succeeded": 3})
