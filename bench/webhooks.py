"""Webhook dispatcher of Defection Radar: latency from ingest to receiver, and throughput.

What is measured
    latency     For each of N customers in turn (default 200 per run), one
                POST /v1/purchases/batch with the customer's 12 weekly visits (2026-01-05
                on, long stopped); the scorer folds it moments later, opens an inactivity
                alert and queues its `alert.opened` webhook in that transaction (the
                scorer's lag is part of what is measured). Latency is the time from
                just before that POST to the moment the receiver has the webhook of that
                customer: p50, p99 and max in ms. The POST's own latency is the baseline:
                the table shows the ratio webhook / POST, and the part after the POST was
                answered (the dispatcher's share). Target (the issue): p99 < 1 s with a
                healthy receiver, printed as PASS or MISS. The POSTs are sequential, with a
                random pause of 0.5-1.5x --pause between them, so their phase against the
                dispatcher's poll interval is random.
    throughput  Deliveries/s to a receiver that answers 200 at once. M customers (default
                4,000; batches of up to 1,000 events, 83 customers each) are ingested while
                R endpoints (one per repetition) exist but are disabled, which queues M
                deliveries for each. Then one endpoint at a time is enabled
                (PATCH {"enabled": true}) and timed until the receiver has all M messages.
                Reported: deliveries/s from the PATCH to the last arrival, and from the
                first arrival to the last (the steady rate, without the poll wait).
    baseline    The same receiver taking plain POSTs of the same body (a real webhook,
                captured during the latency runs) from a bare httpx.AsyncClient loop with
                the same concurrency as the dispatcher (RADAR_WEBHOOK_CONCURRENCY, 32), run
                in its own process like the dispatcher: no database, no signing. The
                dispatcher's steady rate is printed as a ratio of this one, so its overhead
                (claims, outcomes, signing) is visible. One baseline run precedes each
                dispatcher run. The CPU column shows which side limits it: when the sender
                is at ~100% of a core, the baseline is the httpx client's ceiling, not the
                receiver's.

How
    Every server is `radar serve` as a subprocess on 127.0.0.1 (uvicorn, one process), with
    RADAR_WEBHOOK_ALLOWED_NETWORKS='["127.0.0.1/32"]', the sweeper, refit and housekeeping
    turned off (PT0S) so no background work competes, RADAR_WEBHOOK_POLL_INTERVAL and
    RADAR_WEBHOOK_CONCURRENCY from --poll-interval / --concurrency (defaults: the
    service's, 0.2 s and 32), and a fresh database: SQLite in a temporary file, PostgreSQL
    postgresql://postgres@127.0.0.1:5432/radar_bench_webhooks (created if missing, its
    public schema wiped first) unless RADAR_BENCH_POSTGRES_URL or --postgres-url says
    otherwise. It is not the test suite's database, so the two do not wipe each other.
    API keys come from `radar keys create` (scopes manage and ingest).

    The receiver is a uvicorn server (httptools) with a bare ASGI callable, running as a
    task in THIS process, on the same event loop as the load generator: it records
    time.perf_counter() when a request's body is complete, with the path, webhook-id and
    the alert's customer_id, and answers 200 "ok". During the latency runs the load is one
    POST at a time, so sharing the loop costs little; during the throughput runs this
    process only receives. Every webhook must carry webhook-id, webhook-timestamp and
    webhook-signature; messages missing or seen twice are counted.

    Server, bench-process (receiver) and other CPU (PostgreSQL, kernel) are sampled from
    /proc over each throughput run, as a % of one core; for a baseline run the "server"
    is the sender process. Repetitions: R (default 3) latency runs and R throughput runs
    per database, each throughput run preceded by a baseline run; tables show medians
    (min-max where it helps).

    --profile DIR runs each server under cProfile and writes DIR/<database>.prof when it
    stops (the numbers of such a run are slower; read the profile, not the table).

Run (about 3 minutes; --quick about 30 s)
    .venv/bin/python bench/webhooks.py
    .venv/bin/python bench/webhooks.py --quick --databases sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson
import uvloop
from _cpu import machine_cpu_seconds, proc_cpu_seconds
from _postgres import reset_postgres
from _process import BIN, HOST, ROOT, free_port, percentile, radar, stop_group, wait_healthy
from _receiver import LocalReceiver

SCRIPT = Path(__file__).resolve()
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/radar_bench_webhooks"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 120.0
BATCH = "/v1/purchases/batch"
ENDPOINTS = "/v1/webhooks/endpoints"
WEEKS = 12
FIRST_VISIT = date(2026, 1, 5)
MAX_BATCH_EVENTS = 1000
CUSTOMERS_PER_BATCH = MAX_BATCH_EVENTS // WEEKS  # 83 customers, 996 events
LATENCY_WARMUP = 5  # customers posted before the first latency run, not counted
TARGET_P99_MS = 1000.0
BUSY_OTHER_CPU = 30.0  # % of a core outside sender and receiver in a baseline run: noise
DATABASES = ("sqlite", "postgres")
TITLES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


@dataclass(frozen=True)
class Plan:
    repetitions: int
    latency_customers: int
    pause_s: float
    throughput_customers: int
    concurrency: int
    poll_interval_s: float
    fill_concurrency: int
    profile_dir: Path | None = None  # run each server under cProfile, writing here


# --- the receiver -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float  # time.perf_counter() when the request's body was complete
    path: str
    message_id: str
    customer_id: str


class Receiver(LocalReceiver):
    """A webhook receiver in this process: records every request and answers 200 at once."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[Arrival] = []
        self.counts: Counter[str] = Counter()
        self.malformed = 0  # requests without the webhook headers or a readable body
        self.sample_body: bytes | None = None
        self._waiters: dict[str, tuple[int, asyncio.Future[None]]] = {}

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    async def wait_for(self, path: str, count: int, within: float) -> bool:
        """Whether `count` requests to `path` have arrived within `within` seconds."""
        if self.counts[path] >= count:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[path] = (count, future)
        try:
            await asyncio.wait_for(future, within)
        except TimeoutError:
            return False
        finally:
            self._waiters.pop(path, None)
        return True

    def on(self, path: str) -> list[Arrival]:
        return [arrival for arrival in self.arrivals if arrival.path == path]

    def handle(self, path: str, body: bytes, headers: dict[bytes, bytes]) -> int:
        at = time.perf_counter()
        message_id = headers.get(b"webhook-id", b"").decode()
        customer_id = ""
        try:
            alert = orjson.loads(body)["data"].get("alert") or {}
            customer_id = str(alert.get("customer_id", ""))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            self.malformed += 1
        if not (message_id and b"webhook-timestamp" in headers and b"webhook-signature" in headers):
            self.malformed += 1
        self.arrivals.append(Arrival(at, path, message_id, customer_id))
        self.counts[path] += 1
        if self.sample_body is None and customer_id:
            self.sample_body = body
        waiter = self._waiters.get(path)
        if waiter is not None and self.counts[path] >= waiter[0] and not waiter[1].done():
            waiter[1].set_result(None)
        return 200


