"""A database outage under load: `radar serve` on a PostgreSQL cluster of the test's own, which
is stopped (immediate shutdown, as a crash would) while requests keep coming, then started.

While it is down every request fails fast with a 503 problem and Retry-After, and /readyz
says so; once it is back the service recovers by itself, its background loops (writer,
sweeper, webhook dispatcher) carry on, and no event that was acknowledged is missing."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager

from app.keys.service import create_key
from app.kit.auth import Scope
from app.kit.db import create_engine, create_sessionmaker, unit_of_work, utcnow
from app.kit.migrations import upgrade
from app.kit.settings import Settings
from app.main import create_app
from tests.conftest import IN_CI, event
from tests.receiver import Received, Receiver, Reply
from tests.test_replicas import GONE, QUIET, Replica, free_port, history, policy, replica
from tests.test_replicas import replica_env as service_env

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _server_binaries() -> Path:
    """Where initdb and pg_ctl live: `pg_config --bindir` (Debian keeps them off the PATH),
    or RADAR_TEST_PG_BIN."""
    configured = os.environ.get("RADAR_TEST_PG_BIN")
    if configured:
        return Path(configured)
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return Path("/nonexistent")  # reported as missing when the cluster is started
    found = subprocess.run([pg_config, "--bindir"], capture_output=True, check=True)
    return Path(found.stdout.decode().strip())


PG_BIN = _server_binaries()
CLIENT_TIMEOUT = 30.0  # what the load's client waits at most
FAIL_FAST = 8.0  # ...and what a 503 may take while the database is down


class Cluster:
    """A PostgreSQL cluster of this test alone (stopping it disturbs nobody), run as the
    `postgres` user in a directory of its own, on 127.0.0.1 only, with trust auth."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _pg(self, *args: str, timeout: float = 60) -> None:
        command = ["runuser", "-u", "postgres", "--", *args]
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{output}")

    def init(self) -> None:
        self._pg(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c max_connections=40"
        )
        log = str(self.directory / "postgres.log")
        self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w",
                 "start")  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    directory = Path(tempfile.mkdtemp(prefix="radar-outage-"))
    private = Cluster(directory, free_port())
    try:
        try:
            if not (PG_BIN / "pg_ctl").exists() or shutil.which("runuser") is None:
                raise RuntimeError(f"no PostgreSQL binaries in {PG_BIN}, or no runuser")
            # (The tests run as root; PostgreSQL refuses to, and needs a directory it owns.)
            shutil.chown(directory, "postgres", "postgres")
            private.init()
            private.start()
        except (RuntimeError, OSError, LookupError, subprocess.SubprocessError) as exc:
            message = f"a private PostgreSQL cluster could not start: {exc}"
            if IN_CI:
                pytest.fail(message + " (CI=true: the outage test must run)")
            pytest.skip(message)
        yield private
    finally:
        if private.running():
            with suppress(RuntimeError, subprocess.SubprocessError):
                private.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


async def migrate_and_create_keys(url: str, *names: str) -> list[str]:
    """Migrate the new cluster's database and make a key with every scope per name (here,
    rather than by `radar` commands that would only add their start-up time)."""
    engine = create_engine(Settings(database_url=url))
    try:
        await upgrade(engine)
        async with unit_of_work(create_sessionmaker(engine)) as session:
            scopes = [Scope.INGEST, Scope.READ, Scope.MANAGE]
            return [(await create_key(session, name, scopes)).key for name in names]
    finally:
        await engine.dispose()


# -- the load ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    kind: str  # "single", "batch" (ingest), "read", "cold" (a key not cached yet)
    started: float  # time.monotonic()
    ended: float
    status: int | None  # None: no answer (a transport error or the client's timeout)
    headers: httpx.Headers | None
    body: bytes
    event_ids: tuple[str, ...] = ()
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def acknowledged(self) -> set[str]:
        """The events this answer says are stored."""
        if self.kind == "single" and self.status in (200, 201):
            return set(self.event_ids)
        if self.kind == "batch" and self.status == 200:
            results = orjson.loads(self.body)["results"]
            return {r["event_id"] for r in results if r["status"] in ("accepted", "duplicate")}
        return set()


