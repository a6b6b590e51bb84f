"""The real thing: `radar` starts uvicorn on a port, takes a purchase, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.keys.service import create_key
from app.kit.auth import Scope
from app.kit.db import create_engine, create_sessionmaker, unit_of_work
from app.kit.migrations import upgrade
from app.kit.settings import Settings

RADAR = str(Path(sys.executable).with_name("radar"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during start-up"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.02)
    pytest.fail("the server did not become healthy in 20 s")


async def create_keys(database_url: str, keys: dict[str, list[str]]) -> dict[str, str]:
    """The database migrated and the keys (name: scopes) created, in this process: what
    `radar migrate` and `radar keys create` do (tested in test_cli.py and below), without
    a process start each."""
    engine = create_engine(Settings(database_url=database_url, migrate_on_start=False))
    try:
        await upgrade(engine)
        made = {}
        for name, scopes in keys.items():
            async with unit_of_work(create_sessionmaker(engine)) as session:
                created = await create_key(session, name, [Scope(scope) for scope in scopes])
            made[name] = created.key
    finally:
        await engine.dispose()
    return made


@contextmanager
def serving(
    database: Path, keys: dict[str, list[str]], **settings: str
) -> Iterator[tuple[str, dict[str, str]]]:
    """`radar serve` on a SQLite file (RADAR_* settings as keywords), with keys (name:
    scopes): its URL and the keys by name. Stopped by SIGTERM."""
    env = {
        **os.environ,
        "RADAR_DATABASE_URL": f"sqlite:///{database}",
        **{f"RADAR_{name.upper()}": value for name, value in settings.items()},
    }
    made = asyncio.run(create_keys(f"sqlite:///{database}", keys))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [RADAR, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_healthy(url, server)
        yield url, made
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_serve_ingest_and_shut_down_gracefully(tmp_path: Path) -> None:
    env = {**os.environ, "RADAR_DATABASE_URL": f"sqlite:///{tmp_path / 'radar.db'}"}
    created = subprocess.run(
        [RADAR, "keys", "create", "--name", "till-1", "--scope", "ingest"],
        env=env,
        capture_output=True,
        check=True,
    )
    key = created.stdout.decode().strip()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [RADAR, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_healthy(url, server)
        response = httpx.post(
            f"{url}/v1/purchases",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "event_id": "e-1",
                "customer_id": "card-1",
                "store_id": "store-1",
                "occurred_at": "2026-01-15T18:05:00+01:00",
                "amount": "42.50",
                "currency": "EUR",
            },
            timeout=10,
        )
        assert response.status_code == 201, response.text
        assert httpx.get(f"{url}/readyz", timeout=5).json()["status"] == "ok"
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    log = output.decode()
    # uvicorn finishes the shutdown, then re-raises the signal it caught.
    assert server.returncode in (0, -signal.SIGTERM), log
    assert "Application shutdown complete." in log
    assert '"logger": "radar.access"' in log  # JSON access log lines
    assert key not in log
    assert "alembic" not in log.split("Application startup complete.")[1]  # quiet probes