# --- servers ----------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    api_key: str

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]


def service_env(database_url: str, plan: Plan) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADAR_")}
    env.update(
        RADAR_DATABASE_URL=database_url,
        RADAR_LOG_LEVEL="WARNING",
        RADAR_WEBHOOK_ALLOWED_NETWORKS=f'["{HOST}/32"]',
        RADAR_WEBHOOK_CONCURRENCY=str(plan.concurrency),
        RADAR_WEBHOOK_POLL_INTERVAL=f"PT{plan.poll_interval_s:g}S",
        # ISO 8601 durations: accepted by every version of the settings (plain seconds too
        # since f95b035, but not before it).
        RADAR_SWEEP_INTERVAL="PT0S",
        RADAR_REFIT_INTERVAL="PT0S",
        RADAR_HOUSEKEEPING_INTERVAL="PT0S",
        # One key sends everything: the per-key limits would measure themselves.
        RADAR_RATE_LIMIT_INGEST="off",
        RADAR_RATE_LIMIT_READ="off",
    )
    return env


def start_service(name: str, database_url: str, plan: Plan, workdir: Path) -> Server:
    env = service_env(database_url, plan)
    radar(env, "migrate")
    created = radar(
        env, "keys", "create", "--name", "bench", "--scope", "manage", "--scope", "ingest"
    )
    port = free_port()
    log_path = workdir / f"{name}.log"
    command = [str(BIN / "radar"), "serve", "--host", HOST, "--port", str(port)]
    if plan.profile_dir is not None:  # written when the server exits (SIGTERM)
        profile = plan.profile_dir / f"{name}.prof"
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), *command]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(name, process, port, log_path, created.splitlines()[0].strip())


