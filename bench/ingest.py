"""Ingest throughput of Defection Radar, measured against a bare-FastAPI ceiling.

What is measured
    Requests/s, events/s and client-side latency (p50, p99) of six scenarios:

    ceiling         bare FastAPI (bench/_ceiling.py) validating one `PurchaseEventIn`, 201
    sqlite          POST /v1/purchases, one event per request, SQLite synchronous=FULL
    sqlite-normal   the same with RADAR_SQLITE_SYNCHRONOUS=NORMAL
    postgres        POST /v1/purchases, one event per request, PostgreSQL
    sqlite-batch    POST /v1/purchases/batch, 500 new events per request, SQLite (FULL)
    postgres-batch  POST /v1/purchases/batch, 500 new events per request, PostgreSQL

    sqlite-loyal    POST /v1/purchases, one event per request, for 2,000 customers with 12
    postgres-loyal  weeks of history each (so every event is folded, scored and its rules
                    applied); counted until the scorer's queue is empty again, with the
                    scorer's lag p99 (radar_scorer_lag_seconds)
    postgres-loyal-split  the same with the scorer in its own process (`radar score`;
                    the service runs with RADAR_SCORER=false), on a database of its own

    Targets: single-event req/s >= 0.5x the ceiling's; the loyal stream >= 0.3x; batch
    >= 50,000 events/s on SQLite and >= 30,000 events/s on PostgreSQL. Each is printed as
    PASS or MISS.

How
    Every server is a subprocess on 127.0.0.1, single process (`radar serve`, or uvicorn
    for the ceiling: both uvloop + httptools, no access log), polled on GET /healthz until
    ready and stopped at the end whatever happens. This process generates the load with a
    fixed number of concurrent keep-alive requests (16 for single events, 4 for batches).
    Bodies are built before the clock starts; every event_id is new, so every event is
    really stored. Each scenario runs a warm-up, then a timed window: only requests
    completing inside the window count. Repetitions interleave the scenarios and the report
    shows medians (and the min-max of req/s). A single-event answer must be 201, a batch
    answer 200 with accepted == 500; anything else, or a transport error, is an error.

    The default client (`--client raw`) writes pre-built HTTP/1.1 requests on one
    connection per concurrent request and reads just status, Content-Length and body:
    ~0.06 ms of client CPU per request. `--client httpx` uses one httpx.AsyncClient, which
    costs ~1.2 ms of client CPU per request at 16 concurrent requests, so on a 2-core
    machine it saturates its core at ~850 req/s and measures itself, not the ceiling. Server,
    client and other CPU (PostgreSQL, kernel) are sampled from /proc over each window as a
    % of one core, to show which side was the bottleneck.

    PostgreSQL: postgresql://postgres@127.0.0.1:5432/radar_bench (created if missing) unless
    RADAR_BENCH_POSTGRES_URL or --postgres-url says otherwise; it is wiped first (DROP SCHEMA
    public CASCADE; CREATE SCHEMA public). It is not the test suite's database, so the two
    can run at once (but the numbers would suffer).

Run (about 3 minutes; --quick about 30 s)
    .venv/bin/python bench/ingest.py
    .venv/bin/python bench/ingest.py --quick --scenarios ceiling,sqlite --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import uvloop
from _cpu import machine_cpu_seconds, proc_cpu_seconds
from _postgres import reset_postgres
from _process import BIN, HOST, ROOT, free_port, percentile, radar, stop_group

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/radar_bench"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 60.0
BATCH_SIZE = 500


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    server: str
    path: str
    concurrency: int
    max_requests: int
    batch_size: int = 0  # 0: one event per request, the body is the event itself
    min_ceiling_ratio: float | None = None
    min_events_per_s: float | None = None
    # Events for LOYAL_CUSTOMERS customers with a history (seeded once per server), counted
    # until the scorer's queue is empty again: the scored throughput.
    loyal: bool = False

    @property
    def events_per_request(self) -> int:
        return self.batch_size or 1


SINGLE = "/v1/purchases"
BATCH = "/v1/purchases/batch"
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("ceiling", "ceiling: bare FastAPI + validation", "ceiling", "/ingest", 16, 120_000),
    Scenario(
        "sqlite", "single, SQLite sync=FULL", "sqlite", SINGLE, 16, 80_000, min_ceiling_ratio=0.5
    ),
    Scenario(
        "sqlite-normal",
        "single, SQLite sync=NORMAL",
        "sqlite-normal",
        SINGLE,
        16,
        80_000,
        min_ceiling_ratio=0.5,
    ),
    Scenario(
        "postgres", "single, PostgreSQL", "postgres", SINGLE, 16, 80_000, min_ceiling_ratio=0.5
    ),
    Scenario(
        "sqlite-loyal",
        "single, loyal, scored, SQLite FULL",
        "sqlite",
        SINGLE,
        16,
        80_000,
        min_ceiling_ratio=0.3,
        loyal=True,
    ),
    Scenario(
        "postgres-loyal",
        "single, loyal, scored, PostgreSQL",
        "postgres",
        SINGLE,
        16,
        80_000,
        min_ceiling_ratio=0.3,
        loyal=True,
    ),
    Scenario(
        "postgres-loyal-split",
        "single, loyal, scored, PostgreSQL, scorer process",
        "postgres-split",
        SINGLE,
        16,
        80_000,
        min_ceiling_ratio=0.3,
        loyal=True,
    ),
    Scenario(
        "sqlite-batch",
        "batch 500, SQLite sync=FULL",
        "sqlite",
        BATCH,
        4,
        1_400,
        batch_size=BATCH_SIZE,
        min_events_per_s=50_000,
    ),
    Scenario(
        "postgres-batch",
        "batch 500, PostgreSQL",
        "postgres",
        BATCH,
        4,
        1_000,
        batch_size=BATCH_SIZE,
        min_events_per_s=30_000,
    ),
)
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)


@dataclass(frozen=True)
class Plan:
    repetitions: int
    warmup_s: float
    duration_s: float
    client: str  # "raw" or "httpx"


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    api_key: str | None = None
    database_url: str | None = None
    seeded: bool = False  # the loyal customers' history is stored
    metrics_url: str | None = None  # where the scorer's metrics are (default: base_url)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass(frozen=True)
class CpuSnapshot:
    wall: float
    server: float
    client: float
    machine: float


@dataclass(frozen=True)
class CpuUsage:
    """Percent of one core over the timed window."""

    server: float
    client: float
    other: float


@dataclass(frozen=True)
class RunResult:
    scenario: str
    repetition: int
    window_s: float
    ok_requests: int
    errors: int
    error_kinds: dict[str, int]
    events_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    cpu: CpuUsage
    count_bound: bool
    drain_s: float = 0.0  # after the window, until the scorer's queue was empty
    lag_p99_s: float | None = None  # commit -> scored, from radar_scorer_lag_seconds
    scored_per_s: float | None = None  # events stored in the window / (window + drain)


@dataclass
class Summary:
    scenario: Scenario
    runs: list[RunResult] = field(default_factory=list)
    skipped: str | None = None

    def median(self, attribute: str) -> float:
        return float(statistics.median(getattr(run, attribute) for run in self.runs))

    def median_cpu(self, attribute: str) -> float:
        return float(statistics.median(getattr(run.cpu, attribute) for run in self.runs))


# --- request bodies ---------------------------------------------------------------------

EVENT_TEMPLATE = (
    '{"event_id":"%s","customer_id":"c%d","store_id":"s%d","occurred_at":"%s",'
    '"amount":"12.50","currency":"EUR","kind":"purchase",'
    '"items":[{"sku":"A1","category":"bakery","quantity":1,"amount":"12.50"}]}'
)


def _event_texts(tag: str, count: int) -> Iterator[str]:
    occurred_at = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for i in range(count):
        yield EVENT_TEMPLATE % (f"{tag}-{i:08d}", i % 10_000, i % 50, occurred_at)


LOYAL_CUSTOMERS = 2000
LOYAL_WEEKS = 12


def _loyal_texts(tag: str, count: int) -> Iterator[str]:
    """New purchases of the loyal customers in the last week (each a fresh event_id)."""
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    for i in range(count):
        day = today - timedelta(days=1 + (i // LOYAL_CUSTOMERS) % 6)
        yield EVENT_TEMPLATE % (
            f"{tag}-{i:08d}",
            1_000_000 + i % LOYAL_CUSTOMERS,
            i % 50,
            day.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )


def loyal_history() -> list[bytes]:
    """Batches of LOYAL_WEEKS weekly visits of each loyal customer, ending a week ago."""
    start = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    texts = [
        EVENT_TEMPLATE
        % (
            f"history-{customer}-{week}",
            1_000_000 + customer,
            customer % 50,
            (start - timedelta(weeks=LOYAL_WEEKS + 1 - week)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        for customer in range(LOYAL_CUSTOMERS)
        for week in range(LOYAL_WEEKS)
    ]
    return [
        ('{"events":[' + ",".join(texts[i : i + BATCH_SIZE]) + "]}").encode()
        for i in range(0, len(texts), BATCH_SIZE)
    ]


def build_bodies(scenario: Scenario, tag: str) -> list[bytes]:
    """Every body this run may send, each with new event_ids."""
    count = scenario.max_requests * scenario.events_per_request
    events = _loyal_texts(tag, count) if scenario.loyal else _event_texts(tag, count)
    if not scenario.batch_size:
        return [text.encode() for text in events]
    return [
        ('{"events":[' + ",".join(next(events) for _ in range(scenario.batch_size)) + "]}").encode()
        for _ in range(scenario.max_requests)
    ]


# --- servers ----------------------------------------------------------------------------


def service_env(database_url: str, synchronous: str = "FULL") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADAR_")}
    env.update(
        RADAR_DATABASE_URL=database_url,
        RADAR_LOG_LEVEL="WARNING",
        RADAR_SQLITE_SYNCHRONOUS=synchronous,
        # One key sends everything: the per-key limits would measure themselves.
        RADAR_RATE_LIMIT_INGEST="off",
        RADAR_RATE_LIMIT_READ="off",
    )
    return env


def create_api_key(env: dict[str, str]) -> str:
    radar(env, "migrate")
    return radar(env, "keys", "create", "--name", "bench", "--scope", "ingest").splitlines()[0]


def spawn(name: str, command: list[str], env: dict[str, str], workdir: Path, port: int) -> Server:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(name, process, port, log_path)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=server.base_url, trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                break
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    log_tail = server.log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{server.name} did not become ready:\n{log_tail}")


def stop(server: Server) -> None:
    stop_group(server.process, STOP_TIMEOUT_S)


def start_ceiling(workdir: Path, stack: ExitStack) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bench._ceiling:app", "--app-dir", str(ROOT)]
    command += ["--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADAR_")}
    server = spawn("ceiling", command, env, workdir, port)
    stack.callback(stop, server)
    wait_ready(server)
    return server


def start_service(
    name: str,
    database_url: str,
    synchronous: str,
    workdir: Path,
    stack: ExitStack,
    scorer_process: bool = False,
) -> Server:
    env = service_env(database_url, synchronous)
    api_key = create_api_key(env)
    port = free_port()
    metrics_url = None
    if scorer_process:  # ingest in `radar serve`, scoring in a `radar score` beside it
        env["RADAR_SCORER"] = "false"
        metrics_port = free_port()
        command = [str(BIN / "radar"), "score", "--metrics-port", str(metrics_port)]
        scorer = spawn(f"{name}-scorer", command, env, workdir, metrics_port)
        stack.callback(stop, scorer)
        metrics_url = f"http://{HOST}:{metrics_port}"
    command = [str(BIN / "radar"), "serve", "--host", HOST, "--port", str(port)]
    server = spawn(name, command, env, workdir, port)
    server.api_key = api_key
    server.database_url = database_url
    server.metrics_url = metrics_url
    stack.callback(stop, server)
    wait_ready(server)
    return server


def start_servers(
    names: set[str], postgres_url: str, workdir: Path, stack: ExitStack, runner: asyncio.Runner
) -> tuple[dict[str, Server], dict[str, str]]:
    """Start the servers the chosen scenarios need; a server that cannot start is skipped."""
    sqlite_url = f"sqlite:///{workdir}/%s.db"
    starters: dict[str, Callable[[], Server]] = {
        "ceiling": lambda: start_ceiling(workdir, stack),
        "sqlite": lambda: start_service("sqlite", sqlite_url % "full", "FULL", workdir, stack),
        "sqlite-normal": lambda: start_service(
            "sqlite-normal", sqlite_url % "normal", "NORMAL", workdir, stack
        ),
        "postgres": lambda: _start_postgres(postgres_url, workdir, stack, runner),
        "postgres-split": lambda: _start_postgres(
            _sibling(postgres_url, "_split"), workdir, stack, runner, scorer_process=True
        ),
    }
    servers: dict[str, Server] = {}
    skipped: dict[str, str] = {}
    for name in sorted(names, key=list(starters).index):
        try:
            servers[name] = starters[name]()
        except (OSError, RuntimeError, ValueError, asyncpg.PostgresError) as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(f"  ! {name} skipped: {skipped[name]}", flush=True)
    return servers, skipped


def _start_postgres(
    url: str,
    workdir: Path,
    stack: ExitStack,
    runner: asyncio.Runner,
    scorer_process: bool = False,
) -> Server:
    runner.run(reset_postgres(url))
    name = "postgres-split" if scorer_process else "postgres"
    return start_service(name, url, "FULL", workdir, stack, scorer_process)


def _sibling(url: str, suffix: str) -> str:
    """Another database on the same server (each service gets a fresh one)."""
    base, _, name = url.rpartition("/")
    return f"{base}/{name.split('?')[0]}{suffix}"


# --- load -------------------------------------------------------------------------------

Answer = tuple[int, bytes]  # status code, response body
Send = Callable[[bytes], Awaitable[Answer]]
Check = Callable[[int, bytes], str]  # "" when the answer is right, else what was wrong
Sample = tuple[float, float, str]  # start, end, error
TRANSPORT_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def single_check(status: int, content: bytes) -> str:
    return "" if status == 201 else _refusal(status, content)


def _refusal(status: int, content: bytes) -> str:
    """`HTTP 503 scorer_backlog`: the status and the problem's code, when there is one."""
    try:
        code = orjson.loads(content).get("code")
    except (orjson.JSONDecodeError, AttributeError):
        code = None
    return f"HTTP {status} {code}" if code else f"HTTP {status}"


