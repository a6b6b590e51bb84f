"""`radar serve` as a real process for the fault tests: a fresh database of either kind, keys,
start, SIGKILL, SIGTERM, and what the process wrote."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.keys import service as keys
from app.kit.auth import Scope
from app.kit.db import Base, create_engine, create_sessionmaker, unit_of_work
from app.kit.migrations import upgrade
from app.kit.settings import Settings

RADAR = str(Path(sys.executable).with_name("radar"))


async def fresh_database(database_url: str, directory: Path) -> str:
    """An empty database: a new SQLite file (`create_key` migrates it), or the session's
    migrated PostgreSQL database with every table emptied."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{directory / 'radar.db'}"
    await _truncate(database_url)
    return database_url


async def _truncate(url: str) -> None:
    engine = open_engine(url)
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
    finally:
        await engine.dispose()


def open_engine(url: str) -> AsyncEngine:
    return create_engine(Settings(database_url=url, migrate_on_start=False))


def server_env(database_url: str, **overrides: str) -> dict[str, str]:
    return {
        **os.environ,
        "RADAR_DATABASE_URL": database_url,
        "RADAR_RATE_LIMIT_INGEST": "off",
        "RADAR_RATE_LIMIT_READ": "off",
        "RADAR_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
        **overrides,
    }


async def create_key(url: str, *scopes: str) -> str:
    """A new API key (migrating a new SQLite file first), made here: a `radar keys create`
    process would only add its start-up time."""
    engine = open_engine(url)
    try:
        await upgrade(engine)
        async with unit_of_work(create_sessionmaker(engine)) as session:
            created = await keys.create_key(session, "fault-test", [Scope(s) for s in scopes])
    finally:
        await engine.dispose()
    return created.key


class RadarServer:
    """`radar serve` on a fixed port; each start appends its output to one log file."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the server and wait until it is healthy."""
        with self.log.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                RADAR,
                "serve",
                "--port",
                str(self.port),
                env=self.env,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )
        await self._wait_until_healthy()

    async def _wait_until_healthy(self, within: float = 60) -> None:
        assert self.process is not None
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise AssertionError(f"the server exited during start-up:\n{self.output()}")
                try:
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"the server was not healthy within {within} s:\n{self.output()}")

    async def kill(self) -> None:
        """SIGKILL: no shutdown at all, as in a crash or an OOM kill."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    async def wait(self, within: float) -> int:
        """The exit code, once the process has ended (AssertionError if it takes longer)."""
        assert self.process is not None
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            raise AssertionError(f"the server did not exit within {within} s") from None

    async def stop(self) -> None:
        """Whatever state it is in: end it (for `finally` blocks)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