async def wait_ready(server: Server) -> None:
    await wait_healthy(
        server.base_url,
        server.process,
        lambda: f"{server.name} did not become ready:\n{server.log_tail()}",
        READY_TIMEOUT_S,
    )


def stop(server: Server, signal_number: int = signal.SIGTERM) -> None:
    stop_group(server.process, STOP_TIMEOUT_S, signal_number)


# --- CPU --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSnapshot:
    wall: float
    server: float
    bench: float
    machine: float


@dataclass(frozen=True)
class CpuUsage:
    """Percent of one core: the server (or sender), this process (receiver), the rest."""

    server: float
    bench: float
    other: float

    def text(self) -> str:
        return f"{self.server:.0f}/{self.bench:.0f}/{self.other:.0f}"


def cpu_snapshot(pid: int) -> CpuSnapshot:
    return CpuSnapshot(
        time.perf_counter(), proc_cpu_seconds(pid), time.process_time(), machine_cpu_seconds()
    )


def cpu_usage(first: CpuSnapshot, last: CpuSnapshot) -> CpuUsage:
    wall = max(last.wall - first.wall, 1e-9)
    server = (last.server - first.server) / wall * 100
    bench = (last.bench - first.bench) / wall * 100
    machine = (last.machine - first.machine) / wall * 100
    return CpuUsage(round(server, 1), round(bench, 1), round(max(machine - server - bench, 0), 1))


# --- request bodies ---------------------------------------------------------------------


def history(customer_id: str) -> list[dict[str, str]]:
    """A weekly customer who stopped in March 2026: 12 visits, one a week."""
    return [
        {
            "event_id": f"{customer_id}-w{week:02d}",
            "customer_id": customer_id,
            "store_id": "north",
            "occurred_at": f"{FIRST_VISIT + timedelta(weeks=week)}T12:00:00Z",
            "amount": "40",
            "currency": "EUR",
            "kind": "purchase",
        }
        for week in range(WEEKS)
    ]


def batch_body(customer_ids: Sequence[str]) -> tuple[bytes, int]:
    events = [event for customer_id in customer_ids for event in history(customer_id)]
    return orjson.dumps({"events": events}), len(events)


def check_batch(response: httpx.Response, events: int) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"batch answered HTTP {response.status_code}: {response.text[:500]}")
    answer = response.json()
    if answer.get("accepted") != events or answer.get("rejected") != 0:
        raise RuntimeError(
            f"batch of {events}: accepted {answer.get('accepted')}, "
            f"rejected {answer.get('rejected')}: {response.text[:500]}"
        )


# --- API helpers ------------------------------------------------------------------------


def service_client(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers={"authorization": f"Bearer {server.api_key}", "content-type": "application/json"},
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        timeout=REQUEST_TIMEOUT_S,
        trust_env=False,  # never a proxy: straight to 127.0.0.1
    )


async def create_endpoint(client: httpx.AsyncClient, url: str, *, enabled: bool) -> int:
    response = await client.post(
        ENDPOINTS, json={"url": url, "event_types": ["alert.opened"], "enabled": enabled}
    )
    if response.status_code != 201:
        raise RuntimeError(f"creating the endpoint: HTTP {response.status_code} {response.text}")
    endpoint_id: int = response.json()["id"]
    return endpoint_id


async def set_enabled(client: httpx.AsyncClient, endpoint_id: int, enabled: bool) -> None:
    response = await client.patch(f"{ENDPOINTS}/{endpoint_id}", json={"enabled": enabled})
    if response.status_code != 200:
        raise RuntimeError(f"PATCH endpoint: HTTP {response.status_code} {response.text}")


