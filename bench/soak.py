"""Soak of Defection Radar: minutes of mixed traffic, watching for errors, drift and memory.

What runs
    One `radar serve` subprocess on 127.0.0.1 (SQLite in a temporary file by default, or
    PostgreSQL with --database postgres) on a fresh database, API keys from `radar keys
    create` (one ingest key for the tills, one read key for ops, one manage key), a webhook
    endpoint registered for every event type, pointing at a receiver in this process.
    Server settings: RADAR_SWEEP_INTERVAL=PT5S, RADAR_ALERT_ESCALATE_AFTER=PT60S (so the
    sweeper has real work during the soak, see below),
    RADAR_WEBHOOK_ALLOWED_NETWORKS='["127.0.0.1/32"]', RADAR_LOG_LEVEL=WARNING and
    RADAR_RATE_LIMIT_INGEST=off / RADAR_RATE_LIMIT_READ=off: per-key rate limits would
    otherwise turn part of the load into 429s (settings the service does not know are
    ignored). The rest are the service's defaults.

    Before the clock starts, --customers customers (default 5,000) are loaded through the
    batch endpoint, each a whole history of 10-16 visits at their own rhythm (every 7, 10 or
    14 days, +-1 day) at a home store, two categories a visit: three quarters are active
    (last visit within their gap), a quarter lapsed 3.5-6 gaps ago. Lapsed customers get an
    inactivity alert as their history is folded (the scorer evaluates customers moments
    after their events are stored), and half of them are set aside to come back
    during the soak, the other half stay away and are the ones ops works on.

    Then every kind of traffic runs at once, each at its own offered rate (Poisson arrivals
    from a seeded generator; --scale multiplies every rate), with at most a few requests of
    a kind in flight: when the server is slower than the offered rate, the achieved rate
    falls below it instead of the client piling up requests. The clients are httpx, one per
    key, reusing a connection only while it has been idle < 2 s (the server closes idle
    connections after 5 s: see KEEPALIVE_EXPIRY_S).

    kind       request                                                  expected
    batch      POST /v1/purchases/batch: 200 purchases of active         200, accepted = all,
               customers from the last 4 h (a till upload) + 4 new          rejected 0
               customers' histories (2 active, 2 lapsed: alerts open)
    single     POST /v1/purchases: an active customer buys now; 20 %     201 accepted
               carry an Idempotency-Key
    duplicate  POST /v1/purchases: a stored single event sent again      200 duplicate
    retry      POST /v1/purchases: a keyed request sent again            201, Idempotent-
                                                                         Replayed, same body
    refund     POST /v1/purchases: kind refund of a stored purchase      201 accepted
    return     POST /v1/purchases: a lapsed customer buys again (the     201 accepted
               alert resolves: alert.resolved, customer.recovered)
    customer   GET /v1/customers/{id}, a stored customer                  200
    alerts     GET /v1/alerts, one of 5 filter/sort variants, up to 3    200
               pages by cursor
    feed-etag  GET /v1/alerts/changes with If-None-Match, its own cursor  200 or 304
    feed       GET /v1/alerts/changes?wait=10 long poll, in a loop: it    200
               follows every alert change (its latency is mostly the wait)
    ops        POST /v1/alerts/{id}/acknowledge | snooze (20-60 s) |      200
               resolve (lost), on alerts of customers who stay away
    health     GET /healthz: no database; its latency is the server's     200
               event-loop lag

    Alerts and webhooks during the soak: alert.opened from the batches' lapsed customers;
    alert.resolved and customer.recovered from the returns; acknowledged, snoozed and
    resolved from ops; and, from the sweeper, alert.updated when a snooze ends and
    alert.escalated 60 s after an acknowledgement nobody resolved. The sweeper cannot open
    inactivity alerts of its own within minutes: the rules count silence in days (a
    customer's answer changes at most once a day), so customers are stored already lapsed.

    The receiver (uvicorn + a bare ASGI callable on this process's event loop) verifies
    every signature with the reference `standardwebhooks` package (the test extras) and
    answers 503 to the first attempt of --webhook-failures (2 %) of the messages, so
    retries (5 s later) are part of the soak; it answers 200 otherwise. After the traffic
    stops, the soak waits (up to --drain s) until every change in the feed has arrived as a
    webhook of its type and alert, and every refused message has come back: missing ones
    are errors, as are bad signatures.

What is reported
    Per kind and overall over the measured part (after --warmup): offered and achieved
    requests/s, events/s, p50/p99 latency, errors (any answer but the expected one, or a
    transport error) with a breakdown and examples. Per window (--window, 60 s): requests/s,
    events/s, p50/p99, errors, server CPU and RSS; the last window against the first as a
    ratio (throughput and p99, overall and per kind), so drift shows. Webhooks delivered
    against alert changes (alert.opened delivered vs alerts opened), duplicates, lag from
    the change's commit to its arrival. Memory: the server process's RSS (/proc, every
    --rss-interval s): after the warm-up, at the end, growth, and the slope over the second
    half of the measured part by least squares. Targets: 0 errors, and flat memory
    (second-half slope below FLAT_MIB_PER_MIN, 1 MiB/min). CPU: server, this process and
    the rest of the machine, as % of one core. Offered rates are actions per second: an
    `alerts` action reads 1-3 pages, each counted as a request.

    --memory-probe runs the server under a small wrapper that samples, every 2 s, what
    SQLite has allocated in the process (sqlite3_memory_used: every connection's page cache
    and statements), and with --tracemalloc also the Python heap (traced allocations; the
    server is then much slower), reported beside the RSS.

Run (10 minutes, plus the seeding; --quick: 30 s)
    .venv/bin/python bench/soak.py --json /tmp/soak.json
    .venv/bin/python bench/soak.py --quick
    .venv/bin/python bench/soak.py --database postgres \\
        --postgres-url postgresql://postgres@127.0.0.1:5432/radar_bench_soak

    PostgreSQL: postgresql://postgres@127.0.0.1:5432/radar_bench_soak (created if missing)
    unless RADAR_BENCH_POSTGRES_URL or --postgres-url says otherwise; its public schema is
    dropped first. Only 127.0.0.1 is accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
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
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from _cpu import machine_cpu_seconds, proc_cpu_seconds
from _postgres import reset_postgres
from _process import BIN, HOST, ROOT, free_port, percentile, radar, stop_group, wait_healthy
from _receiver import LocalReceiver
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/radar_bench_soak"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 40.0
REQUEST_TIMEOUT_S = 60.0
# The server (uvicorn) closes a connection idle for 5 s; httpx reuses one idle for up to 5 s
# by default. When the server process is descheduled across that deadline, its keep-alive
# timer runs before it reads the request already waiting on the socket: the close resets
# the connection and the client gets ReadError. Reusing only connections idle < 2 s
# leaves 3 s of margin.
KEEPALIVE_EXPIRY_S = 2.0
FLAT_MIB_PER_MIN = 1.0  # RSS slope over the second half below this: "flat"
MAX_BATCH_EVENTS = 1000
STORES = tuple(f"store-{i:02d}" for i in range(20))
CATEGORIES = ("bakery", "dairy", "produce", "meat", "drinks", "household", "frozen", "snacks")
GAPS = (7, 7, 10, 14)  # days between visits
LAPSED_SHARE = 0.25
KEYED_SHARE = 0.2  # single events sent with an Idempotency-Key
TILL_EVENTS = 200  # per batch: purchases of active customers from the last hours
NEW_PER_BATCH = 4  # per batch: new customers' whole histories, half of them lapsed
FEED_WAIT_S = 10
SNOOZE_S = (20, 60)
ESCALATE_AFTER_S = 60
SWEEP_INTERVAL_S = 5
LONG_POLL = "feed"


@dataclass(frozen=True)
class Kind:
    name: str
    title: str
    rate: float  # offered requests (or actions) per second at scale 1; 0: a loop
    in_flight: int  # at most this many at once


KINDS: tuple[Kind, ...] = (
    Kind("batch", "POST batch (~250 events)", 2.0, 4),
    Kind("single", "POST purchase, new", 80.0, 32),
    Kind("duplicate", "POST purchase, sent again", 4.0, 4),
    Kind("retry", "POST purchase, Idempotency-Key replay", 4.0, 4),
    Kind("refund", "POST refund", 4.0, 4),
    Kind("return", "POST purchase, lapsed customer back", 1.0, 2),
    Kind("customer", "GET customer", 20.0, 8),
    Kind("alerts", "GET alerts, 1-3 pages a time", 4.0, 4),
    Kind("feed-etag", "GET alert changes, If-None-Match", 2.0, 1),
    Kind(LONG_POLL, f"GET alert changes, wait={FEED_WAIT_S} (long poll)", 0.0, 1),
    Kind("ops", "POST acknowledge / snooze / resolve", 1.0, 2),
    Kind("health", "GET /healthz (event-loop lag)", 2.0, 2),
)
KIND_NAMES = tuple(kind.name for kind in KINDS)
INGEST_KINDS = ("batch", "single", "duplicate", "retry", "refund", "return")


@dataclass(frozen=True)
class Plan:
    database: str
    duration_s: float  # mixed traffic in all, warm-up included
    warmup_s: float
    window_s: float
    customers: int
    scale: float
    seed: int
    rss_interval_s: float
    drain_s: float
    webhook_failures: float
    keep: bool
    memory_probe: bool = False
    tracemalloc: bool = False

    @property
    def measured_s(self) -> float:
        return self.duration_s - self.warmup_s


# --- the shop: customers, their histories, and what the soak knows is stored ------------


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    store: str
    categories: tuple[str, str]
    spend: float
    gap: int

    def purchase(self, event_id: str, at: datetime, rng: random.Random) -> dict[str, Any]:
        total = round(self.spend * rng.uniform(0.7, 1.3), 2)
        first = round(total * 0.6, 2)
        return {
            "event_id": event_id,
            "customer_id": self.customer_id,
            "store_id": self.store,
            "occurred_at": iso(at),
            "amount": f"{total:.2f}",
            "currency": "EUR",
            "items": [
                {"category": self.categories[0], "amount": f"{first:.2f}"},
                {"category": self.categories[1], "amount": f"{total - first:.2f}"},
            ],
        }


@dataclass(frozen=True, slots=True)
class Purchase:
    event_id: str
    customer_id: str
    store: str
    amount: str


class Shop:
    """Every customer the soak made up, and the pools the traffic draws from. A customer or
    event enters a pool only once the service has confirmed it is stored."""

    def __init__(self, today: date) -> None:
        self.today = today
        self.profiles: dict[str, Customer] = {}
        self.known: list[str] = []  # stored customers (reads)
        self.active: list[str] = []  # buy now and then
        self.returners: list[str] = []  # lapsed, will come back during the soak
        self.lost: set[str] = set()  # lapsed for good: ops works their alerts
        self.purchases: list[Purchase] = []  # stored single purchases, not yet refunded
        self.sent: deque[bytes] = deque(maxlen=5000)  # bodies of stored single events
        self.replays: deque[tuple[str, bytes, bytes]] = deque(maxlen=5000)  # key, body, answer
        self.ops_queue: deque[int] = deque()  # alert ids of lost customers, to work on
        self.numbers = itertools.count()

    def event_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.numbers):09d}"

    def new_customer(
        self, rng: random.Random, prefix: str, lapsed: bool
    ) -> tuple[Customer, list[dict[str, Any]]]:
        """A customer with a regular history: active (last visit within the gap), or
        lapsed 3.5-6 gaps ago, which opens an inactivity alert when stored."""
        customer_id = f"{prefix}{next(self.numbers):09d}"
        gap = rng.choice(GAPS)
        silent = rng.randint(int(3.5 * gap) + 1, 6 * gap) if lapsed else rng.randint(1, gap - 1)
        last = self.today - timedelta(days=silent)
        first_category, second_category = rng.sample(CATEGORIES, 2)
        profile = Customer(
            customer_id,
            rng.choice(STORES),
            (first_category, second_category),
            rng.uniform(15, 90),
            gap,
        )
        self.profiles[customer_id] = profile
        events = []
        for visit in range(rng.randint(10, 16)):
            day = last - timedelta(days=visit * gap + (rng.randint(-1, 1) if visit else 0))
            at = datetime.combine(day, day_time(rng.randint(8, 19), rng.randint(0, 59)), UTC)
            events.append(profile.purchase(f"{customer_id}-h{visit:02d}", at, rng))
        return profile, events

    def stored(self, customer_id: str, lapsed: bool, rng: random.Random) -> None:
        self.known.append(customer_id)
        if not lapsed:
            self.active.append(customer_id)
        elif rng.random() < 0.5:
            self.returners.append(customer_id)
        else:
            self.lost.add(customer_id)


def take(items: list[Any], rng: random.Random) -> Any:
    """Remove and return a random element (swap with the last, pop)."""
    index = rng.randrange(len(items))
    items[index], items[-1] = items[-1], items[index]
    return items.pop()


# --- the server -------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    keys: dict[str, str]  # role: API key

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]


def service_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADAR_")}
    env.update(
        RADAR_DATABASE_URL=database_url,
        RADAR_LOG_LEVEL="WARNING",
        RADAR_WEBHOOK_ALLOWED_NETWORKS=f'["{HOST}/32"]',
        RADAR_SWEEP_INTERVAL=f"PT{SWEEP_INTERVAL_S}S",
        RADAR_ALERT_ESCALATE_AFTER=f"PT{ESCALATE_AFTER_S}S",
        RADAR_RATE_LIMIT_INGEST="off",
        RADAR_RATE_LIMIT_READ="off",
    )
    return env


# `--memory-probe`: the server runs under this wrapper, which writes "monotonic s, traced
# bytes (0 without tracemalloc), SQLite bytes" every 2 s. SQLite's counter is process-wide:
# every connection's page cache, statements and schema.
MEMORY_PROBE = """
import _sqlite3, ctypes, sys, threading, time, tracemalloc
from pathlib import Path
out = Path(sys.argv.pop(1))
used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
used.restype = ctypes.c_int64
def sample():
    with out.open("a") as f:
        while True:
            traced = tracemalloc.get_traced_memory()[0]
            f.write(f"{time.monotonic():.3f},{traced},{used()}\\n")
            f.flush()
            time.sleep(2)