@dataclass
class Load:
    """Clients that post events and read customers without a pause, each one request at a
    time, recording every answer."""

    http: httpx.AsyncClient
    headers: dict[str, str]
    answers: list[Answer] = field(default_factory=list)
    _counter: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def _events(self, count: int) -> list[dict[str, Any]]:
        day = utcnow().date() - timedelta(days=1)
        batch = []
        for _ in range(count):
            self._counter += 1
            n = self._counter
            batch.append(
                event(
                    f"load-{n}",
                    customer_id=f"load-c{n % 17}",
                    occurred_at=f"{day - timedelta(days=n % 40)}T10:00:00Z",
                    amount=f"{n % 50 + 1}.25",
                )
            )
        return batch

    async def request(self, kind: str, method: str, url: str, **kwargs: Any) -> None:
        events = kwargs.pop("events", [])
        headers = kwargs.pop("headers", self.headers)
        started = time.monotonic()
        try:
            response = await self.http.request(
                method, url, headers=headers, timeout=CLIENT_TIMEOUT, **kwargs
            )
        except httpx.HTTPError as exc:
            ids = tuple(e["event_id"] for e in events)
            answer = Answer(kind, started, time.monotonic(), None, None, b"", ids, repr(exc))
        else:
            ids = tuple(e["event_id"] for e in events)
            answer = Answer(
                kind, started, time.monotonic(), response.status_code, response.headers,
                response.content, ids,
            )  # fmt: skip
        self.answers.append(answer)

    async def _client(self, kind: str) -> None:
        while not self._stop.is_set():
            if kind == "single":
                events = self._events(1)
                await self.request("single", "POST", "/v1/purchases", json=events[0],
                                    events=events)  # fmt: skip
            elif kind == "batch":
                events = self._events(10)
                await self.request("batch", "POST", "/v1/purchases/batch",
                                    json={"events": events}, events=events)  # fmt: skip
            else:
                await self.request("read", "GET", f"/v1/customers/load-c{self._counter % 17}")
            await asyncio.sleep(0.02)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        tasks = [
            asyncio.create_task(self._client(kind))
            for kind in ("single", "single", "batch", "read")
        ]
        try:
            yield self
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)

    def since(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.started >= moment]

    async def wait_for(self, moment: float, status: int, within: float = 30.0) -> None:
        """Until a request started after `moment` got `status`."""
        async with asyncio.timeout(within):
            while not any(a.status == status for a in self.since(moment)):  # noqa: ASYNC110
                await asyncio.sleep(0.05)


# -- the test ------------------------------------------------------------------------------


async def stored_event_ids(url: str) -> set[str]:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        return {row[0] for row in await connection.fetch("SELECT event_id FROM purchase_events")}
    finally:
        await connection.close()


async def count(url: str, query: str) -> int:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        value: int = await connection.fetchval(query)
        return value
    finally:
        await connection.close()


async def until(url: str, query: str, expected: int, within: float = 30.0) -> None:
    value = None
    try:
        async with asyncio.timeout(within):
            while (value := await count(url, query)) != expected:  # noqa: ASYNC110 - polls
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"{query}: still {value}, expected {expected}, after {within} s")


def held_then_answered(request: Received, number: int) -> Reply:
    """The first messages are held for a while (in flight when the database goes down)."""
    return Reply(delay=3.0) if number < len(GONE) else Reply()


