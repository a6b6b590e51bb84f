"""`radar demo`: a synthetic chain streamed through a live service, alerts printed as they open.

The service runs in this process (uvicorn on 127.0.0.1, a fresh SQLite file), its evaluation
clock on simulated time, so the dashboard at /ui/ works while the demo runs. The chain's first
`--history-days` are loaded at once, in whole customers, as a business loads its history
before going live; the last `--days` are then streamed a simulated day at a time through the
batch endpoint, paced to last about `--duration` seconds, with the sweeper run at the end of
each simulated day and the alert change feed followed and printed. The summary compares the
alerts with the chain's ground truth.

The population model is not refitted: on a few thousand regular customers who rarely drop
out, the Pareto/NBD fit runs for minutes, so the scores use the service's published prior.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import tempfile
import time as clock_time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import httpx
import uvicorn
from fastapi import FastAPI

from app.alerts.service import sweep
from app.keys.service import create_key
from app.kit.auth import Scope
from app.kit.db import unit_of_work
from app.kit.settings import Settings
from app.main import create_app
from app.policy import service as policies
from app.policy.schemas import RULES
from app.synthetic.chain import (
    DEFECTIONS,
    RULES_FOR,
    Assessment,
    Chain,
    ChainSpec,
    OpenedAlert,
    Truth,
    assess,
    generate,
    local_day,
)

HOST = "127.0.0.1"
BATCH = 1000  # events per request: the service's limit


@dataclass(frozen=True, slots=True)
class DemoOptions:
    customers: int = 2000
    days: int = 120  # streamed live
    history_days: int = 240  # loaded before going live
    duration: float = 60.0  # target wall-clock seconds for the whole run
    seed: int = 7
    port: int = 8000  # 0: any free port
    keep_running: bool = False
    quiet: bool = False  # no line per alert


class SimulatedClock:
    """The service's evaluation time: the end of the simulated day being streamed."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass(slots=True)
class _Tally:
    """What the demo sent, and what the change feed said."""

    sent: Counter[str] = field(default_factory=Counter)  # purchase, refund
    answers: Counter[str] = field(default_factory=Counter)  # accepted, duplicates, rejected
    after: int = 0  # the change feed's cursor
    opened: list[OpenedAlert] = field(default_factory=list)
    unresolved: dict[int, OpenedAlert] = field(default_factory=dict)  # by alert id
    resolutions: Counter[str] = field(default_factory=Counter)
    opened_loading: int = 0  # while the history was loaded


@dataclass(slots=True)
class _Live:
    """The running demo: what every step needs."""

    options: DemoOptions
    chain: Chain
    app: FastAPI
    clock: SimulatedClock
    http: httpx.AsyncClient
    ingest: dict[str, str]  # request headers with each key
    read: dict[str, str]
    stop: asyncio.Event
    tally: _Tally = field(default_factory=_Tally)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Ctrl-C is the demo's: it ends the stream and prints the summary, then the server
        # stops (uvicorn would stop serving at once, under the stream's feet).
        yield


def run_demo(options: DemoOptions, db: Path | None) -> None:
    """The demo from start to summary (`radar demo`; see app.synthetic.command)."""
    if db is not None and db.exists():
        raise click.UsageError(f"{db} exists: the demo needs a new file")
    port = options.port
    if port and not _free(port):
        raise click.UsageError(f"port {port} is taken: choose another with --port (0: any)")
    with tempfile.TemporaryDirectory(prefix="radar-demo-") as scratch:
        path = db or Path(scratch) / "radar.db"
        asyncio.run(_demo(options, path, clock_time.monotonic() + options.duration))


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def chain_spec(options: DemoOptions, today: date) -> ChainSpec:
    """History then the live days, ending yesterday; defections in the live days' first half,
    so that even the slowest rule (spend_drop: about 7 weeks) has time to see them."""
    total = options.history_days + options.days
    live = options.history_days / total
    return ChainSpec(
        customers=options.customers,
        start=today - timedelta(days=total),
        days=total,
        seed=options.seed,
        defection_window=(live, live + options.days / 2 / total),
    )


def demo_settings(path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{path}",
        # The demo's data is disposable: no fsync per commit.
        sqlite_synchronous="NORMAL",
        # The demo sweeps at simulated times itself; no refit (see the module docstring).
        sweep_interval=timedelta(0),
        refit_interval=timedelta(0),
        housekeeping_interval=timedelta(0),
        webhook_dispatcher=False,
        # A year streamed in a minute: far beyond what any till or dashboard would send.
        rate_limit_ingest="off",
        rate_limit_read="off",
        log_json=False,
        log_level="WARNING",
    )