threading.Thread(target=sample, daemon=True).start()
from app.cli import main
main()
"""


def start_server(
    database_url: str, workdir: Path, probe_file: Path | None, tracemalloc: bool
) -> Server:
    env = service_env(database_url)
    radar(env, "migrate")
    keys = {}
    for role, scopes in (("till", ["ingest"]), ("ops", ["read"]), ("admin", ["manage"])):
        options = [item for scope in scopes for item in ("--scope", scope)]
        keys[role] = radar(env, "keys", "create", "--name", f"soak-{role}", *options).split()[0]
    port = free_port()
    log_path = workdir / "server.log"
    command = [str(BIN / "radar"), "serve", "--host", HOST, "--port", str(port)]
    if probe_file is not None:  # perf_counter and monotonic: both CLOCK_MONOTONIC on Linux
        tracing = ["-X", "tracemalloc=1"] if tracemalloc else []
        wrapper = [sys.executable, *tracing, "-c", MEMORY_PROBE, str(probe_file)]
        command = [*wrapper, *command[1:]]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(process, port, log_path, keys)


async def wait_ready(server: Server) -> None:
    await wait_healthy(
        server.base_url,
        server.process,
        lambda: f"the server did not become ready:\n{server.log_tail()}",
        READY_TIMEOUT_S,
    )


def stop_server(server: Server) -> None:
    stop_group(server.process, STOP_TIMEOUT_S)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# --- the webhook receiver ---------------------------------------------------------------


@dataclass
class Deliveries:
    received: Counter[tuple[str, int]] = field(default_factory=Counter)  # (type, alert id)
    by_type: Counter[str] = field(default_factory=Counter)
    messages: set[str] = field(default_factory=set)  # webhook-ids answered 200
    duplicates: int = 0  # a message answered 200 that came again
    refused: dict[str, str] = field(default_factory=dict)  # webhook-id: type, 503 once
    bad_signatures: int = 0
    unreadable: int = 0
    lags: list[float] = field(default_factory=list)  # s from commit to arrival, 1st attempts


class Receiver(LocalReceiver):
    """Webhook receiver on this process's loop: verifies, records, answers 200 (or 503 to
    the first attempt of a share of the messages)."""

    def __init__(self, failure_share: float, seed: int) -> None:
        super().__init__()
        self.deliveries = Deliveries()
        self.verifier: Webhook | None = None  # set once the endpoint's secret is known
        self._failure_share = failure_share
        self._rng = random.Random(f"{seed}-receiver")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hooks"

    def handle(self, path: str, body: bytes, headers: dict[bytes, bytes]) -> int:
        return self._record(body, {k.decode(): v.decode() for k, v in headers.items()})

    def _record(self, body: bytes, headers: dict[str, str]) -> int:
        arrived = time.time()
        seen = self.deliveries
        message_id = headers.get("webhook-id", "")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            seen.unreadable += 1
            return 200
        try:
            if self.verifier is None:
                raise WebhookVerificationError("no secret yet")
            self.verifier.verify(body, headers, json_parse=False)
        except WebhookVerificationError:
            seen.bad_signatures += 1
        if (
            message_id not in seen.refused
            and message_id not in seen.messages
            and self._rng.random() < self._failure_share
        ):
            seen.refused[message_id] = str(payload.get("type"))
            return 503
        if message_id in seen.messages:
            seen.duplicates += 1
            return 200
        seen.messages.add(message_id)
        kind = str(payload.get("type"))
        seen.by_type[kind] += 1
        alert = (payload.get("data") or {}).get("alert")
        if isinstance(alert, dict) and "id" in alert:
            seen.received[(kind, int(alert["id"]))] += 1
        if message_id not in seen.refused:
            committed = datetime.fromisoformat(str(payload.get("timestamp"))).timestamp()
            seen.lags.append(arrived - committed)
        return 200


# --- recording --------------------------------------------------------------------------

Sample = tuple[int, float, float, str, int]  # kind index, start, end, error ("": ok), events
KIND_INDEX = {name: index for index, name in enumerate(KIND_NAMES)}
Check = Callable[[httpx.Response], str]  # "" when the answer is the expected one


def expect(*statuses: int) -> Check:
    def check(response: httpx.Response) -> str:
        if response.status_code in statuses:
            return ""
        return f"HTTP {response.status_code}{problem_code(response)}"

    return check


OK = expect(200)


def problem_code(response: httpx.Response) -> str:
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        return ""
    return f" {code}" if code else ""


class Recorder:
    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.errors: Counter[tuple[str, str]] = Counter()
        self.examples: dict[tuple[str, str], list[str]] = {}

    async def call(
        self,
        kind: str,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        check: Check,
        *,
        events: int = 0,
        **options: Any,
    ) -> httpx.Response | None:
        """One request, timed and checked; the response when it was the expected one."""
        start = time.perf_counter()
        try:
            response = await client.request(method, url, **options)
        except httpx.HTTPError as exc:
            example = f"{datetime.now(UTC):%H:%M:%S.%f} {method} {url} after "
            example += f"{time.perf_counter() - start:.3f} s: {exc!r}"
            self.add(kind, start, time.perf_counter(), type(exc).__name__, 0, example)
            return None
        end = time.perf_counter()
        error = check(response)
        example = ""
        if error:
            request_id = response.headers.get("x-request-id", "")
            example = f"{datetime.now(UTC):%H:%M:%S} {method} {url} -> {request_id} "
            example += response.text[:300]
        self.add(kind, start, end, error, 0 if error else events, example)
        return None if error else response

    def add(
        self, kind: str, start: float, end: float, error: str, events: int, example: str = ""
    ) -> None:
        self.samples.append((KIND_INDEX[kind], start, end, error, events))
        if error:
            self.errors[(kind, error)] += 1
            examples = self.examples.setdefault((kind, error), [])
            if len(examples) < 3:
                examples.append(example)


# --- traffic ----------------------------------------------------------------------------


@dataclass
class FeedLog:
    """Every alert change the long poll saw."""

    changes: Counter[tuple[str, int]] = field(default_factory=Counter)  # (type, alert id)
    by_type: Counter[str] = field(default_factory=Counter)
    opened_at: list[float] = field(default_factory=list)  # epoch s of each alert.opened
    cursor: int = 0


class Traffic:
    def __init__(
        self,
        plan: Plan,
        shop: Shop,
        recorder: Recorder,
        clients: dict[str, httpx.AsyncClient],
    ) -> None:
        self.plan = plan
        self.shop = shop
        self.recorder = recorder
        self.clients = clients
        self.feed = FeedLog()
        self.stopping = asyncio.Event()
        self.rngs = {name: random.Random(f"{plan.seed}-{name}") for name in KIND_NAMES}
        self._etag = ("", 0)  # the ETag poller's (etag, cursor)
        self.actions: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "batch": self.batch,
            "single": self.single,
            "duplicate": self.duplicate,
            "retry": self.retry,
            "refund": self.refund,
            "return": self.come_back,
            "customer": self.customer,
            "alerts": self.alerts,
            "feed-etag": self.feed_etag,
            "ops": self.ops,
            "health": self.health,
        }

    # --- ingest ---

    def _post_purchase(
        self, kind: str, body: bytes, check: Check, headers: dict[str, str] | None = None
    ) -> Awaitable[httpx.Response | None]:
        return self.recorder.call(
            kind,
            self.clients["till"],
            "POST",
            "/v1/purchases",
            check,
            events=1,
            content=body,
            headers=headers,
        )

    async def batch(self) -> None:
        rng, shop = self.rngs["batch"], self.shop
        now = datetime.now(UTC)
        events = []
        for _ in range(TILL_EVENTS):
            profile = shop.profiles[rng.choice(shop.active)]
            at = now - timedelta(seconds=rng.uniform(60, 4 * 3600))
            events.append(profile.purchase(shop.event_id("t"), at, rng))
        new = []
        for number in range(NEW_PER_BATCH):
            lapsed = number % 2 == 1
            profile, history = shop.new_customer(rng, "n", lapsed)
            new.append((profile.customer_id, lapsed))
            events += history
        size = len(events)

        def check(response: httpx.Response) -> str:
            if response.status_code != 200:
                return f"HTTP {response.status_code}{problem_code(response)}"
            answer = response.json()
            if answer.get("accepted") != size or answer.get("rejected") != 0:
                return f"accepted {answer.get('accepted')} of {size}"
            return ""

        body = orjson.dumps({"events": events})
        client = self.clients["till"]
        url = "/v1/purchases/batch"
        if await self.recorder.call("batch", client, "POST", url, check, events=size, content=body):
            for customer_id, lapsed in new:
                shop.stored(customer_id, lapsed, rng)

    async def single(self) -> None:
        rng, shop = self.rngs["single"], self.shop
        profile = shop.profiles[rng.choice(shop.active)]
        event = profile.purchase(shop.event_id("p"), datetime.now(UTC) - timedelta(seconds=1), rng)
        body = orjson.dumps(event)
        key = f"soak-{event['event_id']}" if rng.random() < KEYED_SHARE else None
        headers = {"idempotency-key": key} if key else None
        response = await self._post_purchase("single", body, expect(201), headers)
        if response is not None:
            shop.sent.append(body)
            shop.purchases.append(
                Purchase(event["event_id"], profile.customer_id, profile.store, event["amount"])
            )
            if key:
                shop.replays.append((key, body, response.content))

    async def duplicate(self) -> None:
        rng, shop = self.rngs["duplicate"], self.shop
        if not shop.sent:
            return

        def check(response: httpx.Response) -> str:
            if response.status_code != 200:
                return f"HTTP {response.status_code}{problem_code(response)}"
            status = response.json().get("status")
            return "" if status == "duplicate" else f"status {status}"

        await self._post_purchase("duplicate", rng.choice(shop.sent), check)

    async def retry(self) -> None:
        if not self.shop.replays:
            return
        key, body, first = self.shop.replays.popleft()

        def check(response: httpx.Response) -> str:
            if response.status_code != 201:
                return f"HTTP {response.status_code}{problem_code(response)}"
            if response.headers.get("idempotent-replayed") != "true":
                return "not replayed"
            return "" if response.content == first else "replay differs"

        await self._post_purchase("retry", body, check, {"idempotency-key": key})

    async def refund(self) -> None:
        rng, shop = self.rngs["refund"], self.shop
        if not shop.purchases:
            return
        purchase: Purchase = take(shop.purchases, rng)
        event = {
            "event_id": shop.event_id("r"),
            "customer_id": purchase.customer_id,
            "store_id": purchase.store,
            "occurred_at": iso(datetime.now(UTC) - timedelta(seconds=1)),
            "amount": purchase.amount,
            "currency": "EUR",
            "kind": "refund",
            "refunds_event_id": purchase.event_id,
        }
        await self._post_purchase("refund", orjson.dumps(event), expect(201))

    async def come_back(self) -> None:
        rng, shop = self.rngs["return"], self.shop
        if not shop.returners:
            return
        customer_id: str = take(shop.returners, rng)
        profile = shop.profiles[customer_id]
        event = profile.purchase(shop.event_id("b"), datetime.now(UTC) - timedelta(seconds=1), rng)
        if await self._post_purchase("return", orjson.dumps(event), expect(201)):
            shop.active.append(customer_id)

    # --- reads ---

    async def customer(self) -> None:
        rng = self.rngs["customer"]
        customer_id = rng.choice(self.shop.known)
        client = self.clients["ops"]
        await self.recorder.call("customer", client, "GET", f"/v1/customers/{customer_id}", OK)

    async def alerts(self) -> None:
        rng = self.rngs["alerts"]
        variants: list[list[tuple[str, str | int]]] = [
            [("status", "open"), ("limit", 50)],
            [("status", "open"), ("status", "acknowledged"), ("sort", "-opened_at")],
            [("store_id", rng.choice(STORES)), ("limit", 50)],
            [("severity", "high"), ("rule", "inactivity"), ("limit", 100)],
            [("customer_id", rng.choice(self.shop.known))],
        ]
        params = rng.choice(variants)
        for _ in range(3):
            response = await self.recorder.call(
                "alerts", self.clients["ops"], "GET", "/v1/alerts", OK, params=params
            )
            if response is None:
                return
            page = response.json()
            if not page.get("has_more"):
                return
            params = [*params, ("cursor", page["next_cursor"])]

    async def feed_etag(self) -> None:
        etag, cursor = self._etag
        headers = {"if-none-match": etag} if etag else None
        response = await self.recorder.call(
            "feed-etag",
            self.clients["ops"],
            "GET",
            "/v1/alerts/changes",
            expect(200, 304),
            params={"after": cursor, "limit": 1000},
            headers=headers,
        )
        if response is not None and response.status_code == 200:
            self._etag = (response.headers.get("etag", ""), response.json()["next_cursor"])

    async def follow_feed(self) -> None:
        """The long poll, until told to stop: every alert change, for the webhook count."""
        shop, feed = self.shop, self.feed
        while not self.stopping.is_set():
            response = await self.recorder.call(
                LONG_POLL,
                self.clients["ops"],
                "GET",
                "/v1/alerts/changes",
                OK,
                params={"after": feed.cursor, "limit": 1000, "wait": FEED_WAIT_S},
            )
            if response is None:
                await asyncio.sleep(1.0)
                continue
            page = response.json()
            for event in page["events"]:
                kind, alert_id = event["type"], int(event["alert_id"])
                feed.changes[(kind, alert_id)] += 1
                feed.by_type[kind] += 1
                if kind == "alert.opened":
                    feed.opened_at.append(datetime.fromisoformat(event["occurred_at"]).timestamp())
                    if event["customer_id"] in shop.lost:
                        shop.ops_queue.append(alert_id)
            feed.cursor = page["next_cursor"]

    async def ops(self) -> None:
        rng, shop = self.rngs["ops"], self.shop
        if not shop.ops_queue:
            return
        alert_id = shop.ops_queue.popleft()
        draw = rng.random()
        body: dict[str, Any]
        if draw < 0.4:
            action, body = "acknowledge", {"by": "soak-ops"}
        elif draw < 0.7:
            until = datetime.now(UTC) + timedelta(seconds=rng.uniform(*SNOOZE_S))
            action, body = "snooze", {"until": until.isoformat()}
        else:
            action = "resolve"
            body = {"outcome": "lost", "reason": "competitor_offer", "channel": "phone"}
        url = f"/v1/alerts/{alert_id}/{action}"
        await self.recorder.call("ops", self.clients["ops"], "POST", url, OK, json=body)

    async def health(self) -> None:
        """No database, no auth: its latency is the server's event loop (and the CPU) lag."""
        await self.recorder.call("health", self.clients["ops"], "GET", "/healthz", OK)

    # --- pacing ---

    async def paced(self, kind: Kind, stop_at: float) -> None:
        """Poisson arrivals at the kind's rate, at most `in_flight` at once; a schedule more
        than 1 s behind is reset, so a stalled server is not flooded when it recovers."""
        rate = kind.rate * self.plan.scale
        rng = random.Random(f"{self.plan.seed}-{kind.name}-arrivals")
        action = self.actions[kind.name]
        slots = asyncio.Semaphore(kind.in_flight)
        tasks: set[asyncio.Task[None]] = set()
        next_at = time.perf_counter()
        while True:
            next_at += rng.expovariate(rate)
            now = time.perf_counter()
            if next_at >= stop_at:
                break
            if next_at > now:
                await asyncio.sleep(next_at - now)
            elif now - next_at > 1.0:
                next_at = now
            await slots.acquire()
            task = asyncio.create_task(action())
            tasks.add(task)

            def done(task: asyncio.Task[None]) -> None:
                slots.release()
                tasks.discard(task)

            task.add_done_callback(done)
        await asyncio.gather(*tasks)