async def test_a_database_outage_under_load(cluster: Cluster, tmp_path: Path) -> None:
    # Verified keys are trusted for two minutes: the load's requests get past authentication
    # while the database is down and go on to the writer and the reads; a key not used
    # before (not cached) shows what authentication itself does then.
    env = service_env(cluster.url, RADAR_AUTH_CACHE_TTL="PT120S")
    warm_key, cold_key = await migrate_and_create_keys(cluster.url, "load", "cold")
    headers = {"Authorization": f"Bearer {warm_key}"}
    cold = {"Authorization": f"Bearer {cold_key}"}
    today = utcnow().date()
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(Receiver(held_then_answered))
        server: Replica = await stack.enter_async_context(replica("radar", env, tmp_path))
        http = server.http
        created = await http.post("/v1/webhooks/endpoints", json={"url": receiver.url},
                                  headers=headers)  # fmt: skip
        assert created.status_code == 201, created.text
        assert (await http.put("/v1/policy", json=policy(200), headers=headers)).status_code == 200
        # Quiet customers: no alert yet (their silence is short of 200 days).
        for customer in QUIET:
            events = history(customer, today - timedelta(days=70))
            answer = await http.post("/v1/purchases/batch", json={"events": events},
                                     headers=headers)  # fmt: skip
            assert answer.status_code == 200, answer.text

        load = Load(http, headers)
        async with load.running():
            await load.wait_for(time.monotonic(), 201)
            # Gone customers: alerts open, and their webhooks are in flight (held by the
            # receiver) when the database goes away.
            for customer in GONE:
                events = history(customer, today - timedelta(days=210))
                answer = await http.post("/v1/purchases/batch", json={"events": events},
                                         headers=headers)  # fmt: skip
                assert answer.status_code == 200, answer.text
            await receiver.wait_for(len(GONE), within=20)

            stopping = time.monotonic()
            await asyncio.to_thread(cluster.stop, "immediate")
            down = time.monotonic()
            readiness = []
            while time.monotonic() - down < 5.0:
                readiness.append(await http.get("/readyz", timeout=CLIENT_TIMEOUT))
                await load.request("cold", "GET", "/v1/alerts", headers=cold)
                await asyncio.sleep(0.5)
            restart = time.monotonic()
            await asyncio.to_thread(cluster.start)
            back = time.monotonic()

            async with asyncio.timeout(30):
                while (await http.get("/readyz", timeout=CLIENT_TIMEOUT)).status_code != 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            await load.wait_for(back, 201)
            await asyncio.sleep(1.0)  # a little more load on the recovered service
        # The sweeper, after the outage: a new policy makes every customer due and it opens
        # the quiet customers' alerts; the dispatcher sends them and records what it sent
        # while the database was down.
        assert (await http.put("/v1/policy", json=policy(14), headers=headers)).status_code == 200
        await until(cluster.url, "SELECT count(*) FROM alerts", len(GONE) + len(QUIET))
        expected = len(GONE) + len(QUIET)
        await until(
            cluster.url,
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'",
            expected,
        )
        await asyncio.sleep(0.5)  # anything sent twice would have arrived by now
        assert server.alive, server.output()
        log = server.output()

    # While the database was down every request failed, fast, with a 503 problem.
    during = [a for a in load.answers if stopping <= a.started < restart]
    slowest = max(during, key=lambda a: a.seconds)
    assert slowest.seconds < FAIL_FAST, f"{slowest.seconds:.1f} s while the database was down"
    for result in during:
        if result.started >= down and result.ended < restart:
            assert result.status == 503, result
    assert Counter(a.kind for a in during).keys() == {"single", "batch", "read", "cold"}
    assert len(during) >= 20, "the load kept coming while the database was down"
    # Before, during and after: nothing but answers, and a failure is always a 503 problem
    # with Retry-After.
    for result in load.answers:
        assert result.status is not None, f"no answer: {result.error}"
        assert result.status in (200, 201, 404, 503), result
        if result.status == 503:
            assert result.headers is not None
            assert result.headers["content-type"] == "application/problem+json"
            assert int(result.headers["retry-after"]) > 0
            assert orjson.loads(result.body)["code"] == "database_unavailable"
    assert readiness, "readyz was asked while the database was down"
    for ready in readiness:
        assert ready.status_code == 503, ready.text
        assert ready.headers["content-type"] == "application/problem+json"
        assert ready.json()["code"] == "database_unavailable"
        assert "retry-after" in ready.headers
    # Recovered by itself: ingest answered 201 after the restart (waited for above), and
    # no acknowledged event is missing.
    acknowledged = set().union(*(result.acknowledged() for result in load.answers))
    stored = await stored_event_ids(cluster.url)
    assert acknowledged - stored == set(), "acknowledged events lost"
    assert len(acknowledged) > 20
    # Every alert's webhook arrived once, those in flight during the outage included.
    received = {r.message_id for r in receiver.requests}
    assert len(received) == expected == len(receiver.requests), log
    types = sorted(orjson.loads(r.body)["data"]["alert"]["customer_id"] for r in receiver.requests)
    assert types == sorted(GONE + QUIET)


async def test_a_database_that_does_not_answer_is_a_503_within_the_connect_timeout() -> None:
    """A server that accepts connections and never answers (a hung host, a black hole): the
    requests that need it get their 503 once RADAR_DB_CONNECT_TIMEOUT has passed."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel completes the handshakes; nobody ever reads
        port = silent.getsockname()[1]
        settings = Settings(
            database_url=f"postgresql://radar@127.0.0.1:{port}/radar",
            migrate_on_start=False,
            db_connect_timeout=timedelta(seconds=1),
            log_json=False,
        )
        app = create_app(settings)
        key = {"Authorization": "Bearer rk_0a1b2c3d_" + "x" * 32}
        async with (
            LifespanManager(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://radar.test"
            ) as http,
        ):
            for method, path in (
                ("GET", "/readyz"),
                ("GET", "/v1/alerts"),
                ("POST", "/v1/purchases"),
            ):
                started = time.monotonic()
                body = event("e-1") if method == "POST" else None
                response = await http.request(
                    method, path, headers=key, json=body, timeout=CLIENT_TIMEOUT
                )
                assert time.monotonic() - started < FAIL_FAST
                assert response.status_code == 503, (path, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json()["code"] == "database_unavailable"
                assert int(response.headers["retry-after"]) > 0
