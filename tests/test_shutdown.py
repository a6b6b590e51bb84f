"""SIGTERM: `radar serve` stops taking connections, answers what is in flight, and exits cleanly.

Requests are held in flight deterministically: each is sent with `Expect: 100-continue`, so
the server's `100 Continue` proves that the request is inside the application, reading its
body; the body is sent only once the server has begun to shut down. A long poll of the alert
change feed in flight answers at once (nothing new) instead of holding the shutdown for the
rest of its wait, and the webhook being delivered is delivered.
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from app.models import PurchaseEvent, WebhookDelivery
from tests.radar_process import RadarServer, create_key, fresh_database, open_engine, server_env
from tests.receiver import Receiver, Reply, always
from tests.test_server import _free_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LONG_POLL_WAIT = 30  # the longest wait the change feed allows


class HeldRequest:
    """A POST whose body waits until `finish()`; `open()` returns once the application reads."""

    def __init__(self, port: int, path: str, key: str, body: dict[str, Any]) -> None:
        self.port = port
        self.path = path
        self.key = key
        self.body = orjson.dumps(body)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def open(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._streams = reader, writer
        head = (
            f"POST {self.path} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {self.key}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            "Expect: 100-continue\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert interim.startswith(b"HTTP/1.1 100 "), interim

    async def finish(self) -> tuple[int, dict[str, str], Any]:
        """Send the body; the final answer (status, headers, parsed JSON)."""
        assert self._streams is not None
        reader, writer = self._streams
        writer.write(self.body)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        content = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 30)
        writer.close()
        try:
            return int(status_line.split()[1]), headers, orjson.loads(content)
        except orjson.JSONDecodeError:
            return int(status_line.split()[1]), headers, content.decode(errors="replace")


def purchase(event_id: str, customer_id: str, day: date, amount: str = "12.50") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": customer_id,
        "store_id": "store-1",
        "occurred_at": f"{day.isoformat()}T00:00:00+00:00",
        "amount": amount,
        "currency": "EUR",
    }


def lapsed_customer(customer_id: str) -> list[dict[str, Any]]:
    """Twelve weekly visits ending two months ago: an inactivity alert opens on ingest."""
    last = datetime.now(UTC).date() - timedelta(days=60)
    days = [last - timedelta(weeks=w) for w in range(12)]
    return [purchase(f"{customer_id}-{day}", customer_id, day, "40") for day in days]


async def column(url: str, attribute: Any) -> list[Any]:
    """Every row's value of one column (`PurchaseEvent.event_id`, say)."""
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            return list(await connection.scalars(select(attribute)))
    finally:
        await engine.dispose()


async def refused(url: str, within: float = 20) -> None:
    """Wait until the server no longer accepts connections (it has begun to shut down)."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                await client.get(f"{url}/healthz")
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                # Refused, or the kept-alive connection closed by the shutting-down server.
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"the server still accepted connections {within} s after SIGTERM")


async def test_sigterm_answers_requests_in_flight_and_exits_cleanly(
    database_url: str, tmp_path: Path
) -> None:
    url = await fresh_database(database_url, tmp_path)
    env = server_env(
        url,
        RADAR_LOG_LEVEL="INFO",
        # Every background loop is busy while the server stops.
        RADAR_SWEEP_INTERVAL="0.2",
        RADAR_HOUSEKEEPING_INTERVAL="0.2",
        RADAR_REFIT_INTERVAL="0.5",
        RADAR_WEBHOOK_POLL_INTERVAL="0.05",
        RADAR_SQLITE_SYNCHRONOUS="NORMAL",
    )
    key = await create_key(url, "ingest", "read", "manage")
    auth = {"Authorization": f"Bearer {key}"}
    server = RadarServer(env, _free_port(), tmp_path / "server.log")
    # The receiver takes 3 s to answer: a webhook is being delivered when SIGTERM comes.
    async with Receiver(always(Reply(delay=3.0))) as receiver:
        try:
            await server.start()
            async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=60) as client:
                response = await client.post("/v1/webhooks/endpoints", json={"url": receiver.url})
                assert response.status_code == 201, response.text
                response = await client.post(
                    "/v1/purchases/batch", json={"events": lapsed_customer("card-lapsed")}
                )
                assert response.status_code == 200, response.text
                assert response.json()["accepted"] == 12, response.text
                await receiver.wait_for(1, within=20)  # the alert's webhook is on its way
                cursor = (await client.get("/v1/alerts/changes")).json()["next_cursor"]
                # A long poll with nothing to report: it would wait the whole 30 s.
                long_poll = asyncio.create_task(
                    client.get("/v1/alerts/changes", params={"after": cursor, "wait": 30})
                )
                today = datetime.now(UTC).date()
                held = [
                    HeldRequest(
                        server.port, "/v1/purchases", key, purchase(f"held-{n}", f"c-{n}", today)
                    )
                    for n in range(3)
                ]
                batch = [purchase(f"held-batch-{n}", f"c-{n % 7}", today) for n in range(200)]
                held.append(HeldRequest(server.port, "/v1/purchases/batch", key, {"events": batch}))
                for request in held:
                    await request.open()
                assert not long_poll.done()

                server.terminate()
                signalled = time.monotonic()
                await refused(server.url)
                await asyncio.sleep(1)  # the requests stay in flight well into the shutdown
                answers = await asyncio.gather(*(request.finish() for request in held))
                polled = await asyncio.wait_for(long_poll, LONG_POLL_WAIT + 10)
                exit_code = await server.wait(within=60)
                stopped_after = time.monotonic() - signalled
        finally:
            await server.stop()

    log = server.output()
    for status, headers, body in answers[:3]:
        assert status == 201, body
        assert body["status"] == "accepted"
        assert headers.get("connection") == "close"  # and then the connection is closed
    status, _, body = answers[3]
    assert status == 200, body
    assert (body["accepted"], body["rejected"]) == (200, 0)
    # The long poll answered normally (nothing new), and did not hold the shutdown for the
    # rest of its wait.
    assert polled.status_code == 200, polled.text
    assert polled.json()["events"] == []
    assert stopped_after < LONG_POLL_WAIT - 10, f"the shutdown took {stopped_after:.1f} s"
    # uvicorn finishes the shutdown, then re-raises the signal it caught.
    assert exit_code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete." in log
    for trouble in ("Traceback", '"level": "ERROR"', '"level": "WARNING"', "CRITICAL"):
        assert trouble not in log, log
    stored = set(await column(url, PurchaseEvent.event_id))
    sent = {f"held-{n}" for n in range(3)} | {f"held-batch-{n}" for n in range(200)}
    assert sent <= stored
    # The webhook in flight at SIGTERM was delivered and recorded as such.
    assert len(receiver.requests) == 1
    assert await column(url, WebhookDelivery.status) == ["succeeded"]