# --- monitoring -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    at: float  # perf_counter
    rss_mib: float
    server_cpu_s: float
    bench_cpu_s: float
    machine_cpu_s: float


def probe(pid: int) -> Probe:
    return Probe(
        time.perf_counter(),
        rss_mib(pid),
        proc_cpu_seconds(pid),
        time.process_time(),
        machine_cpu_seconds(),
    )


async def watch(pid: int, every: float, probes: list[Probe], stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        probes.append(probe(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every)


# --- the soak ---------------------------------------------------------------------------


@dataclass
class Seeding:
    customers: int = 0
    events: int = 0
    seconds: float = 0.0


@dataclass
class Outcome:
    plan: Plan
    started_at: str
    seeding: Seeding
    recorder: Recorder
    probes: list[Probe]
    feed: FeedLog
    deliveries: Deliveries
    measure_start: float  # perf_counter
    measure_end: float
    measure_start_epoch: float
    drain_s: float
    drained: bool
    metrics: dict[str, float]
    log_lines: dict[str, int]
    log_examples: list[str]
    database_mib: float | None
    shop_sizes: dict[str, int]
    # --memory-probe: (monotonic s, Python heap MiB (0: not traced), SQLite MiB)
    heap_probes: list[tuple[float, float, float]] = field(default_factory=list)


async def seed(shop: Shop, clients: dict[str, httpx.AsyncClient], plan: Plan) -> Seeding:
    """Load the starting customers' histories, whole customers per batch."""
    rng = random.Random(f"{plan.seed}-seed")
    bodies: list[tuple[bytes, int, list[tuple[str, bool]]]] = []
    events: list[dict[str, Any]] = []
    members: list[tuple[str, bool]] = []
    for _ in range(plan.customers):
        lapsed = rng.random() < LAPSED_SHARE
        profile, history = shop.new_customer(rng, "c", lapsed)
        if len(events) + len(history) > MAX_BATCH_EVENTS:
            bodies.append((orjson.dumps({"events": events}), len(events), members))
            events, members = [], []
        events += history
        members.append((profile.customer_id, lapsed))
    if events:
        bodies.append((orjson.dumps({"events": events}), len(events), members))
    queue = iter(bodies)
    failures: list[str] = []

    async def worker() -> None:
        for body, size, batch_members in queue:
            response = await clients["till"].post("/v1/purchases/batch", content=body)
            answer = response.json() if response.status_code == 200 else {}
            if answer.get("accepted") != size:
                failures.append(f"HTTP {response.status_code} {response.text[:300]}")
                continue
            for customer_id, lapsed in batch_members:
                shop.stored(customer_id, lapsed, rng)

    started = time.perf_counter()
    await asyncio.gather(worker(), worker())
    if failures:
        raise RuntimeError(f"seeding failed ({len(failures)} batches): {failures[0]}")
    return Seeding(
        plan.customers, sum(size for _, size, _ in bodies), time.perf_counter() - started
    )


def api_client(server: Server, role: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers={
            "authorization": f"Bearer {server.keys[role]}",
            "content-type": "application/json",
        },
        limits=httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        ),
        timeout=REQUEST_TIMEOUT_S,
        trust_env=False,  # never a proxy: straight to 127.0.0.1
    )


async def register_endpoint(client: httpx.AsyncClient, url: str) -> str:
    response = await client.post("/v1/webhooks/endpoints", json={"url": url, "enabled": True})
    if response.status_code != 201:
        raise RuntimeError(f"creating the endpoint: HTTP {response.status_code} {response.text}")
    secret: str = response.json()["secret"]
    return secret


async def drain(traffic: Traffic, deliveries: Deliveries, within: float) -> tuple[float, bool]:
    """Wait until every change the feed saw has arrived as a webhook (seconds, whether)."""
    started = time.perf_counter()
    while time.perf_counter() - started < within:
        await asyncio.sleep(0.5)
        retried = deliveries.messages.issuperset(deliveries.refused)
        if retried and not traffic.feed.changes - deliveries.received:
            return time.perf_counter() - started, True
    return time.perf_counter() - started, False


async def scrape_metrics(server: Server) -> dict[str, float]:
    """The service's own counters: sweeps, customers swept, webhook attempts by result."""
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=10) as client:
        text = (await client.get("/metrics")).text
    wanted = {
        "radar_sweep_customers_total": "swept_customers",
        "radar_sweep_duration_seconds_count": "sweeps",
        "radar_sweep_duration_seconds_sum": "sweep_seconds",
        "radar_webhook_attempts_total": "webhook_attempts",
    }
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = wanted.get(sample.name)
            if name is None:
                continue
            result = sample.labels.get("result")
            found[f"{name}_{result}" if result else name] = sample.value
    return found


