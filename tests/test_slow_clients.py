"""A slow client cannot hold a connection for ever: `radar serve` as a real process, and
raw sockets that send nothing, dribble their headers, or stop half-way through a body."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.radar_process import RadarServer, create_key, server_env
from tests.test_server import _free_port

pytestmark = pytest.mark.anyio

TIMEOUT = 1.0  # RADAR_HEADER_TIMEOUT and RADAR_BODY_TIMEOUT, in seconds


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RadarServer]:
    url = f"sqlite:///{tmp_path / 'radar.db'}"
    env = server_env(
        url,
        RADAR_HEADER_TIMEOUT=str(TIMEOUT),
        RADAR_BODY_TIMEOUT=str(TIMEOUT),
        RADAR_SWEEP_INTERVAL="0",
        RADAR_REFIT_INTERVAL="0",
    )
    running = RadarServer(env, _free_port(), tmp_path / "server.log")
    running.key = await create_key(url, "ingest")  # type: ignore[attr-defined]
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def answer_and_close(reader: asyncio.StreamReader, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        data = await reader.read()
    return data, time.monotonic() - started


async def dribble(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    for byte in data:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(every)


async def test_a_connection_that_sends_nothing_is_closed(server: RadarServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    data, took = await answer_and_close(reader, within=10)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"request_timeout"' in data
    assert TIMEOUT * 0.8 < took < TIMEOUT + 2
    writer.close()


async def test_headers_sent_a_byte_at_a_time_are_cut_off(server: RadarServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    headers = b"GET /healthz HTTP/1.1\r\nhost: radar\r\nx-padding: " + b"a" * 200 + b"\r\n\r\n"
    sending = asyncio.create_task(dribble(writer, headers, every=0.05))  # ~12 s in all
    data, took = await answer_and_close(reader, within=10)
    sending.cancel()
    assert data.startswith(b"HTTP/1.1 408 ")
    assert took < TIMEOUT + 2
    writer.close()


async def test_a_body_that_stops_half_way_is_cut_off(server: RadarServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /v1/purchases HTTP/1.1\r\nhost: radar\r\ncontent-type: application/json\r\n"
        b'authorization: Bearer %s\r\ncontent-length: 500\r\n\r\n{"event_id": '
        % server.key.encode()  # type: ignore[attr-defined]
    )
    await writer.drain()
    data, took = await answer_and_close(reader, within=10)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert took < TIMEOUT + 2
    writer.close()
    assert "Traceback" not in server.output()


async def test_an_idle_keep_alive_connection_and_a_prompt_request_are_served(
    server: RadarServer,
) -> None:
    """The header deadline runs from a request's first byte, not across keep-alive idling."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    request = b"GET /healthz HTTP/1.1\r\nhost: radar\r\n\r\n"
    for _ in range(2):
        writer.write(request)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 200 "), status
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        await asyncio.sleep(TIMEOUT * 1.5)  # idle longer than the header deadline
    writer.close()