def batch_check(batch_size: int) -> Check:
    def check(status: int, content: bytes) -> str:
        if status != 200:
            return _refusal(status, content)
        accepted: int = orjson.loads(content).get("accepted", -1)
        return "" if accepted == batch_size else f"accepted {accepted} of {batch_size}"

    return check


class RawConnection:
    """One keep-alive HTTP/1.1 connection that speaks just enough HTTP for this benchmark.

    httpx spends 0.6-1.3 ms of client CPU per request on this machine (h11, anyio, its
    connection pool), which caps it far below what the ceiling app serves; this ~0.06 ms.
    """

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        lines = [f"POST {path} HTTP/1.1", f"host: {HOST}:{port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode()
        self._port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes) -> Answer:
        if self._streams is None:
            self._streams = await asyncio.open_connection(HOST, self._port)
        reader, writer = self._streams
        try:
            writer.writelines((self._head, b"%d\r\n\r\n" % len(body), body))
            head = await reader.readuntil(b"\r\n\r\n")
            content = await reader.readexactly(_content_length(head))
        except BaseException:
            self.close()
            raise
        if b"\r\nconnection: close" in head.lower():
            self.close()
        return int(head[9:12]), content

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def _content_length(head: bytes) -> int:
    match = _CONTENT_LENGTH.search(head)
    if match is None:
        raise ValueError("response without Content-Length")
    return int(match[1])