async def delete_endpoint(client: httpx.AsyncClient, endpoint_id: int) -> None:
    response = await client.delete(f"{ENDPOINTS}/{endpoint_id}")
    if response.status_code != 204:
        raise RuntimeError(f"DELETE endpoint: HTTP {response.status_code} {response.text}")


# --- latency ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyRun:
    database: str
    repetition: int
    customers: int
    delivered: int
    missing: int
    duplicates: int
    post_p50_ms: float
    post_p99_ms: float
    webhook_p50_ms: float
    webhook_p99_ms: float
    webhook_max_ms: float
    after_post_p50_ms: float  # from the POST's answer to the webhook: the dispatcher's part
    after_post_p99_ms: float


async def post_customers(
    client: httpx.AsyncClient, customer_ids: Sequence[str], pause: float
) -> dict[str, tuple[float, float]]:
    """POST each customer's history in turn; (start, end) of each POST, by customer."""
    bodies = [batch_body([customer_id]) for customer_id in customer_ids]
    times: dict[str, tuple[float, float]] = {}
    for customer_id, (body, events) in zip(customer_ids, bodies, strict=True):
        start = time.perf_counter()
        response = await client.post(BATCH, content=body)
        end = time.perf_counter()
        check_batch(response, events)
        times[customer_id] = (start, end)
        await asyncio.sleep(random.uniform(0.5, 1.5) * pause)
    return times


async def latency_run(
    client: httpx.AsyncClient, receiver: Receiver, path: str, database: str, plan: Plan, rep: int
) -> LatencyRun:
    customers = [f"{database}-lat{rep}-{i:05d}" for i in range(plan.latency_customers)]
    expected = receiver.counts[path] + len(customers)
    times = await post_customers(client, customers, plan.pause_s)
    await receiver.wait_for(path, expected, within=30.0)
    await asyncio.sleep(min(1.0, 5 * plan.poll_interval_s))  # time for duplicates to show
    arrivals: dict[str, list[float]] = {}
    for arrival in receiver.on(path):
        if arrival.customer_id in times:
            arrivals.setdefault(arrival.customer_id, []).append(arrival.at)
    webhook = [min(arrivals[c]) - times[c][0] for c in customers if c in arrivals]
    after_post = [min(arrivals[c]) - times[c][1] for c in customers if c in arrivals]
    posts = [end - start for start, end in times.values()]
    return LatencyRun(
        database=database,
        repetition=rep,
        customers=len(customers),
        delivered=len(webhook),
        missing=len(customers) - len(webhook),
        duplicates=sum(len(ats) - 1 for ats in arrivals.values()),
        post_p50_ms=ms(percentile(posts, 50)),
        post_p99_ms=ms(percentile(posts, 99)),
        webhook_p50_ms=ms(percentile(webhook, 50)),
        webhook_p99_ms=ms(percentile(webhook, 99)),
        webhook_max_ms=ms(max(webhook, default=float("nan"))),
        after_post_p50_ms=ms(percentile(after_post, 50)),
        after_post_p99_ms=ms(percentile(after_post, 99)),
    )


# --- throughput -------------------------------------------------------------------------


@dataclass(frozen=True)
class ThroughputRun:
    database: str  # "baseline" for the bare httpx sender
    repetition: int
    messages: int
    delivered: int
    duplicates: int
    total_s: float  # PATCH (or sender start) to the last arrival
    first_ms: float  # PATCH (or sender start) to the first arrival
    per_s: float  # messages / total_s
    steady_per_s: float  # (delivered - 1) / (last - first arrival)
    cpu: CpuUsage
    timed_out: bool


async def fill(
    client: httpx.AsyncClient, database: str, customers: int, concurrency: int
) -> tuple[float, int]:
    """Ingest `customers` stopped weekly customers in batches; (seconds, events)."""
    ids = [f"{database}-tp-{i:06d}" for i in range(customers)]
    bodies = [
        batch_body(ids[start : start + CUSTOMERS_PER_BATCH])
        for start in range(0, len(ids), CUSTOMERS_PER_BATCH)
    ]
    queue = iter(bodies)

    async def worker() -> None:
        for body, events in queue:  # shared: each body is sent once
            check_batch(await client.post(BATCH, content=body), events)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, sum(events for _, events in bodies)