def read_log(path: Path) -> tuple[dict[str, int], list[str]]:
    """Counts of the server log's ERROR / WARNING / Traceback lines, and a few of them."""
    counts: Counter[str] = Counter()
    examples: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        for word in ("ERROR", "WARNING", "Traceback"):
            if word in line:
                counts[word] += 1
                if word != "WARNING" and len(examples) < 5:
                    examples.append(line[:400])
    return dict(counts), examples


def database_size_mib(database_url: str) -> float | None:
    if not database_url.startswith("sqlite:///"):
        return None
    path = Path(database_url.removeprefix("sqlite:///"))
    files = [path, path.with_name(path.name + "-wal")]
    return sum(f.stat().st_size for f in files if f.exists()) / 2**20


async def soak(plan: Plan, postgres_url: str, workdir: Path) -> Outcome:
    if plan.database == "postgres":
        await reset_postgres(postgres_url)
        database_url = postgres_url
    else:
        database_url = f"sqlite:///{workdir}/radar.db"
    print(f"starting the server ({plan.database}) ...", flush=True)
    probe_file = workdir / "memory.csv" if plan.memory_probe else None
    server = await asyncio.to_thread(
        start_server, database_url, workdir, probe_file, plan.tracemalloc
    )
    try:
        await wait_ready(server)
        outcome = await soak_server(plan, server, database_url)
    finally:
        await asyncio.to_thread(stop_server, server)
    if probe_file is not None and probe_file.exists():
        for line in probe_file.read_text().splitlines():
            at, traced, sqlite = line.split(",")
            outcome.heap_probes.append((float(at), int(traced) / 2**20, int(sqlite) / 2**20))
    return outcome