def request_headers(server: Server) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if server.api_key:
        headers["authorization"] = f"Bearer {server.api_key}"
    return headers


@asynccontextmanager
async def raw_senders(server: Server, scenario: Scenario) -> AsyncIterator[list[Send]]:
    """One connection per concurrent request."""
    headers = request_headers(server)
    connections = [
        RawConnection(server.port, scenario.path, headers) for _ in range(scenario.concurrency)
    ]
    try:
        yield [connection.post for connection in connections]
    finally:
        for connection in connections:
            connection.close()


@asynccontextmanager
async def httpx_senders(server: Server, scenario: Scenario) -> AsyncIterator[list[Send]]:
    """One shared httpx.AsyncClient whose keep-alive pool holds a connection per request."""
    limits = httpx.Limits(
        max_connections=scenario.concurrency, max_keepalive_connections=scenario.concurrency
    )
    async with httpx.AsyncClient(
        base_url=server.base_url,
        headers=request_headers(server),
        limits=limits,
        timeout=REQUEST_TIMEOUT_S,
        trust_env=False,  # never a proxy: straight to 127.0.0.1
    ) as client:

        async def send(body: bytes) -> Answer:
            response = await client.post(scenario.path, content=body)
            return response.status_code, response.content

        yield [send] * scenario.concurrency