def summarise_throughput(
    receiver: Receiver,
    path: str,
    database: str,
    rep: int,
    messages: int,
    started: float,
    cpu: CpuUsage,
    timed_out: bool,
) -> ThroughputRun:
    arrivals = receiver.on(path)
    unique = {arrival.message_id for arrival in arrivals}
    first = min((a.at for a in arrivals), default=float("nan"))
    last = max((a.at for a in arrivals), default=float("nan"))
    total = last - started
    return ThroughputRun(
        database=database,
        repetition=rep,
        messages=messages,
        delivered=len(unique),
        duplicates=len(arrivals) - len(unique),
        total_s=round(total, 3),
        first_ms=ms(first - started),
        per_s=round(len(unique) / total, 1) if total > 0 else float("nan"),
        steady_per_s=round((len(arrivals) - 1) / (last - first), 1) if last > first else 0.0,
        cpu=cpu,
        timed_out=timed_out,
    )


async def dispatcher_run(
    client: httpx.AsyncClient,
    receiver: Receiver,
    server: Server,
    endpoint_id: int,
    path: str,
    database: str,
    plan: Plan,
    rep: int,
) -> ThroughputRun:
    messages = plan.throughput_customers
    within = max(60.0, messages / 20)
    first = cpu_snapshot(server.process.pid)
    started = time.perf_counter()
    await set_enabled(client, endpoint_id, True)
    done = await receiver.wait_for(path, messages, within)
    cpu = cpu_usage(first, cpu_snapshot(server.process.pid))
    await asyncio.sleep(min(1.0, 5 * plan.poll_interval_s))  # let outcomes be written
    return summarise_throughput(receiver, path, database, rep, messages, started, cpu, not done)


async def baseline_run(
    receiver: Receiver, path: str, body_file: Path, plan: Plan, rep: int
) -> ThroughputRun:
    """The same receiver fed by a bare httpx.AsyncClient loop in its own process."""
    messages = plan.throughput_customers
    command = [sys.executable, str(SCRIPT), "--send-baseline"]
    command += [receiver.url(path), str(messages), str(plan.concurrency), str(body_file)]
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    first = cpu_snapshot(process.pid)
    done = await receiver.wait_for(path, messages, max(60.0, messages / 20))
    cpu = cpu_usage(first, cpu_snapshot(process.pid))
    out, err = await process.communicate()
    if process.returncode != 0 or out.strip() != b"0":
        print(f"  ! baseline sender: rc {process.returncode} {out!r} {err[-500:]!r}", flush=True)
    return summarise_throughput(receiver, path, "baseline", rep, messages, started, cpu, not done)