async def soak_server(plan: Plan, server: Server, database_url: str) -> Outcome:
    started_at = datetime.now(UTC)
    shop = Shop(started_at.date())
    recorder = Recorder()
    async with (
        Receiver(plan.webhook_failures, plan.seed) as receiver,
        api_client(server, "till", 48) as till,
        api_client(server, "ops", 24) as ops,
        api_client(server, "admin", 2) as admin,
    ):
        receiver.verifier = Webhook(await register_endpoint(admin, receiver.url))
        clients = {"till": till, "ops": ops, "admin": admin}
        print(f"seeding {plan.customers:,} customers ...", flush=True)
        seeding = await seed(shop, clients, plan)
        print(
            f"  {seeding.events:,} events in {seeding.seconds:.1f} s "
            f"({seeding.events / seeding.seconds:,.0f} events/s)",
            flush=True,
        )
        traffic = Traffic(plan, shop, recorder, clients)
        probes: list[Probe] = []
        watching = asyncio.Event()
        watcher = asyncio.create_task(
            watch(server.process.pid, plan.rss_interval_s, probes, watching)
        )
        follower = asyncio.create_task(traffic.follow_feed())
        begin = time.perf_counter()
        measure_start = begin + plan.warmup_s
        stop_at = begin + plan.duration_s
        measure_start_epoch = time.time() + plan.warmup_s
        print(
            f"mixed traffic for {plan.duration_s:g} s ({plan.warmup_s:g} s warm-up), "
            f"scale {plan.scale:g} ...",
            flush=True,
        )
        progress = asyncio.create_task(report_progress(recorder, probes, begin, plan))
        await asyncio.gather(
            *(traffic.paced(kind, stop_at) for kind in KINDS if kind.rate > 0),
        )
        measure_end = time.perf_counter()
        probes.append(probe(server.process.pid))
        progress.cancel()
        print("traffic stopped; waiting for the last webhooks ...", flush=True)
        drain_s, drained = await drain(traffic, receiver.deliveries, plan.drain_s)
        traffic.stopping.set()
        watching.set()
        await asyncio.gather(follower, watcher, return_exceptions=True)
        metrics = await scrape_metrics(server)
    log_lines, log_examples = read_log(server.log_path)
    return Outcome(
        plan=plan,
        started_at=started_at.isoformat(),
        seeding=seeding,
        recorder=recorder,
        probes=probes,
        feed=traffic.feed,
        deliveries=receiver.deliveries,
        measure_start=measure_start,
        measure_end=min(measure_end, stop_at),
        measure_start_epoch=measure_start_epoch,
        drain_s=drain_s,
        drained=drained,
        metrics=metrics,
        log_lines=log_lines,
        log_examples=log_examples,
        database_mib=database_size_mib(database_url),
        shop_sizes={
            "customers": len(shop.known),
            "active": len(shop.active),
            "returners_left": len(shop.returners),
            "lost": len(shop.lost),
            "ops_backlog": len(shop.ops_queue),
        },
    )