SENDERS = {"raw": raw_senders, "httpx": httpx_senders}


async def worker(
    send: Send, bodies: Iterator[bytes], check: Check, stop_at: float, samples: list[Sample]
) -> None:
    """Send bodies one after another until the window closes or the bodies run out."""
    for body in bodies:  # shared with the other workers: each body is sent once
        start = time.perf_counter()
        if start >= stop_at:
            return
        try:
            error = check(*await send(body))
        except (*TRANSPORT_ERRORS, httpx.HTTPError) as exc:
            error = type(exc).__name__
        samples.append((start, time.perf_counter(), error))


def cpu_snapshot(server_pid: int) -> CpuSnapshot:
    return CpuSnapshot(
        time.perf_counter(),
        proc_cpu_seconds(server_pid),
        time.process_time(),
        machine_cpu_seconds(),
    )


def cpu_usage(first: CpuSnapshot, last: CpuSnapshot) -> CpuUsage:
    wall = max(last.wall - first.wall, 1e-9)
    server = (last.server - first.server) / wall * 100
    client = (last.client - first.client) / wall * 100
    machine = (last.machine - first.machine) / wall * 100
    return CpuUsage(
        round(server, 1), round(client, 1), round(max(machine - server - client, 0.0), 1)
    )


async def watch_cpu(
    server_pid: int, start: float, stop_at: float, load: asyncio.Future[Any]
) -> CpuUsage:
    """CPU use from the start of the window until it closes or the load ends earlier."""
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    first = cpu_snapshot(server_pid)
    await asyncio.wait([load], timeout=max(0.0, stop_at - time.perf_counter()))
    return cpu_usage(first, cpu_snapshot(server_pid))