async def send_baseline(url: str, count: int, concurrency: int, body: bytes) -> int:
    """The baseline sender (a subprocess): POST `body` `count` times; returns the errors."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    numbers = iter(range(count))
    errors = 0
    async with httpx.AsyncClient(limits=limits, timeout=30.0, trust_env=False) as client:

        async def worker() -> None:
            nonlocal errors
            for number in numbers:
                headers = {
                    "content-type": "application/json",
                    "webhook-id": f"msg_baseline_{number}",
                    "webhook-timestamp": str(int(time.time())),
                    "webhook-signature": "v1,baseline",
                }
                try:
                    response = await client.post(url, content=body, headers=headers)
                    errors += response.status_code != 200
                except httpx.HTTPError:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


# --- one database -----------------------------------------------------------------------


@dataclass
class DatabaseResult:
    database: str
    latency: list[LatencyRun] = field(default_factory=list)
    throughput: list[ThroughputRun] = field(default_factory=list)
    baseline: list[ThroughputRun] = field(default_factory=list)
    fill_s: float = 0.0
    fill_events: int = 0
    skipped: str | None = None


async def bench_database(
    database: str, url: str, plan: Plan, receiver: Receiver, workdir: Path
) -> DatabaseResult:
    result = DatabaseResult(database)
    print(f"{TITLES[database]}: starting the server ...", flush=True)
    server = await asyncio.to_thread(start_service, database, url, plan, workdir)
    try:
        await wait_ready(server)
        async with service_client(server) as client:
            await latency_phase(client, receiver, database, plan, result)
            await throughput_phase(client, receiver, server, database, plan, workdir, result)
    finally:
        # uvicorn re-raises the signal once it has shut down: after SIGTERM the process dies
        # before cProfile writes its file, after SIGINT (KeyboardInterrupt) it is written.
        await asyncio.to_thread(stop, server, signal.SIGINT if plan.profile_dir else signal.SIGTERM)
    return result


async def latency_phase(
    client: httpx.AsyncClient,
    receiver: Receiver,
    database: str,
    plan: Plan,
    result: DatabaseResult,
) -> None:
    path = f"/{database}/latency"
    endpoint_id = await create_endpoint(client, receiver.url(path), enabled=True)
    warmup = [f"{database}-warmup-{i}" for i in range(LATENCY_WARMUP)]
    await post_customers(client, warmup, plan.pause_s)
    if not await receiver.wait_for(path, len(warmup), within=30.0):
        raise RuntimeError("no webhook arrived for the warm-up customers")
    for rep in range(1, plan.repetitions + 1):
        run = await latency_run(client, receiver, path, database, plan, rep)
        result.latency.append(run)
        print(f"  latency run {rep}: {format_latency(run)}", flush=True)
    await delete_endpoint(client, endpoint_id)


async def throughput_phase(
    client: httpx.AsyncClient,
    receiver: Receiver,
    server: Server,
    database: str,
    plan: Plan,
    workdir: Path,
    result: DatabaseResult,
) -> None:
    paths = [f"/{database}/throughput/{rep}" for rep in range(1, plan.repetitions + 1)]
    endpoints = [await create_endpoint(client, receiver.url(p), enabled=False) for p in paths]
    print(
        f"  queueing {plan.throughput_customers:,} alerts for {len(endpoints)} disabled "
        "endpoints ...",
        flush=True,
    )
    result.fill_s, result.fill_events = await fill(
        client, database, plan.throughput_customers, plan.fill_concurrency
    )
    print(
        f"  queued in {result.fill_s:.1f} s ({result.fill_events / result.fill_s:,.0f} events/s, "
        f"{plan.throughput_customers / result.fill_s:,.0f} alerts/s)",
        flush=True,
    )
    body_file = workdir / "webhook-body.json"
    body_file.write_bytes(receiver.sample_body or b'{"type":"alert.opened","data":{}}')
    for rep, (endpoint_id, path) in enumerate(zip(endpoints, paths, strict=True), start=1):
        base = await baseline_run(receiver, f"/{database}/baseline/{rep}", body_file, plan, rep)
        result.baseline.append(base)
        print(f"  baseline run {rep}: {format_throughput(base)}", flush=True)
        run = await dispatcher_run(client, receiver, server, endpoint_id, path, database, plan, rep)
        result.throughput.append(run)
        print(f"  dispatch run {rep}: {format_throughput(run)}", flush=True)


# --- numbers and report -----------------------------------------------------------------


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def format_latency(run: LatencyRun) -> str:
    return (
        f"webhook p50 {run.webhook_p50_ms:.0f} / p99 {run.webhook_p99_ms:.0f} / max "
        f"{run.webhook_max_ms:.0f} ms; POST p50 {run.post_p50_ms:.1f} / p99 "
        f"{run.post_p99_ms:.1f} ms; delivered {run.delivered}/{run.customers}, "
        f"duplicates {run.duplicates}"
    )


def format_throughput(run: ThroughputRun) -> str:
    late = " TIMED OUT" if run.timed_out else ""
    return (
        f"{run.delivered:,}/{run.messages:,} in {run.total_s:.2f} s = {run.per_s:,.0f}/s "
        f"(steady {run.steady_per_s:,.0f}/s, first after {run.first_ms:.0f} ms), "
        f"duplicates {run.duplicates}, cpu srv/bench/oth {run.cpu.text()}%{late}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def latency_rows(results: Sequence[DatabaseResult]) -> list[list[str]]:
    rows = []
    for result in results:
        runs = result.latency
        if not runs:
            rows.append([TITLES[result.database], result.skipped or "no runs"])
            continue

        def med(name: str, runs: list[LatencyRun] = runs) -> float:
            return median([getattr(run, name) for run in runs])

        p99s = [run.webhook_p99_ms for run in runs]
        p99 = med("webhook_p99_ms")
        verdict = "PASS" if p99 < TARGET_P99_MS and all(r.missing == 0 for r in runs) else "MISS"
        rows.append(
            [
                TITLES[result.database],
                f"{sum(r.delivered for r in runs)}/{sum(r.customers for r in runs)}",
                f"{med('post_p50_ms'):.1f} / {med('post_p99_ms'):.1f}",
                f"{med('webhook_p50_ms'):.0f} / {p99:.0f} ({min(p99s):.0f}-{max(p99s):.0f})",
                f"{max(r.webhook_max_ms for r in runs):.0f}",
                f"{med('after_post_p50_ms'):.0f} / {med('after_post_p99_ms'):.0f}",
                f"{med('webhook_p50_ms') / med('post_p50_ms'):.1f}x / "
                f"{p99 / med('post_p99_ms'):.1f}x",
                str(sum(r.duplicates for r in runs)),
                f"{p99:.0f} ms vs < {TARGET_P99_MS:.0f}: {verdict}",
            ]
        )
    return rows


LATENCY_HEADERS = [
    "database",
    "delivered",
    "POST p50 / p99 ms",
    "webhook p50 / p99 ms (p99 min-max)",
    "max ms",
    "after POST p50 / p99",
    "webhook/POST p50 / p99",
    "dupes",
    "target p99",
]


def throughput_row(title: str, runs: Sequence[ThroughputRun], baseline: float) -> list[str]:
    rates = [run.per_s for run in runs]
    steady = median([run.steady_per_s for run in runs])
    return [
        title,
        f"{sum(r.delivered for r in runs):,}/{sum(r.messages for r in runs):,}",
        f"{median([r.total_s for r in runs]):.2f}",
        f"{median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})",
        f"{steady:,.0f}",
        f"{steady / baseline:.2f}x" if baseline > 0 else "-",
        f"{median([r.first_ms for r in runs]):.0f}",
        str(sum(r.duplicates for r in runs)),
        "/".join(
            f"{median([getattr(r.cpu, part) for r in runs]):.0f}"
            for part in ("server", "bench", "other")
        ),
        "TIMED OUT" if any(r.timed_out for r in runs) else "",
    ]


THROUGHPUT_HEADERS = [
    "sender",
    "delivered",
    "total s",
    "per s (min-max)",
    "steady /s",
    "vs baseline",
    "first ms",
    "dupes",
    "cpu% srv/bench/oth",
    "",
]


def print_report(results: Sequence[DatabaseResult], plan: Plan, elapsed: float) -> None:
    print()
    print(
        f"Webhook benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; medians of {plan.repetitions} run(s); "
        f"RADAR_WEBHOOK_CONCURRENCY={plan.concurrency}, "
        f"RADAR_WEBHOOK_POLL_INTERVAL={plan.poll_interval_s:g} s"
    )
    print(
        "The receiver runs in the bench process, on the load generator's event loop "
        "(uvicorn + httptools, answers 200 at once)."
    )
    print()
    print(
        f"Latency: {plan.latency_customers} customers per run, one POST /v1/purchases/batch "
        f"(12 events) each, sequential, {plan.pause_s * 1000:.0f} ms (+-50%) apart; from just "
        "before the POST to the webhook's arrival"
    )
    table(LATENCY_HEADERS, latency_rows(results))
    print()
    baselines = [run for result in results for run in result.baseline]
    baseline = median([run.steady_per_s for run in baselines])
    print(
        f"Throughput: {plan.throughput_customers:,} queued alert.opened messages per run, "
        "delivered after PATCH enabled=true; total s / per s: from the PATCH (baseline: the "
        "sender's start) to the last arrival; steady: first to last arrival"
    )
    rows = []
    if baselines:
        title = f"baseline: bare httpx.AsyncClient x{plan.concurrency}, own process"
        rows.append(throughput_row(title, baselines, baseline))
    for result in results:
        title = f"dispatcher, {TITLES[result.database]}"
        if result.throughput:
            rows.append(throughput_row(title, result.throughput, baseline))
        else:
            rows.append([title, result.skipped or "no runs", *[""] * 8])
    table(THROUGHPUT_HEADERS, rows)
    busy = [run for run in baselines if run.cpu.other > BUSY_OTHER_CPU]
    if busy:
        print(
            f"! {len(busy)} of {len(baselines)} baseline runs saw > {BUSY_OTHER_CPU:.0f}% of a "
            "core used outside the sender and this process (the service and database are "
            "idle then): something else ran on the machine; rerun"
        )
    for result in results:
        if result.fill_s:
            print(
                f"Queueing on {TITLES[result.database]}: {result.fill_events:,} events in "
                f"{result.fill_s:.1f} s ({result.fill_events / result.fill_s:,.0f} events/s, "
                f"{plan.throughput_customers / result.fill_s:,.0f} alerts/s, each written with "
                f"{plan.repetitions} deliveries)"
            )
    print(f"total runtime {elapsed:.0f} s", flush=True)


# --- command line -----------------------------------------------------------------------


async def run_benchmark(
    databases: Sequence[str], plan: Plan, postgres_url: str, workdir: Path
) -> list[DatabaseResult]:
    results = []
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(Receiver())
        for database in databases:
            try:
                if database == "postgres":
                    await reset_postgres(postgres_url)
                    url = postgres_url
                else:
                    url = f"sqlite:///{workdir}/radar.db"
                results.append(await bench_database(database, url, plan, receiver, workdir))
            except (OSError, RuntimeError, ValueError, asyncpg.PostgresError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                print(f"  ! {database} failed: {reason}", flush=True)
                results.append(DatabaseResult(database, skipped=reason.splitlines()[0][:80]))
        if receiver.malformed:
            print(f"  ! {receiver.malformed} malformed webhook request(s)", flush=True)
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, 100 + 1,000 customers")
    parser.add_argument("--repetitions", type=int, default=3, help="default: 3")
    parser.add_argument(
        "--latency-customers", type=int, default=200, help="per latency run, default: 200"
    )
    parser.add_argument(
        "--pause", type=float, default=0.03, help="seconds between latency POSTs, default: 0.03"
    )
    parser.add_argument(
        "--throughput-customers",
        type=int,
        default=4000,
        help="queued messages per throughput run, default: 4000",
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="RADAR_WEBHOOK_CONCURRENCY, default: 32"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.2,
        help="RADAR_WEBHOOK_POLL_INTERVAL in seconds, default: 0.2",
    )
    parser.add_argument(
        "--fill-concurrency", type=int, default=4, help="concurrent batches while queueing"
    )
    parser.add_argument(
        "--databases",
        default=",".join(DATABASES),
        help=f"comma-separated, from: {','.join(DATABASES)} (default: both)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("RADAR_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="wiped before the run! default: $RADAR_BENCH_POSTGRES_URL or " + DEFAULT_POSTGRES_URL,
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="directory: run each server under cProfile (slower!), writing <database>.prof",
    )
    parser.add_argument("--send-baseline", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so the servers are stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.send_baseline:
        url, count, concurrency, body_file = args.send_baseline
        body = Path(body_file).read_bytes()
        errors = uvloop.run(send_baseline(url, int(count), int(concurrency), body))
        print(errors)
        return 0
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    if not databases or set(databases) - set(DATABASES):
        raise SystemExit(f"unknown database(s) in {args.databases!r}; choose from {DATABASES}")
    plan = Plan(
        repetitions=1 if args.quick else args.repetitions,
        latency_customers=100 if args.quick else args.latency_customers,
        pause_s=args.pause,
        throughput_customers=1000 if args.quick else args.throughput_customers,
        concurrency=args.concurrency,
        poll_interval_s=args.poll_interval,
        fill_concurrency=args.fill_concurrency,
        profile_dir=args.profile.resolve() if args.profile else None,
    )
    print("$ " + " ".join([Path(sys.executable).name, *sys.argv]), flush=True)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="radar-bench-webhooks-"))
    try:
        results = uvloop.run(run_benchmark(databases, plan, args.postgres_url, workdir))
    except KeyboardInterrupt:
        print("interrupted: servers stopped, nothing reported", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_report(results, plan, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