async def report_progress(
    recorder: Recorder, probes: list[Probe], begin: float, plan: Plan
) -> None:
    """A line per window while the soak runs."""
    seen = 0
    while True:
        await asyncio.sleep(plan.window_s)
        now = time.perf_counter()
        recent = recorder.samples[seen:]
        seen += len(recent)
        errors = sum(1 for s in recent if s[3])
        events = sum(s[4] for s in recent)
        latencies = [s[2] - s[1] for s in recent if not s[3] and s[0] != KIND_INDEX[LONG_POLL]]
        rss = probes[-1].rss_mib if probes else float("nan")
        print(
            f"  t={now - begin:5.0f} s  {len(recent) / plan.window_s:6.1f} req/s  "
            f"{events / plan.window_s:7.0f} events/s  p99 {percentile(latencies, 99) * 1000:6.1f} "
            f"ms  errors {errors}  RSS {rss:.0f} MiB",
            flush=True,
        )


# --- numbers ----------------------------------------------------------------------------


@dataclass
class KindStats:
    kind: str
    title: str
    offered_per_s: float
    requests: int
    per_s: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def kind_stats(samples: Sequence[Sample], span: float, plan: Plan) -> list[KindStats]:
    stats = []
    for index, kind in enumerate(KINDS):
        mine = [s for s in samples if s[0] == index]
        ok = [s[2] - s[1] for s in mine if not s[3]]
        stats.append(
            KindStats(
                kind=kind.name,
                title=kind.title,
                offered_per_s=round(kind.rate * plan.scale, 2) if kind.rate else float("nan"),
                requests=len(mine),
                per_s=round(len(mine) / span, 2),
                events_per_s=round(sum(s[4] for s in mine) / span, 1),
                p50_ms=round(percentile(ok, 50) * 1000, 2),
                p99_ms=round(percentile(ok, 99) * 1000, 2),
                errors=sum(1 for s in mine if s[3]),
            )
        )
    return stats


def overall_stats(samples: Sequence[Sample], span: float) -> KindStats:
    ok = [s[2] - s[1] for s in samples if not s[3] and s[0] != KIND_INDEX[LONG_POLL]]
    return KindStats(
        kind="all",
        title="all (latency without the long poll)",
        offered_per_s=float("nan"),
        requests=len(samples),
        per_s=round(len(samples) / span, 2),
        events_per_s=round(sum(s[4] for s in samples) / span, 1),
        p50_ms=round(percentile(ok, 50) * 1000, 2),
        p99_ms=round(percentile(ok, 99) * 1000, 2),
        errors=sum(1 for s in samples if s[3]),
    )


@dataclass
class Window:
    index: int
    start_s: float  # from the end of the warm-up
    seconds: float
    overall: KindStats
    kinds: list[KindStats]
    server_cpu: float  # % of one core
    bench_cpu: float
    other_cpu: float
    rss_mib: float  # at the window's end


def probe_at(probes: Sequence[Probe], moment: float) -> Probe:
    """The probe taken closest to `moment`."""
    times = [p.at for p in probes]
    index = bisect.bisect_left(times, moment)
    candidates = probes[max(index - 1, 0) : index + 1]
    return min(candidates, key=lambda p: abs(p.at - moment))


def windows(outcome: Outcome, measured: Sequence[Sample]) -> list[Window]:
    plan = outcome.plan
    found = []
    start = outcome.measure_start
    count = max(1, round((outcome.measure_end - start) / plan.window_s))
    width = (outcome.measure_end - start) / count
    for index in range(count):
        low, high = start + index * width, start + (index + 1) * width
        mine = [s for s in measured if low <= s[2] < high or (index == count - 1 and s[2] == high)]
        first, last = probe_at(outcome.probes, low), probe_at(outcome.probes, high)
        wall = max(last.at - first.at, 1e-9)
        server = (last.server_cpu_s - first.server_cpu_s) / wall * 100
        bench = (last.bench_cpu_s - first.bench_cpu_s) / wall * 100
        machine = (last.machine_cpu_s - first.machine_cpu_s) / wall * 100
        found.append(
            Window(
                index=index + 1,
                start_s=round(low - start, 1),
                seconds=round(width, 1),
                overall=overall_stats(mine, width),
                kinds=kind_stats(mine, width, plan),
                server_cpu=round(server, 1),
                bench_cpu=round(bench, 1),
                other_cpu=round(max(machine - server - bench, 0.0), 1),
                rss_mib=round(last.rss_mib, 1),
            )
        )
    return found


@dataclass
class Memory:
    after_warmup_mib: float
    end_mib: float
    growth_mib: float
    max_mib: float
    slope_mib_per_min: float  # over the measured part
    second_half_slope_mib_per_min: float
    flat: bool
    samples: list[tuple[float, float]]  # (s from the end of the warm-up, MiB)
    # --memory-probe: what SQLite allocated, and (--tracemalloc) the Python heap: after the
    # warm-up, at the end, slope over the second half
    sqlite: tuple[float, float, float] | None = None
    python_heap: tuple[float, float, float] | None = None


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    if len(points) < 3:
        return float("nan")
    fit = statistics.linear_regression([t / 60 for t, _ in points], [m for _, m in points])
    return round(fit.slope, 3)


def memory(outcome: Outcome) -> Memory:
    start, end = outcome.measure_start, outcome.measure_end
    series = [(p.at - start, p.rss_mib) for p in outcome.probes if start <= p.at <= end + 1]
    after = probe_at(outcome.probes, start).rss_mib
    final = probe_at(outcome.probes, end).rss_mib
    middle = (end - start) / 2
    second_half = slope([point for point in series if point[0] >= middle])
    found = Memory(
        after_warmup_mib=round(after, 1),
        end_mib=round(final, 1),
        growth_mib=round(final - after, 1),
        max_mib=round(max((m for _, m in series), default=float("nan")), 1),
        slope_mib_per_min=slope(series),
        second_half_slope_mib_per_min=second_half,
        flat=second_half < FLAT_MIB_PER_MIN,
        samples=[(round(t, 1), round(m, 1)) for t, m in series],
    )
    probes = [p for p in outcome.heap_probes if start <= p[0] <= end + 3]
    for column, name in ((1, "python_heap"), (2, "sqlite")):
        points = [(p[0] - start, p[column]) for p in probes]
        if len(points) >= 3 and any(mib for _, mib in points):
            second = slope([point for point in points if point[0] >= middle])
            setattr(found, name, (round(points[0][1], 1), round(points[-1][1], 1), second))
    return found


@dataclass
class Webhooks:
    changes: int  # alert changes in the feed, whole run
    changes_by_type: dict[str, int]
    delivered: int  # unique messages answered 200
    delivered_by_type: dict[str, int]
    missing: int  # feed changes without their webhook
    missing_by_type: dict[str, int]
    duplicates: int
    refused_then_retried: str
    bad_signatures: int
    unreadable: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    opened_measured: int  # alert.opened in the feed during the measured part
    drained_in_s: float
    drained: bool