async def _demo(options: DemoOptions, path: Path, deadline: float) -> None:
    chain = generate(chain_spec(options, datetime.now(UTC).date()))
    first = chain.spec.start + timedelta(days=options.history_days)
    clock = SimulatedClock(_end_of(first - timedelta(days=1), chain.spec))
    app = create_app(demo_settings(path), clock=clock)
    server = _Server(
        uvicorn.Config(app, host=HOST, port=options.port, log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    try:
        port = await _started(server, serving)
        ingest, read = await _keys(app)
        _banner(chain, options, path, port, read)
        base = f"http://{HOST}:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=120, trust_env=False) as http:
            live = _Live(
                options, chain, app, clock, http, _bearer(ingest), _bearer(read), _interrupt()
            )
            await _load_history(live)
            await _stream(live, deadline)
            click.echo(await _summary(live, port, read))
            if options.keep_running and not live.stop.is_set():
                click.echo(f"Serving {base}/ui/ until Ctrl-C.")
                await live.stop.wait()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
        server.should_exit = True
        await serving


def _end_of(day: date, spec: ChainSpec) -> datetime:
    """Midnight after `day` at the tills' offset: every event of the day is before it."""
    return datetime.combine(day + timedelta(days=1), time(), timezone(spec.utc_offset))


async def _started(server: uvicorn.Server, serving: asyncio.Task[None]) -> int:
    while not server.started:
        if serving.done():
            serving.result()
            raise click.ClickException("the service did not start")
        await asyncio.sleep(0.05)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return port


async def _keys(app: FastAPI) -> tuple[str, str]:
    async with unit_of_work(app.state.sessionmaker) as session:
        ingest = await create_key(session, "demo-till", [Scope.INGEST])
        read = await create_key(session, "demo-dashboard", [Scope.READ])
    return ingest.key, read.key


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _interrupt() -> asyncio.Event:
    """Set on Ctrl-C (where signals can be handled: the main thread)."""
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    return stop


def _banner(chain: Chain, options: DemoOptions, path: Path, port: int, read_key: str) -> None:
    spec = chain.spec
    click.echo(
        f"Defection Radar demo: {spec.customers:,} customers of {spec.stores} stores, "
        f"{spec.start} to {spec.end - timedelta(days=1)}, {len(chain.events):,} events "
        f"(seed {spec.seed}); database {path}"
    )
    click.echo(f"Dashboard: http://{HOST}:{port}/ui/  read key: {read_key}")


async def _post(live: _Live, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        response = await live.http.post(
            "/v1/purchases/batch", json={"events": chunk}, headers=live.ingest
        )
        if response.status_code != 200:
            raise click.ClickException(
                f"the service answered {response.status_code}: {response.text[:500]}"
            )
        answer = response.json()
        live.tally.sent.update(event["kind"] for event in chunk)
        live.tally.answers.update({k: answer[k] for k in ("accepted", "duplicates", "rejected")})


async def _load_history(live: _Live) -> None:
    """The history in whole customers per request (a history split over requests would be
    evaluated half-way), then one sweep at the moment the stream starts."""
    cutoff = live.chain.spec.start + timedelta(days=live.options.history_days)
    started = clock_time.monotonic()
    batch: list[dict[str, Any]] = []
    for events in live.chain.by_customer().values():
        history = [event for event in events if local_day(event) < cutoff]
        if batch and len(batch) + len(history) > BATCH:
            await _post(live, batch)
            batch = []
        batch += history
    await _post(live, batch)
    await sweep(live.app.state.transactions, live.app.state.evaluator, live.clock)
    await _follow(live, echo=False)
    live.tally.opened_loading = len(live.tally.opened)
    click.echo(
        f"Loaded {live.options.history_days} days of history up to {cutoff - timedelta(days=1)}: "
        f"{live.tally.sent.total():,} events in {clock_time.monotonic() - started:.1f} s, "
        f"{len(live.tally.opened)} alerts open. Now streaming {live.options.days} days live."
    )


async def _stream(live: _Live, deadline: float) -> None:
    days = list(live.chain.by_day())[live.options.history_days :]
    started = clock_time.monotonic()
    step = max(deadline - started, 0.0) / len(days)
    week = (len(live.tally.opened), sum(live.tally.resolutions.values()))
    for index, (day, events) in enumerate(days):
        if live.stop.is_set():
            click.echo("Interrupted: the summary so far.")
            return
        live.clock.now = _end_of(day, live.chain.spec)
        await _post(live, events)
        await sweep(live.app.state.transactions, live.app.state.evaluator, live.clock)
        await _follow(live, echo=not live.options.quiet)
        if day.weekday() == 6 or index == len(days) - 1:
            week = _week_line(live, day, week)
        with contextlib.suppress(TimeoutError):
            wait = started + (index + 1) * step - clock_time.monotonic()
            await asyncio.wait_for(live.stop.wait(), timeout=max(wait, 0.0))


def _week_line(live: _Live, day: date, before: tuple[int, int]) -> tuple[int, int]:
    now = (len(live.tally.opened), sum(live.tally.resolutions.values()))
    click.echo(
        f"--- week to {day}: {now[0] - before[0]} opened, {now[1] - before[1]} resolved, "
        f"{len(live.tally.unresolved)} open"
    )
    return now


async def _follow(live: _Live, *, echo: bool) -> None:
    """Read the change feed to its end, noting (and printing) openings and resolutions."""
    while True:
        response = await live.http.get(
            "/v1/alerts/changes",
            params={"after": live.tally.after, "limit": 1000},
            headers=live.read,
        )
        response.raise_for_status()
        page = response.json()
        for change in page["events"]:
            if _note(live.tally, change) and echo:
                click.echo(_alert_line(change, live.chain.truth))
        live.tally.after = page["next_cursor"]
        if not page["has_more"]:
            return


def _note(tally: _Tally, change: dict[str, Any]) -> bool:
    alert = change["alert"]
    if change["type"] == "alert.opened":
        opened = OpenedAlert.from_api(alert)
        tally.opened.append(opened)
        tally.unresolved[alert["id"]] = opened
        return True
    if change["type"] == "alert.resolved":
        tally.unresolved.pop(alert["id"], None)
        tally.resolutions[alert["resolution"]] += 1
        return True
    return False


def _alert_line(change: dict[str, Any], truth: Mapping[str, Truth]) -> str:
    alert = change["alert"]
    when = datetime.fromisoformat(change["occurred_at"]).date()
    known = truth[alert["customer_id"]]
    fact = known.kind if known.defected_on is None else f"{known.kind} since {known.defected_on}"
    if change["type"] == "alert.opened":
        what = f"opened   {alert['rule']:15} {alert['severity']:6}"
        money = f"{Decimal(alert['value_at_risk']):>9.2f} at risk"
    else:
        what = f"resolved {alert['rule']:15} {'':6}"
        money = f"{alert['resolution']:>17}"
    return f"{when} {what} {alert['customer_id']} {alert['store_id']}  {money}  truth: {fact}"


async def _summary(live: _Live, port: int, read_key: str) -> str:
    tally, spec = live.tally, live.chain.spec
    ever = assess(live.chain.truth, tally.opened)
    still = assess(live.chain.truth, tally.unresolved.values())
    budget = await live.app.state.transactions.read(
        lambda connection: policies.current(connection).body.false_alarms.per_100_customers
    )
    rows = await live.http.get("/v1/reports/value-at-risk", headers=live.read)
    rows.raise_for_status()
    at_risk = rows.json()["rows"]
    rules = Counter(alert.rule for alert in tally.opened)
    severities: Counter[str] = Counter()
    for row in at_risk:
        severities[row["severity"]] += row["alerts"]
    value = sum((Decimal(str(row["value_at_risk"])) for row in at_risk), Decimal(0))
    lines = [
        "",
        "=" * 30 + " Summary " + "=" * 30,
        f"Customers     {spec.customers:,} in {spec.stores} stores, "
        f"{live.options.history_days} days loaded, then {live.options.days} streamed "
        f"(to {live.clock.now.date() - timedelta(days=1)})",
        f"Events        {tally.sent.total():,} sent ({tally.sent['purchase']:,} purchases, "
        f"{tally.sent['refund']:,} refunds): {tally.answers['accepted']:,} accepted, "
        f"{tally.answers['duplicates']:,} duplicates, {tally.answers['rejected']:,} rejected",
        f"Alerts        {len(tally.opened):,} opened ({tally.opened_loading} on loading the "
        f"history), {tally.resolutions.total():,} resolved, {len(tally.unresolved):,} open",
        "  by rule     " + ", ".join(f"{rule} {rules[rule]}" for rule in RULES),
        "  resolved    "
        + (", ".join(f"{why} {n}" for why, n in tally.resolutions.most_common()) or "none"),
        *_defectors(ever, still),
        f"False alarms  {still.false_alarms} of {ever.loyal} loyal customers who never "
        f"changed have an open alert now ({still.false_alarm_rate:.1%}; the policy's budget: "
        f"{budget:g} per 100), {ever.false_alarms} ({ever.false_alarm_rate:.0%}) were alerted "
        f"at some point; {ever.occasional_alarms} of {ever.occasional} occasional customers",
        f"At risk       {sum(severities.values())} open alerts, {value:,.2f} {spec.currency} "
        "value at risk ("
        + ", ".join(f"{level} {severities[level]}" for level in ("high", "medium", "low"))
        + ")",
        f"Dashboard     http://{HOST}:{port}/ui/  read key: {read_key}",
    ]
    return "\n".join(lines)


def _defectors(result: Assessment, now: Assessment) -> list[str]:
    """Per kind of defection (the ground truth): how many an alert caught since they
    defected, by a rule meant for the kind and by any rule, how fast (median days), and how
    many have such an alert open now."""
    row = "{:14}{:15}{:>4}  {:>26} {:>4} {:>4}  {:>4} {:>4}  {:>4}  {:>4}"
    lines = [
        "Defectors     kind             of               caught by its rules   by any rule"
        "  days   now"
    ]
    for kind in DEFECTIONS:
        found = result.detections[kind]
        delay = "-" if found.median_delay_days is None else f"{found.median_delay_days:.0f}"
        lines.append(
            row.format(
                "",
                kind,
                found.customers,
                "/".join(RULES_FOR[kind]),
                found.caught,
                f"{found.recall:.0%}",
                found.caught_any,
                f"{found.recall_any:.0%}",
                delay,
                now.detections[kind].caught,
            )
        )
    return lines