async def run_load(
    server: Server, scenario: Scenario, bodies: list[bytes], plan: Plan, repetition: int
) -> RunResult:
    check = batch_check(scenario.batch_size) if scenario.batch_size else single_check
    samples: list[Sample] = []
    before = await lag_buckets(server) if server.database_url else []
    source = iter(bodies)
    async with (
        asyncio.timeout(plan.warmup_s + plan.duration_s + REQUEST_TIMEOUT_S),
        SENDERS[plan.client](server, scenario) as senders,
    ):
        window_start = time.perf_counter() + plan.warmup_s
        stop_at = window_start + plan.duration_s
        load = asyncio.gather(*(worker(s, source, check, stop_at, samples) for s in senders))
        try:
            cpu = await watch_cpu(server.process.pid, window_start, stop_at, load)
            await load
        except BaseException:
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)
            raise
    result = summarise_run(scenario, repetition, samples, window_start, stop_at, cpu)
    if server.database_url is None:
        return result  # the ceiling stores nothing
    drained = time.perf_counter()
    await wait_scored(server, 0.01)
    drain_s = max(0.0, time.perf_counter() - max(drained, stop_at))
    lag = lag_p99(before, await lag_buckets(server))
    scored = result.ok_requests * scenario.events_per_request
    scored_per_s = round(scored / (result.window_s + drain_s), 1)
    result = dataclasses.replace(
        result, drain_s=round(drain_s, 3), lag_p99_s=lag, scored_per_s=scored_per_s
    )
    if not scenario.loyal:
        return result
    return dataclasses.replace(
        result,
        events_per_s=scored_per_s,
        requests_per_s=round(result.ok_requests / (result.window_s + drain_s), 1),
    )