def webhooks(outcome: Outcome) -> Webhooks:
    feed, seen = outcome.feed, outcome.deliveries
    missing = feed.changes - seen.received
    missing_by_type: Counter[str] = Counter()
    for (kind, _), count in missing.items():
        missing_by_type[kind] += count
    for message_id, kind in seen.refused.items():  # the feed has no customer.recovered
        if message_id not in seen.messages and kind == "customer.recovered":
            missing_by_type[kind] += 1
    end_epoch = outcome.measure_start_epoch + (outcome.measure_end - outcome.measure_start)
    return Webhooks(
        changes=feed.changes.total(),
        changes_by_type=dict(sorted(feed.by_type.items())),
        delivered=len(seen.messages),
        delivered_by_type=dict(sorted(seen.by_type.items())),
        missing=missing_by_type.total(),
        missing_by_type=dict(missing_by_type),
        duplicates=seen.duplicates,
        refused_then_retried=f"{len(seen.messages & seen.refused.keys())}/{len(seen.refused)}",
        bad_signatures=seen.bad_signatures,
        unreadable=seen.unreadable,
        lag_p50_ms=round(percentile(seen.lags, 50) * 1000, 1),
        lag_p99_ms=round(percentile(seen.lags, 99) * 1000, 1),
        lag_max_ms=round(max(seen.lags, default=float("nan")) * 1000, 1),
        opened_measured=sum(
            1 for at in feed.opened_at if outcome.measure_start_epoch <= at < end_epoch
        ),
        drained_in_s=round(outcome.drain_s, 1),
        drained=outcome.drained,
    )


@dataclass
class Drift:
    kind: str
    first_per_s: float
    last_per_s: float
    per_s_ratio: float
    first_p99_ms: float
    last_p99_ms: float
    p99_ratio: float


def ratio(last: float, first: float) -> float:
    return round(last / first, 2) if first > 0 else float("nan")


def drift(found: Sequence[Window]) -> list[Drift]:
    first, last = found[0], found[-1]
    pairs = [(first.overall, last.overall)]
    pairs += list(zip(first.kinds, last.kinds, strict=True))
    return [
        Drift(
            kind=a.kind,
            first_per_s=a.per_s,
            last_per_s=b.per_s,
            per_s_ratio=ratio(b.per_s, a.per_s),
            first_p99_ms=a.p99_ms,
            last_p99_ms=b.p99_ms,
            p99_ratio=ratio(b.p99_ms, a.p99_ms),
        )
        for a, b in pairs
    ]


@dataclass
class Report:
    plan: Plan
    started_at: str
    cores: int | None
    python: str
    seeding: Seeding
    measured_s: float
    kinds: list[KindStats]
    overall: KindStats
    errors_measured: int
    errors_all: int  # seeding, warm-up and drain included
    error_breakdown: list[dict[str, Any]]
    windows: list[Window]
    window_medians: dict[str, float]
    drift: list[Drift]
    webhooks: Webhooks
    memory: Memory
    cpu: dict[str, float]
    metrics: dict[str, float]
    server_log: dict[str, int]
    server_log_examples: list[str]
    database_mib: float | None
    shop: dict[str, int]
    verdicts: dict[str, str]


def build_report(outcome: Outcome) -> Report:
    recorder, plan = outcome.recorder, outcome.plan
    span = outcome.measure_end - outcome.measure_start
    measured = [s for s in recorder.samples if outcome.measure_start <= s[2] <= outcome.measure_end]
    found = windows(outcome, measured)
    hooks = webhooks(outcome)
    mem = memory(outcome)
    errors_all = sum(recorder.errors.values()) + hooks.missing + hooks.bad_signatures
    first, last = probe_at(outcome.probes, outcome.measure_start), outcome.probes[-1]
    wall = max(last.at - first.at, 1e-9)
    server = (last.server_cpu_s - first.server_cpu_s) / wall * 100
    bench = (last.bench_cpu_s - first.bench_cpu_s) / wall * 100
    machine = (last.machine_cpu_s - first.machine_cpu_s) / wall * 100
    verdicts = {
        "errors": "PASS" if errors_all == 0 else f"MISS ({errors_all})",
        "memory": (
            f"{'PASS' if mem.flat else 'MISS'} (second-half slope "
            f"{mem.second_half_slope_mib_per_min:+.2f} MiB/min vs < {FLAT_MIB_PER_MIN:g})"
        ),
    }
    return Report(
        plan=plan,
        started_at=outcome.started_at,
        cores=os.cpu_count(),
        python=platform.python_version(),
        seeding=outcome.seeding,
        measured_s=round(span, 1),
        kinds=kind_stats(measured, span, plan),
        overall=overall_stats(measured, span),
        errors_measured=sum(1 for s in measured if s[3]),
        errors_all=errors_all,
        error_breakdown=[
            {"kind": kind, "error": error, "count": count, "examples": recorder.examples[key]}
            for key, count in recorder.errors.most_common()
            for kind, error in [key]
        ],
        windows=found,
        window_medians={
            "requests_per_s": round(statistics.median(w.overall.per_s for w in found), 2),
            "events_per_s": round(statistics.median(w.overall.events_per_s for w in found), 1),
            "p50_ms": round(statistics.median(w.overall.p50_ms for w in found), 2),
            "p99_ms": round(statistics.median(w.overall.p99_ms for w in found), 2),
        },
        drift=drift(found),
        webhooks=hooks,
        memory=mem,
        cpu={
            "server": round(server, 1),
            "bench": round(bench, 1),
            "other": round(max(machine - server - bench, 0.0), 1),
        },
        metrics=outcome.metrics,
        server_log=outcome.log_lines,
        server_log_examples=outcome.log_examples,
        database_mib=None if outcome.database_mib is None else round(outcome.database_mib, 1),
        shop=outcome.shop_sizes,
        verdicts=verdicts,
    )


# --- printing ---------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def number(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"  # NaN: nothing measured


def print_report(report: Report, elapsed: float) -> None:
    plan = report.plan
    print()
    print(
        f"Soak, {report.started_at[:16].replace('T', ' ')} UTC, {plan.database}, "
        f"{report.cores} cores, Python {report.python}; {plan.duration_s:g} s of mixed traffic "
        f"({plan.warmup_s:g} s warm-up, {report.measured_s:g} s measured, windows of "
        f"{plan.window_s:g} s), seed {plan.seed}, scale {plan.scale:g}"
    )
    seeding = report.seeding
    print(
        f"Seeded {seeding.customers:,} customers ({seeding.events:,} events) in "
        f"{seeding.seconds:.1f} s; at the end {report.shop['customers']:,} customers"
        + (f", database {report.database_mib:,.0f} MiB" if report.database_mib else "")
    )
    print()
    rows = []
    for stats in [*report.kinds, report.overall]:
        rows.append(
            [
                stats.kind,
                stats.title,
                number(stats.offered_per_s, 1),
                number(stats.per_s, 1),
                number(stats.events_per_s, 0) if stats.events_per_s else "",
                number(stats.p50_ms, 1),
                number(stats.p99_ms, 1),
                str(stats.errors),
            ]
        )
    headers = ["kind", "request", "offered/s", "req/s", "events/s", "p50 ms", "p99 ms", "errors"]
    table(headers, rows)
    cpu = report.cpu
    print(
        f"CPU over the measured part, % of one core: server {cpu['server']:.0f}, this process "
        f"(load + receiver) {cpu['bench']:.0f}, rest of the machine {cpu['other']:.0f}"
    )
    print()
    print("Errors: " + (report.verdicts["errors"]))
    if report.error_breakdown:
        for entry in report.error_breakdown:
            print(f"  {entry['count']:>6}  {entry['kind']:<10} {entry['error']}")
            for example in entry["examples"][:2]:
                print(f"          e.g. {example[:300]}")
    hooks = report.webhooks
    if hooks.missing or hooks.bad_signatures:
        print(f"  webhooks: {hooks.missing} missing, {hooks.bad_signatures} bad signatures")
    if report.server_log:
        print(f"  server log lines: {report.server_log}")
        for line in report.server_log_examples[:3]:
            print(f"    {line[:300]}")
    print()
    print(
        f"Webhooks (whole run): {hooks.changes:,} alert changes in the feed, "
        f"{hooks.delivered:,} messages delivered (unique), {hooks.missing} missing "
        f"{'' if hooks.drained else '(NOT drained) '}after {hooks.drained_in_s:g} s of drain, "
        f"{hooks.duplicates} duplicates, {hooks.bad_signatures} bad signatures; "
        f"503 then retried: {hooks.refused_then_retried}; commit-to-arrival lag p50 "
        f"{hooks.lag_p50_ms:.0f} / p99 {hooks.lag_p99_ms:.0f} / max {hooks.lag_max_ms:.0f} ms "
        "(first attempts)"
    )
    types = sorted(set(hooks.changes_by_type) | set(hooks.delivered_by_type))
    table(
        ["type", "changes in feed", "delivered", "missing"],
        [
            [
                kind,
                str(hooks.changes_by_type.get(kind, "-")),
                str(hooks.delivered_by_type.get(kind, 0)),
                str(hooks.missing_by_type.get(kind, 0)),
            ]
            for kind in types
        ],
    )
    print(
        f"Alerts opened during the measured part: {hooks.opened_measured:,} "
        f"({hooks.opened_measured / report.measured_s * 60:,.0f}/min); alert.opened delivered "
        f"over the run: {hooks.delivered_by_type.get('alert.opened', 0):,} of "
        f"{hooks.changes_by_type.get('alert.opened', 0):,} opened"
    )
    metrics = report.metrics
    if metrics:
        print(
            f"Service counters: {metrics.get('sweeps', 0):,.0f} sweeps, "
            f"{metrics.get('swept_customers', 0):,.0f} customers swept, "
            f"{metrics.get('sweep_seconds', 0):,.1f} s sweeping; webhook attempts "
            + ", ".join(
                f"{name.removeprefix('webhook_attempts_')} {value:,.0f}"
                for name, value in sorted(metrics.items())
                if name.startswith("webhook_attempts_")
            )
        )
    print()
    mem = report.memory
    print(
        f"Server RSS: {mem.after_warmup_mib:.0f} MiB after the warm-up, {mem.end_mib:.0f} MiB at "
        f"the end ({mem.growth_mib:+.1f} MiB), max {mem.max_mib:.0f}; slope "
        f"{mem.slope_mib_per_min:+.2f} MiB/min over the measured part, "
        f"{mem.second_half_slope_mib_per_min:+.2f} MiB/min over its second half: "
        + report.verdicts["memory"]
    )
    for title, probed in (
        ("SQLite's allocations (sqlite3_memory_used)", mem.sqlite),
        ("Python heap (tracemalloc)", mem.python_heap),
    ):
        if probed is not None:
            after, final, second = probed
            print(
                f"Server {title}: {after:.0f} MiB after the warm-up, {final:.0f} MiB at the end "
                f"({final - after:+.1f} MiB), slope {second:+.2f} MiB/min over the second half"
            )
    print()
    print("Windows (overall; latency without the long poll):")
    table(
        [
            "#",
            "from s",
            "req/s",
            "events/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "cpu% srv/me/oth",
            "RSS",
        ],
        [
            [
                str(w.index),
                f"{w.start_s:.0f}",
                number(w.overall.per_s),
                number(w.overall.events_per_s, 0),
                number(w.overall.p50_ms),
                number(w.overall.p99_ms),
                str(w.overall.errors),
                f"{w.server_cpu:.0f}/{w.bench_cpu:.0f}/{w.other_cpu:.0f}",
                f"{w.rss_mib:.0f}",
            ]
            for w in report.windows
        ],
    )
    medians = report.window_medians
    print(
        f"Medians of the windows: {medians['requests_per_s']:,.1f} req/s, "
        f"{medians['events_per_s']:,.0f} events/s, p50 {medians['p50_ms']:.1f} ms, "
        f"p99 {medians['p99_ms']:.1f} ms"
    )
    print()
    print("Drift, last window against the first:")
    table(
        ["kind", "req/s first", "last", "ratio", "p99 ms first", "last", "ratio"],
        [
            [
                d.kind,
                number(d.first_per_s),
                number(d.last_per_s),
                number(d.per_s_ratio, 2),
                number(d.first_p99_ms),
                number(d.last_p99_ms),
                number(d.p99_ratio, 2),
            ]
            for d in report.drift
        ],
    )
    print()
    print(
        f"Targets: 0 errors: {report.verdicts['errors']}; flat memory: {report.verdicts['memory']}"
    )
    print(f"total runtime {elapsed:.0f} s", flush=True)


def dump_json(path: Path, report: Report, elapsed: float) -> None:
    document = {**asdict(report), "total_runtime_s": round(elapsed, 1)}
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


# --- command line -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 30 s (5 s warm-up, 5 s windows), 1,000 customers",
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds, default: 600")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds, default: 60")
    parser.add_argument("--window", type=float, default=60.0, help="seconds, default: 60")
    parser.add_argument("--customers", type=int, default=5000, help="seeded, default: 5,000")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every rate")
    parser.add_argument("--seed", type=int, default=1, help="default: 1")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("RADAR_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="wiped before the run! default: $RADAR_BENCH_POSTGRES_URL or " + DEFAULT_POSTGRES_URL,
    )
    parser.add_argument(
        "--rss-interval", type=float, default=2.0, help="seconds between RSS samples"
    )
    parser.add_argument(
        "--drain", type=float, default=60.0, help="seconds to wait for the last webhooks"
    )
    parser.add_argument(
        "--webhook-failures",
        type=float,
        default=0.02,
        help="share of messages whose first attempt gets a 503 (default: 0.02)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the working directory (server log, SQLite)"
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="with --memory-probe: also the server's Python heap (tracemalloc; much slower)",
    )
    parser.add_argument(
        "--memory-probe",
        action="store_true",
        help="sample what SQLite (and with --tracemalloc, Python) allocated in the server",
    )
    return parser.parse_args(argv)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so the server is stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    quick = args.quick
    plan = Plan(
        database=args.database,
        duration_s=30.0 if quick else args.duration,
        warmup_s=5.0 if quick else args.warmup,
        window_s=5.0 if quick else args.window,
        customers=1000 if quick else args.customers,
        scale=args.scale,
        seed=args.seed,
        rss_interval_s=1.0 if quick else args.rss_interval,
        drain_s=args.drain,
        webhook_failures=args.webhook_failures,
        keep=args.keep,
        memory_probe=args.memory_probe or args.tracemalloc,
        tracemalloc=args.tracemalloc,
    )
    if plan.measured_s < plan.window_s or plan.scale <= 0:
        raise SystemExit("--duration must exceed --warmup by at least one --window; --scale > 0")
    print("$ " + " ".join([Path(sys.executable).name, *sys.argv]), flush=True)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="radar-soak-"))
    try:
        outcome = uvloop.run(soak(plan, args.postgres_url, workdir))
    except KeyboardInterrupt:
        print("interrupted: server stopped, nothing reported", file=sys.stderr)
        return 130
    finally:
        if plan.keep:
            print(f"kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = build_report(outcome)
    elapsed = time.perf_counter() - started
    print_report(report, elapsed)
    if args.json is not None:
        dump_json(args.json, report, elapsed)
    return 0 if report.errors_all == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