async def wait_scored(server: Server, poll_s: float) -> None:
    while True:
        if await queued(server) == 0:
            return
        await asyncio.sleep(poll_s)


async def queued(server: Server) -> int:
    """Events the scorer has not folded yet, counted in the database itself."""
    url = server.database_url or ""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split("///", 1)[1]) as connection:
            return int(connection.execute("SELECT count(*) FROM scorer_queue").fetchone()[0])
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return int(await connection.fetchval("SELECT count(*) FROM scorer_queue"))
    finally:
        await connection.close()


async def lag_buckets(server: Server) -> list[tuple[float, float]]:
    """The scorer's lag histogram (cumulative counts per upper bound), now."""
    base_url = server.metrics_url or server.base_url
    async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
        text = (await client.get("/metrics")).text
    return [
        (float(bound), float(count))
        for bound, count in re.findall(
            r'radar_scorer_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)', text
        )
    ]


def lag_p99(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float | None:
    """The 99th percentile of the lag of the events scored between the two readings, as
    the upper bound of its histogram bucket."""
    counts = dict(before)
    window = [(bound, count - counts.get(bound, 0.0)) for bound, count in after]
    if not window or window[-1][1] <= 0:
        return None
    total = window[-1][1]
    return next(bound for bound, count in window if count >= 0.99 * total)


async def seed_loyal(server: Server) -> None:
    """Store the loyal customers' history once, and wait until it is scored."""
    if server.seeded:
        return
    headers = {**request_headers(server), "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=60) as client:
        for body in loyal_history():
            response = await client.post(BATCH, content=body, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"seeding failed: {response.status_code} {response.text}")
    await wait_scored(server, 0.05)
    server.seeded = True


def summarise_run(
    scenario: Scenario,
    repetition: int,
    samples: list[Sample],
    window_start: float,
    stop_at: float,
    cpu: CpuUsage,
) -> RunResult:
    in_window = [s for s in samples if window_start <= s[1] <= stop_at]
    last_end = max((s[1] for s in samples), default=stop_at)
    window = max(min(stop_at, last_end) - window_start, 1e-9)
    ok = [end - start for start, end, error in in_window if not error]
    return RunResult(
        scenario=scenario.name,
        repetition=repetition,
        window_s=round(window, 3),
        ok_requests=len(ok),
        errors=sum(1 for s in samples if s[2]),
        error_kinds=dict(Counter(s[2] for s in samples if s[2])),
        events_per_s=round(len(ok) * scenario.events_per_request / window, 1),
        requests_per_s=round(len(ok) / window, 1),
        p50_ms=round(percentile(ok, 50) * 1000, 2),
        p99_ms=round(percentile(ok, 99) * 1000, 2),
        cpu=cpu,
        count_bound=last_end < stop_at,
    )


# --- the benchmark ----------------------------------------------------------------------


def run_benchmark(
    scenarios: Sequence[Scenario], plan: Plan, postgres_url: str, workdir: Path
) -> list[Summary]:
    summaries = [Summary(s) for s in scenarios]
    with ExitStack() as stack, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print("starting servers ...", flush=True)
        servers, skipped = start_servers(
            {s.server for s in scenarios}, postgres_url, workdir, stack, runner
        )
        for summary in summaries:
            summary.skipped = skipped.get(summary.scenario.server)
        for repetition in range(1, plan.repetitions + 1):
            for summary in summaries:
                if summary.skipped is None:
                    server = servers[summary.scenario.server]
                    summary.runs.append(
                        run_once(runner, server, summary.scenario, plan, repetition)
                    )
    return summaries


def run_once(
    runner: asyncio.Runner, server: Server, scenario: Scenario, plan: Plan, repetition: int
) -> RunResult:
    tag = f"b{uuid.uuid4().hex[:10]}"
    if scenario.loyal:
        runner.run(seed_loyal(server))
    bodies = build_bodies(scenario, tag)
    result = runner.run(run_load(server, scenario, bodies, plan, repetition))
    del bodies
    print(f"  run {repetition} {format_run(result)}", flush=True)
    return result


def format_run(run: RunResult) -> str:
    bound = " (ran out of prepared bodies)" if run.count_bound else ""
    if run.error_kinds:
        bound += f" {run.error_kinds}"
    return (
        f"{run.scenario:<15} {run.events_per_s:>10,.0f} ev/s {run.requests_per_s:>8,.0f} req/s "
        f"p50 {run.p50_ms:>7.2f} ms p99 {run.p99_ms:>7.2f} ms errors {run.errors} "
        f"cpu srv/cli/other {run.cpu.server:.0f}/{run.cpu.client:.0f}/{run.cpu.other:.0f}%{bound}"
        + (
            f" scored {run.scored_per_s:,.0f} ev/s (drain {run.drain_s:.2f} s)"
            f" lag p99 <= {run.lag_p99_s} s"
            if run.scored_per_s
            else ""
        )
    )


# --- report -----------------------------------------------------------------------------


def verdict(summary: Summary, ceiling_rps: float | None) -> tuple[str, str]:
    """(measured against target, PASS/MISS) for a summary with runs."""
    scenario = summary.scenario
    if scenario.min_events_per_s is not None:
        measured = summary.median("events_per_s")
        text = f"{measured:,.0f} vs >= {scenario.min_events_per_s:,.0f} ev/s"
        return text, "PASS" if measured >= scenario.min_events_per_s else "MISS"
    if scenario.min_ceiling_ratio is not None:
        if not ceiling_rps:
            return "no ceiling run", "n/a"
        ratio = summary.median("requests_per_s") / ceiling_rps
        text = f"{ratio:.2f}x vs >= {scenario.min_ceiling_ratio:.2f}x ceiling"
        return text, "PASS" if ratio >= scenario.min_ceiling_ratio else "MISS"
    return "-", ""


def ceiling_rps(summaries: Sequence[Summary]) -> float | None:
    for summary in summaries:
        if summary.scenario.name == "ceiling" and summary.runs:
            return summary.median("requests_per_s")
    return None


def report_rows(summaries: Sequence[Summary]) -> list[list[str]]:
    ceiling = ceiling_rps(summaries)
    return [report_row(summary, ceiling) for summary in summaries]


def report_row(summary: Summary, ceiling: float | None) -> list[str]:
    title = summary.scenario.title
    if not summary.runs:
        return [title, "skipped", "", "", "", "", "", "", "", summary.skipped or ""]
    rates = [run.requests_per_s for run in summary.runs]
    target, result = verdict(summary, ceiling)
    cpu = (summary.median_cpu(part) for part in ("server", "client", "other"))
    scored = [run.scored_per_s for run in summary.runs if run.scored_per_s is not None]
    lags = [run.lag_p99_s for run in summary.runs if run.lag_p99_s is not None]
    return [
        title,
        f"{summary.median('events_per_s'):,.0f}",
        f"{summary.median('requests_per_s'):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})",
        f"{summary.median('p50_ms'):.2f}",
        f"{summary.median('p99_ms'):.2f}",
        f"{statistics.median(scored):,.0f}" if scored else "-",
        f"<= {statistics.median(lags):g}" if lags else "-",
        str(sum(run.errors for run in summary.runs)),
        "/".join(f"{part:.0f}" for part in cpu),
        f"{target} {result}".strip(),
    ]


HEADERS = [
    "scenario",
    "events/s",
    "req/s (min-max)",
    "p50 ms",
    "p99 ms",
    "scored ev/s",
    "lag p99 s",
    "errors",
    "cpu% srv/cli/oth",
    "target",
]


def print_report(summaries: Sequence[Summary], plan: Plan, elapsed: float) -> None:
    rows = report_rows(summaries)
    widths = [max(len(row[i]) for row in [HEADERS, *rows]) for i in range(len(HEADERS))]
    print()
    print(
        f"Ingest benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; medians of {plan.repetitions} run(s), "
        f"{plan.warmup_s:g} s warm-up + {plan.duration_s:g} s window each, {plan.client} client"
    )
    for row in [HEADERS, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"total runtime {elapsed:.0f} s", flush=True)


def dump_json(path: Path, summaries: Sequence[Summary], plan: Plan, elapsed: float) -> None:
    ceiling = ceiling_rps(summaries)
    document = {
        "date": datetime.now(UTC).isoformat(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "plan": asdict(plan),
        "total_runtime_s": round(elapsed, 1),
        "scenarios": [
            {
                **asdict(summary.scenario),
                "skipped": summary.skipped,
                "verdict": verdict(summary, ceiling) if summary.runs else None,
                "runs": [asdict(run) for run in summary.runs],
            }
            for summary in summaries
        ],
    }
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


# --- command line -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, 0.5 s + 3 s each")
    parser.add_argument("--repetitions", type=int, default=3, help="default: 3")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds, default: 1.5")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds, default: 8")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIO_NAMES),
        help=f"comma-separated, from: {','.join(SCENARIO_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--client",
        choices=sorted(SENDERS),
        default="raw",
        help="load generator: raw keep-alive HTTP/1.1 (default) or httpx.AsyncClient",
    )
    parser.add_argument("--json", type=Path, default=None, help="write raw results here")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("RADAR_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="wiped before the run! default: $RADAR_BENCH_POSTGRES_URL or " + DEFAULT_POSTGRES_URL,
    )
    return parser.parse_args(argv)


def chosen_scenarios(names: str) -> list[Scenario]:
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    unknown = wanted - set(SCENARIO_NAMES)
    if unknown or not wanted:
        raise SystemExit(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIO_NAMES}")
    return [s for s in SCENARIOS if s.name in wanted]


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so the servers are stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    plan = (
        Plan(1, 0.5, 3.0, args.client)
        if args.quick
        else Plan(args.repetitions, args.warmup, args.duration, args.client)
    )
    scenarios = chosen_scenarios(args.scenarios)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="radar-bench-"))
    try:
        summaries = run_benchmark(scenarios, plan, args.postgres_url, workdir)
    except KeyboardInterrupt:
        print("interrupted: servers stopped, nothing reported", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print_report(summaries, plan, elapsed)
    if args.json is not None:
        dump_json(args.json, summaries, plan, elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
